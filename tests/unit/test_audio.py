"""Tests of streamscribe.audio: codecs, resampling, file decoding, WAV writing.

All audio is synthesised at test time (sines written with PyAV or the stdlib), none is committed.
"""

from __future__ import annotations

import shutil
import warnings
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from streamscribe.audio.codecs import (
    ENCODINGS,
    bytes_per_sample,
    decode_pcm,
    deinterleave,
    encode_alaw,
    encode_mulaw,
    encode_pcm16,
)
from streamscribe.audio.files import (
    decode_file,
    decode_file_channels,
    iter_file_chunks,
    probe_duration,
)
from streamscribe.audio.resample import TARGET_RATE, StreamResampler, resample
from streamscribe.audio.wav import WavWriter, read_wav, repair_wav_header
from streamscribe.errors import AudioDecodeError


def sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


# --- codecs --------------------------------------------------------------------------------------


def test_bytes_per_sample() -> None:
    assert [bytes_per_sample(e) for e in ENCODINGS] == [2, 1, 1]
    with pytest.raises(ValueError, match="pcm_s16le, pcm_mulaw, pcm_alaw"):
        bytes_per_sample("opus")
    with pytest.raises(ValueError, match="accepted"):
        decode_pcm(b"\x00\x00", "pcm_f32le")


def test_pcm16_round_trip_and_scale() -> None:
    data = np.array([0, 1, -1, 32767, -32768, 16384], "<i2").tobytes()
    x = decode_pcm(data, "pcm_s16le")
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, np.array([0, 1, -1, 32767, -32768, 16384]) / 32768)
    assert encode_pcm16(x) == data
    # Out-of-range floats clip instead of wrapping around.
    clipped = np.frombuffer(encode_pcm16(np.array([2.0, -2.0, 1.0])), "<i2")
    np.testing.assert_array_equal(clipped, [32767, -32768, 32767])


def test_pcm16_odd_length_is_rejected() -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        decode_pcm(b"\x00\x01\x02", "pcm_s16le")


def test_mulaw_known_code_points() -> None:
    x = decode_pcm(bytes([0xFF, 0x7F, 0x00, 0x80, 0xFE, 0x7E]), "pcm_mulaw")
    expected = np.array([0, 0, -32124, 32124, 8, -8]) / 32768
    np.testing.assert_array_equal(x, expected.astype(np.float32))
    assert encode_mulaw(np.array([0.0, 1.0, -1.0])) == bytes([0xFF, 0x80, 0x00])


def test_alaw_known_code_points() -> None:
    x = decode_pcm(bytes([0xD5, 0x55, 0xAA, 0x2A, 0xD4]), "pcm_alaw")
    expected = np.array([8, -8, 32256, -32256, 24]) / 32768
    np.testing.assert_array_equal(x, expected.astype(np.float32))
    assert encode_alaw(np.array([0.0, 1.0, -1.0])) == bytes([0xD5, 0xAA, 0x2A])


@pytest.mark.parametrize(
    ("encode", "encoding"), [(encode_mulaw, "pcm_mulaw"), (encode_alaw, "pcm_alaw")]
)
def test_g711_round_trip_error_bound(encode, encoding: str) -> None:
    # Every 16-bit value in the unclipped range: G.711's error is under 1/32 of the magnitude
    # (about 5 bits of mantissa) plus half the smallest step.
    x = (np.arange(-31000, 31000, 7) / 32768).astype(np.float32)
    y = decode_pcm(encode(x), encoding)
    assert len(encode(x)) == len(x)
    assert np.all(np.abs(y - x) <= np.abs(x) / 32 + 9 / 32768)
    # Quantisation is monotonic and a sine keeps a G.711-like signal-to-noise ratio.
    assert np.all(np.diff(y) >= 0)
    s = sine(440, 8000, 0.5, amplitude=0.8)
    s_hat = decode_pcm(encode(s), encoding)
    snr_db = 10 * np.log10(np.mean(s**2) / np.mean((s - s_hat) ** 2))
    assert snr_db > 33


