"""`decode_stream`: uploads decoded from a file object, the same samples as from a path, capped."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from streamscribe.audio.files import decode_file, decode_stream
from streamscribe.errors import AudioDecodeError


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode(path: Path, codec: str, rate: int, seconds: float) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            tone(seconds, rate)[None, :], format="fltp", layout="mono"
        )
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


@pytest.mark.parametrize(
    ("name", "codec", "rate"), [("a.wav", "pcm_s16le", 24000), ("a.mp3", "libmp3lame", 44100)]
)
def test_a_file_object_decodes_to_the_same_samples_as_its_path(tmp_path, name, codec, rate):
    path = tmp_path / name
    encode(path, codec, rate, 1.0)
    from_path = decode_file(path)
    from_stream = decode_stream(io.BytesIO(path.read_bytes()), name=name)
    assert from_stream.dtype == np.float32 and from_stream.ndim == 1
    np.testing.assert_array_equal(from_stream, from_path)
    assert 15500 <= len(from_stream) <= 17500


def test_decoding_stops_just_past_the_cap(tmp_path):
    path = tmp_path / "long.wav"
    encode(path, "pcm_s16le", 16000, 5.0)
    whole = decode_stream(io.BytesIO(path.read_bytes()))
    capped = decode_stream(io.BytesIO(path.read_bytes()), max_seconds=1.0)
    assert len(whole) == 5 * 16000
    assert 16000 < len(capped) < len(whole)  # longer than the cap: the caller knows it is too long
    np.testing.assert_array_equal(capped, whole[: len(capped)])
    roomy = decode_stream(io.BytesIO(path.read_bytes()), max_seconds=10.0)
    np.testing.assert_array_equal(roomy, whole)


def test_errors_name_the_upload_not_a_path():
    with pytest.raises(AudioDecodeError, match="meeting.m4a"):
        decode_stream(io.BytesIO(b"this is not audio\n" * 100), name="meeting.m4a")
    with pytest.raises(ValueError, match="sample_rate"):
        decode_stream(io.BytesIO(b""), sample_rate=0)
