"""Pure pieces of the hostile-input limits (issue 18): decoded-length and sample-rate bounds of
file decoding, credential masking after percent-decoding, key names shown safely in a terminal."""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from streamscribe.audio.codecs import decode_raw_body
from streamscribe.audio.files import (
    AudioLimitError,
    DecodeLimits,
    check_declared,
    decode_file,
    decode_file_channels,
    decode_raw_file,
    decode_stream,
    probe_audio,
)
from streamscribe.cli import app
from streamscribe.cli.keys import shown
from streamscribe.logs import RedactingFormatter, is_secret_param, redact
from streamscribe.store import Store

LIMITS = DecodeLimits(max_seconds=2.0, min_rate=4000, max_rate=96000)


def write_wav(path: Path, rate: int, seconds: float, channels: int = 1, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes(int(rate * seconds) * channels * width))
    return path


# ------------------------------------------------------------------ decoding limits


def test_a_1_hz_wav_is_refused_from_its_header_and_while_decoding(tmp_path):
    path = write_wav(tmp_path / "one.wav", 1, 12000, width=1)  # 12 KB, "3.3 hours"
    probe = probe_audio(path)
    assert probe.sample_rate == 1
    with pytest.raises(AudioLimitError) as refused:
        check_declared(probe, LIMITS, path)
    assert refused.value.limit == "sample_rate" and refused.value.bound == 4000
    with pytest.raises(AudioLimitError):
        decode_file(path, limits=DecodeLimits(min_rate=4000))  # even without the header check
    with pytest.raises(AudioLimitError):
        decode_stream(io.BytesIO(path.read_bytes()), limits=DecodeLimits(min_rate=4000))


def test_the_decoded_length_is_checked_from_the_header_and_frame_by_frame(tmp_path):
    path = write_wav(tmp_path / "three.wav", 8000, 3.0)
    with pytest.raises(AudioLimitError) as refused:
        check_declared(probe_audio(path), LIMITS, path)
    assert refused.value.limit == "duration" and refused.value.value == pytest.approx(3.0)
    with pytest.raises(AudioLimitError, match="limit of 2 s"):
        decode_file(path, limits=LIMITS)  # a header that lied would be caught here
    assert len(decode_file(path, limits=DecodeLimits(max_seconds=3.5))) == 48000


def test_kept_channels_count_towards_the_length(tmp_path):
    path = write_wav(tmp_path / "stereo.wav", 8000, 1.5, channels=2)
    limits = DecodeLimits(max_seconds=2.0)
    check_declared(probe_audio(path), limits, path)  # mixed down: 1.5 s
    with pytest.raises(AudioLimitError):
        check_declared(probe_audio(path), limits, path, keep_channels=True)  # 3 s
    with pytest.raises(AudioLimitError):
        decode_file_channels(path, limits=limits)
    assert len(decode_file(path, limits=limits)) == 24000


@pytest.mark.parametrize("keep", [False, True])
def test_raw_files_decode_in_chunks_to_the_same_samples(tmp_path, keep):
    rng = np.random.default_rng(1)
    data = (rng.standard_normal(8000 * 23 * 2) * 3000).astype("<i2").tobytes() + b"\x01"
    path = tmp_path / "raw.bin"
    path.write_bytes(data)
    whole = decode_raw_body(data, "pcm_s16le", 2, 8000, keep)
    chunked = decode_raw_file(path, "pcm_s16le", 2, 8000, keep, chunk_s=3.0)
    assert len(whole) == len(chunked)
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(AudioLimitError):
        decode_raw_file(path, "pcm_s16le", 2, 8000, keep, DecodeLimits(max_seconds=20.0))


# ------------------------------------------------------------------ credentials in logs


@pytest.mark.parametrize(
    "name", ["token", "%74oken", "TOKEN", "Author%69zation", "%2574oken", "k%65y", "api%5Fkey"]
)
def test_credential_names_are_recognised_after_percent_decoding(name):
    assert is_secret_param(name)
    line = f'"GET /v3/ws?sample_rate=16000&{name}=s3cr3t-value&model=x HTTP/1.1" 101'
    out = redact(line)
    assert "s3cr3t-value" not in out
    assert f"{name}=***" in out and "sample_rate=16000" in out and "model=x" in out


@pytest.mark.parametrize("name", ["keyterm", "monkey", "tokens_per_s", "sample_rate"])
def test_other_parameters_are_kept(name):
    assert not is_secret_param(name)
    assert redact(f"/x?{name}=visible") == f"/x?{name}=visible"


def test_headers_and_our_secret_shapes_are_masked_wherever_they_appear():
    out = redact("headers={'authorization': 'Bearer abc.def', 'x': 'sk_abcdefghijklmnop'}")
    assert "abc.def" not in out and "sk_abcdefghijklmnop" not in out
    assert "Bearer ***" in out and "sk_***" in out


def test_a_traceback_carrying_a_credential_is_masked_too():
    try:
        raise ValueError("cannot open ws://host/v1/listen?%74oken=tb-secret-1")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = RedactingFormatter("%(message)s").format(record)
    assert "Traceback" in text and "tb-secret-1" not in text


# ------------------------------------------------------------------ key names in a terminal


def test_control_characters_are_shown_as_escapes():
    assert shown("alice") == "alice"
    assert shown("a\x1b]0;pwned\x07b\u202ec\x9b") == "a\\x1b]0;pwned\\x07b\\u202ec\\x9b"


def test_keys_list_passes_no_escape_sequence_through(tmp_path):
    evil = "\x1b]0;pwned\x07\x1b[2Jmallory"

    async def make() -> None:
        store = await Store.open(None, tmp_path)
        try:
            await store.create_key(evil)  # as the admin API could before it refused such names
        finally:
            await store.close()

    asyncio.run(make())
    result = CliRunner().invoke(
        app, ["keys", "list", "--data-dir", str(tmp_path)], env={"COLUMNS": "220"}
    )
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "mallory" in result.output and "\\x1b" in result.output