def test_g711_matches_audioop_reference() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # removed in Python 3.13
    every = np.arange(-32768, 32768, dtype="<i2")
    x = every / np.float32(32768)
    assert encode_mulaw(x) == audioop.lin2ulaw(every.tobytes(), 2)
    assert encode_alaw(x) == audioop.lin2alaw(every.tobytes(), 2)
    codes = bytes(range(256))
    for encoding, ref in (("pcm_mulaw", audioop.ulaw2lin), ("pcm_alaw", audioop.alaw2lin)):
        np.testing.assert_array_equal(
            decode_pcm(codes, encoding) * 32768, np.frombuffer(ref(codes, 2), "<i2")
        )


def test_deinterleave() -> None:
    x = np.array([1, -1, 2, -2, 3, -3], np.float32)
    out = deinterleave(x, 2)
    assert out.shape == (2, 3)
    np.testing.assert_array_equal(out, [[1, 2, 3], [-1, -2, -3]])
    assert deinterleave(x, 1).shape == (1, 6)
    with pytest.raises(ValueError, match="whole number of 4-channel frames"):
        deinterleave(x, 4)
    with pytest.raises(ValueError):
        deinterleave(x, 0)


# --- resampling ----------------------------------------------------------------------------------


def test_resample_keeps_frequency_and_length_ratio() -> None:
    x = sine(1000, 48000, 1.0)
    y = resample(x, 48000)
    assert y.dtype == np.float32
    assert len(y) == TARGET_RATE == 16000
    assert abs(peak_hz(y, 16000) - 1000) <= 2
    assert np.max(np.abs(y)) == pytest.approx(0.5, abs=0.02)
    # 8 kHz telephone audio up to 16 kHz.
    z = resample(sine(440, 8000, 0.5), 8000)
    assert len(z) == 8000 and abs(peak_hz(z, 16000) - 440) <= 3


def test_resample_same_rate_is_a_copy() -> None:
    x = sine(440, 16000, 0.1)
    y = resample(x, 16000)
    np.testing.assert_array_equal(x, y)
    assert y is not x


@pytest.mark.parametrize("in_rate", [8000, 22050, 44100, 48000])
def test_stream_resampler_matches_one_shot(in_rate: int) -> None:
    x = sine(300, in_rate, 1.0)
    expected = resample(x, in_rate)
    r = StreamResampler(in_rate)
    sizes = np.random.default_rng(1).integers(1, 900, size=400)
    parts, pos = [], 0
    for size in sizes:
        parts.append(r.process(x[pos : pos + size]))
        pos += size
        if pos >= len(x):
            break
    parts.append(r.process(x[pos:], last=True))
    out = np.concatenate(parts)
    assert out.dtype == np.float32
    assert abs(len(out) - len(expected)) <= 1
    n = min(len(out), len(expected))
    np.testing.assert_allclose(out[:n], expected[:n], atol=1e-4)


def test_stream_resampler_passthrough_and_channels() -> None:
    x = sine(440, 16000, 0.05)
    np.testing.assert_array_equal(StreamResampler(16000).process(x), x)
    stereo = np.stack([sine(440, 48000, 0.5), sine(880, 48000, 0.5)])
    r = StreamResampler(48000, channels=2)
    out = np.concatenate(
        [r.process(stereo[:, :10000]), r.process(stereo[:, 10000:], last=True)], axis=1
    )
    assert out.shape == (2, 8000)
    assert abs(peak_hz(out[0], 16000) - 440) <= 3 and abs(peak_hz(out[1], 16000) - 880) <= 3
    with pytest.raises(ValueError, match=r"\(2, n\)"):
        r.process(stereo[0])


# --- files ---------------------------------------------------------------------------------------


def write_with_pyav(path: Path, codec: str, rate: int, seconds: float, channels: int = 1) -> None:
    """Encode a sine (440 Hz left, 880 Hz right when stereo) into `path` with PyAV."""
    layout = "mono" if channels == 1 else "stereo"
    tones = [sine(440, rate, seconds), sine(880, rate, seconds)][:channels]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.stack(tones), format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_wav_stdlib(path: Path, samples: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1 if samples.ndim == 1 else samples.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(encode_pcm16(samples.T))


def test_decode_wav_file(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    x = sine(440, 44100, 1.0)
    write_wav_stdlib(path, x, 44100)
    y = decode_file(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert len(y) == 16000
    np.testing.assert_allclose(y, resample(x, 44100), atol=1e-3)
    assert probe_duration(path) == pytest.approx(1.0)
    y8 = decode_file(str(path), sample_rate=8000)
    assert len(y8) == 8000 and abs(peak_hz(y8, 8000) - 440) <= 3


def test_decode_file_channels_and_downmix(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    left, right = sine(440, 48000, 0.5), sine(880, 48000, 0.5, amplitude=0.25)
    write_wav_stdlib(path, np.stack([left, right]), 48000)
    channels = decode_file_channels(path)
    assert channels.shape == (2, 8000) and channels.dtype == np.float32
    assert abs(peak_hz(channels[0], 16000) - 440) <= 3
    assert abs(peak_hz(channels[1], 16000) - 880) <= 3
    # Down-mix is the channel mean: same level as the channels, no +3 dB.
    np.testing.assert_allclose(decode_file(path), channels.mean(axis=0), atol=1e-6)


@pytest.mark.parametrize(
    ("name", "codec", "rate"),
    [("tone.ogg", "libopus", 48000), ("tone.mp3", "libmp3lame", 44100), ("tone.mp4", "aac", 44100)],
)
def test_decode_compressed_files(tmp_path: Path, name: str, codec: str, rate: int) -> None:
    path = tmp_path / name
    write_with_pyav(path, codec, rate, seconds=1.0, channels=2)
    mono = decode_file(path)
    both = decode_file_channels(path)
    assert mono.dtype == np.float32 and both.shape[0] == 2
    # Encoders add priming/padding: allow a few frames of slack around one second.
    assert 15500 <= len(mono) <= 17500
    assert abs(peak_hz(both[0], 16000) - 440) <= 3
    assert abs(peak_hz(both[1], 16000) - 880) <= 3
    assert np.sqrt(np.mean(both[0] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)
    duration = probe_duration(path)
    assert duration is not None and 0.9 <= duration <= 1.2


@pytest.mark.parametrize("codec", ["pcm_u8", "pcm_s24le", "pcm_s32le", "pcm_f64le", "pcm_mulaw"])
def test_decode_sample_formats(tmp_path: Path, codec: str) -> None:
    # Each codec decodes to a different FFmpeg sample format (u8, s32, dbl, s16).
    path = tmp_path / f"{codec}.wav"
    write_with_pyav(path, codec, 16000, seconds=0.25, channels=2)
    both = decode_file_channels(path)
    assert both.shape == (2, 4000) and both.dtype == np.float32
    tolerance = 0.02 if codec in ("pcm_u8", "pcm_mulaw") else 1e-4
    np.testing.assert_allclose(both[0], sine(440, 16000, 0.25), atol=tolerance)
    np.testing.assert_allclose(both[1], sine(880, 16000, 0.25), atol=tolerance)


@pytest.mark.parametrize("chunk_ms", [100, 30, 250])
def test_iter_file_chunks(tmp_path: Path, chunk_ms: int) -> None:
    path = tmp_path / "tone.mp3"
    write_with_pyav(path, "libmp3lame", 44100, seconds=1.5)
    whole = decode_file(path)
    chunks = list(iter_file_chunks(path, chunk_ms=chunk_ms))
    size = 16000 * chunk_ms // 1000
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    assert all(len(c) == size for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= size
    np.testing.assert_array_equal(np.concatenate(chunks), whole)


def test_iter_file_chunks_is_lazy(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    write_wav_stdlib(path, sine(440, 16000, 5.0), 16000)
    chunks = iter_file_chunks(path, chunk_ms=20)
    first = next(chunks)
    assert len(first) == 320
    chunks.close()  # closing early releases the file; nothing else to assert than no error


def test_decode_text_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("this is not audio\n" * 50)
    with pytest.raises(AudioDecodeError, match="notes.txt"):
        decode_file(path)
    with pytest.raises(AudioDecodeError, match="notes.txt"):
        list(iter_file_chunks(path))
    with pytest.raises(AudioDecodeError, match="notes.txt"):
        probe_duration(path)


def test_decode_missing_and_corrupt_files_raise(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match=r"cannot open .*missing\.wav"):
        decode_file(tmp_path / "missing.wav")
    garbage = tmp_path / "garbage.mp3"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    with pytest.raises(AudioDecodeError, match="garbage.mp3"):
        decode_file(garbage)


def test_decode_video_without_audio_raises(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(AudioDecodeError, match="no audio stream in .*silent.mp4"):
        decode_file(path)


# --- WAV -----------------------------------------------------------------------------------------


def test_wav_writer_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "rec.wav"
    x = sine(440, 16000, 0.5)
    with WavWriter(path) as w:
        w.write(x[:3000])
        w.write_pcm16(encode_pcm16(x[3000:]))
        assert w.frames_written == 8000
    y, rate = read_wav(path)
    assert rate == 16000 and y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=1 / 32768)
    with wave.open(str(path)) as r:
        assert (r.getnchannels(), r.getsampwidth(), r.getnframes()) == (1, 2, 8000)


def test_wav_writer_stereo(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    x = np.stack([sine(440, 8000, 0.2), sine(880, 8000, 0.2, amplitude=0.1)])
    with WavWriter(path, sample_rate=8000, channels=2) as w:
        w.write(x)
        with pytest.raises(ValueError, match=r"\(2, n\)"):
            w.write(x[0])
        with pytest.raises(ValueError, match="whole number"):
            w.write_pcm16(b"\x00\x00")
    y, rate = read_wav(path)
    assert rate == 8000 and y.shape == (2, 1600)
    np.testing.assert_allclose(y, x, atol=1 / 32768)


def test_wav_writer_crash_recovers_flushed_frames(tmp_path: Path) -> None:
    path = tmp_path / "rec.wav"
    crashed = tmp_path / "crashed.wav"
    x = sine(440, 16000, 3.0)
    w = WavWriter(path)
    for start in range(0, 16000 + 7000, 500):  # 1.44 s in 31.25 ms chunks: one auto-patch
        w.write(x[start : start + 500])
    # Readable as-is: the header was patched after the first second of audio.
    shutil.copyfile(path, crashed)
    y, _ = read_wav(crashed)
    assert 16000 <= len(y) < 23000
    w.write(x[23000:30000])
    w.flush()
    flushed = w.frames_written
    w.write(x[30000:30100])  # written but never flushed: may be lost
    shutil.copyfile(path, crashed)  # the "crash": the writer is never closed
    frames = repair_wav_header(crashed)
    assert frames >= flushed
    y, rate = read_wav(crashed)
    assert rate == 16000 and len(y) == frames
    np.testing.assert_allclose(y, x[:frames], atol=1 / 32768)
    w.close()


def test_repair_header_written_with_zero_sizes(tmp_path: Path) -> None:
    path = tmp_path / "raw.wav"
    x = sine(440, 16000, 0.3)
    w = WavWriter(path)
    w.write(x)
    w._file.flush()  # data reached the OS, header never patched (still says 0 frames)
    crashed = tmp_path / "crashed.wav"
    shutil.copyfile(path, crashed)
    assert len(read_wav(crashed)[0]) == 0
    with open(crashed, "ab") as f:
        f.write(b"\x01")  # a torn half sample at the end is cut off
    assert repair_wav_header(crashed) == len(x)
    np.testing.assert_allclose(read_wav(crashed)[0], x, atol=1 / 32768)
    w.close()


def test_repair_and_read_reject_non_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a wav file at all, just some text")
    with pytest.raises(AudioDecodeError, match="notes.txt"):
        repair_wav_header(path)
    with pytest.raises(AudioDecodeError, match="notes.txt"):
        read_wav(path)
