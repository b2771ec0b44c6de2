"""Decode audio (or the audio track of a video) from any file FFmpeg can read.

Why this exists: uploads and the CLI accept whatever users have -- WAV, MP3, Ogg, MP4, WebM,
FLAC, phone recordings -- and the engine wants float32 at 16 kHz. PyAV (FFmpeg) demuxes and
decodes; sample formats are converted to float here with numpy, and the rate is converted with
the same soxr resampler the live streams use (`resample.py`), so a file uploaded and the same
file streamed reach the engine as identical samples. Down-mixing is a plain mean of the
channels, so a mono recording duplicated into stereo keeps its level (FFmpeg's own stereo-to-mono
matrix adds 3 dB for float output).

Only the first audio stream of a file is decoded. Every failure -- missing file, no audio, corrupt
data -- raises `AudioDecodeError` naming the file and the problem.

A few bytes can declare hours of audio (a WAV header claiming a 1 Hz sample rate decodes 12 KB
into 3 hours at 16 kHz), so uploads are bounded by what they decode to, not only by their size:
`probe_audio` reads the header and `check_declared` refuses a file whose declared rate or length
is out of `DecodeLimits` before any decoding; the decoders take the same limits and check every
frame's rate and the running decoded length, so a header that lies is caught after one frame
(`AudioLimitError`, a subclass of `AudioDecodeError` a server answers with a 4xx).

Uploads that never touch the disk (an HTTP request body) go through `decode_stream`, which takes
a binary file object and can stop early once a length cap is passed. Raw wire bytes are decoded
in `codecs.py`; WAV recordings are written by `wav.py`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import av.error
import numpy as np

from streamscribe.audio.codecs import bytes_per_sample, decode_pcm, deinterleave
from streamscribe.audio.resample import TARGET_RATE, StreamResampler
from streamscribe.errors import AudioDecodeError

# Exceptions FFmpeg/PyAV raise for unreadable input. av.error.FFmpegError covers FFmpeg's own
# errors (including av.error.FileNotFoundError); OSError covers the rest of the file system.
_AV_ERRORS = (av.error.FFmpegError, OSError, EOFError)


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on what a file may decode to (None: no bound)."""

    max_seconds: float | None = None  # decoded length, summed over the channels kept apart
    min_rate: int | None = None  # lowest sample rate (Hz) a stream may declare
    max_rate: int | None = None  # highest


class AudioLimitError(AudioDecodeError):
    """The audio is out of the caller's `DecodeLimits`: `limit` is "duration" or "sample_rate",
    `value` what the file has, `bound` the limit it passed."""

    def __init__(self, message: str, limit: str, value: float, bound: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value
        self.bound = bound


@dataclass(frozen=True)
class AudioProbe:
    """What a file's header declares about its first audio stream."""

    sample_rate: int
    channels: int
    seconds: float | None  # None: the header does not say


def _check_frame_rate(rate: int, limits: DecodeLimits, path: Path) -> None:
    if limits.min_rate is not None and rate < limits.min_rate:
        raise AudioLimitError(
            f"{path} declares a sample rate of {rate} Hz, below the lowest accepted "
            f"({limits.min_rate} Hz)",
            "sample_rate",
            rate,
            limits.min_rate,
        )
    if limits.max_rate is not None and rate > limits.max_rate:
        raise AudioLimitError(
            f"{path} declares a sample rate of {rate} Hz, above the highest accepted "
            f"({limits.max_rate} Hz)",
            "sample_rate",
            rate,
            limits.max_rate,
        )


def _too_long(path: Path, seconds: float, limits: DecodeLimits, declared: bool) -> AudioLimitError:
    assert limits.max_seconds is not None
    if declared:
        message = f"{path} declares {seconds:.0f} s of audio, over the limit of "
    else:
        message = f"{path} decodes to more audio than the limit of "
    return AudioLimitError(
        message + f"{limits.max_seconds:g} s",
        "duration",
        seconds,
        limits.max_seconds,
    )


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if isinstance(exc, av.error.InvalidDataError):
        text += " (not an audio or video file, or a corrupt one)"
    return text


@contextmanager
def _open_audio(
    path: Path, source: BinaryIO | None = None
) -> Iterator[tuple[av.container.InputContainer, av.AudioStream]]:
    """Open `path` (or the file object `source`, named `path` in errors) and yield
    (container, first audio stream); always closes the container."""
    try:
        container = av.open(source if source is not None else str(path), mode="r")
    except _AV_ERRORS as exc:
        raise AudioDecodeError(f"cannot open {path}: {_reason(exc)}") from exc
    try:
        if not container.streams.audio:
            kinds = sorted({stream.type for stream in container.streams})
            found = f" (it holds only {', '.join(kinds)})" if kinds else ""
            raise AudioDecodeError(f"no audio stream in {path}{found}")
        yield container, container.streams.audio[0]
    finally:
        container.close()


def _frame_to_float(frame: av.AudioFrame) -> np.ndarray:
    """Any FFmpeg sample format to float32 of shape (channels, n)."""
    data = frame.to_ndarray()
    channels = frame.layout.nb_channels
    if not frame.format.is_planar:
        data = data.reshape(-1, channels).T  # packed: one plane, L R L R ...
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    if data.dtype.kind == "i":
        return (data / float(2 ** (8 * data.dtype.itemsize - 1))).astype(np.float32)
    return data.astype(np.float32, copy=False)


def _iter_blocks(
    path: Path,
    sample_rate: int,
    mono: bool,
    source: BinaryIO | None = None,
    limits: DecodeLimits | None = None,
    stop: threading.Event | None = None,
) -> Iterator[np.ndarray]:
    """Decode `path` (or `source`) frame by frame into float32 blocks of shape (channels, n).

    With `mono`, channels are averaged before resampling (cheaper) and blocks have one row.
    Yields nothing at all for an audio stream without frames. With `limits`, each frame's rate
    is checked before it is converted, and decoding stops with AudioLimitError as soon as the
    decoded length passes `limits.max_seconds`. Setting `stop` (from another thread) ends
    decoding with AudioDecodeError at the next frame.
    """
    resampler: StreamResampler | None = None
    channels: int | None = None
    decoded_s = 0.0

    def convert(block: np.ndarray, last: bool = False) -> np.ndarray:
        assert resampler is not None
        if resampler.channels == 1:
            return resampler.process(block[0], last=last)[np.newaxis, :]
        return resampler.process(block, last=last)

    with _open_audio(path, source) as (container, stream):
        try:
            for frame in container.decode(stream):
                if stop is not None and stop.is_set():
                    raise AudioDecodeError(f"decoding {path} was stopped")
                if limits is not None:
                    _check_frame_rate(frame.sample_rate, limits, path)
                    kept = 1 if mono else frame.layout.nb_channels
                    decoded_s += frame.samples * kept / frame.sample_rate
                    if limits.max_seconds is not None and decoded_s > limits.max_seconds:
                        raise _too_long(path, decoded_s, limits, declared=False)
                block = _frame_to_float(frame)
                if mono:
                    block = block.mean(axis=0, keepdims=True, dtype=np.float32)
                if channels is None:
                    channels = block.shape[0]
                elif block.shape[0] != channels:
                    raise AudioDecodeError(
                        f"cannot decode {path}: channel count changes from {channels} "
                        f"to {block.shape[0]} mid-stream; decode it down-mixed to mono instead"
                    )
                if resampler is None or resampler.in_rate != frame.sample_rate:
                    if resampler is not None:  # the rate changed mid-stream: flush the old filter
                        yield convert(block[:, :0], last=True)
                    resampler = StreamResampler(frame.sample_rate, sample_rate, channels)
                yield convert(block)
            if resampler is not None:
                yield convert(np.zeros((channels or 1, 0), np.float32), last=True)
        except _AV_ERRORS as exc:
            raise AudioDecodeError(f"cannot decode {path}: {_reason(exc)}") from exc


def _check_rate(sample_rate: int) -> None:
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")


def decode_file_channels(
    path: str | Path, sample_rate: int = TARGET_RATE, limits: DecodeLimits | None = None
) -> np.ndarray:
    """Decode the whole first audio stream, keeping channels: float32 of shape (channels, n).
    `limits.max_seconds` bounds the decoded seconds summed over the channels."""
    _check_rate(sample_rate)
    blocks = list(_iter_blocks(Path(path), sample_rate, mono=False, limits=limits))
    if not blocks:
        return np.zeros((1, 0), np.float32)
    return np.concatenate(blocks, axis=1)


def decode_file(
    path: str | Path,
    sample_rate: int = TARGET_RATE,
    limits: DecodeLimits | None = None,
    stop: threading.Event | None = None,
) -> np.ndarray:
    """Decode the whole first audio stream, down-mixed to mono: float32 of shape (n,)."""
    _check_rate(sample_rate)
    decoder = _iter_blocks(Path(path), sample_rate, mono=True, limits=limits, stop=stop)
    blocks = [block[0] for block in decoder]
    if not blocks:
        return np.zeros(0, np.float32)
    return np.concatenate(blocks)


def decode_stream(
    source: BinaryIO,
    sample_rate: int = TARGET_RATE,
    name: str = "upload",
    max_seconds: float | None = None,
    limits: DecodeLimits | None = None,
) -> np.ndarray:
    """Decode a seekable binary file object (an upload), down-mixed to mono: float32 (n,).

    `name` stands for the file in error messages. With `max_seconds`, decoding stops as soon as
    more than that has been decoded, so the result is longer than `max_seconds` exactly when the
    file is: a caller can refuse an over-long upload without holding all of it in memory.
    `limits` bound the declared rates (AudioLimitError); give it no max_seconds to keep the
    early stop.
    """
    _check_rate(sample_rate)
    limit = None if max_seconds is None else int(max_seconds * sample_rate)
    blocks: list[np.ndarray] = []
    total = 0
    decoder = _iter_blocks(Path(name), sample_rate, mono=True, source=source, limits=limits)
    try:
        for block in decoder:
            blocks.append(block[0])
            total += block.shape[1]
            if limit is not None and total > limit:
                break
    finally:
        decoder.close()
    if not blocks:
        return np.zeros(0, np.float32)
    return np.concatenate(blocks)


def iter_file_chunks(
    path: str | Path, sample_rate: int = TARGET_RATE, chunk_ms: int = 100
) -> Iterator[np.ndarray]:
    """Stream a file as mono float32 chunks of exactly `chunk_ms` (the last may be shorter).

    Decodes as it goes, so memory stays bounded by one chunk plus one decoded frame whatever
    the file's length. Closing the generator early closes the file.
    """
    _check_rate(sample_rate)
    chunk = sample_rate * chunk_ms // 1000
    if chunk < 1:
        raise ValueError(f"chunk_ms={chunk_ms} is shorter than one sample at {sample_rate} Hz")
    pending: list[np.ndarray] = []
    pending_len = 0
    for block in _iter_blocks(Path(path), sample_rate, mono=True):
        pending.append(block[0])
        pending_len += block.shape[1]
        if pending_len < chunk:
            continue
        buffer = np.concatenate(pending)
        whole = len(buffer) - len(buffer) % chunk
        for start in range(0, whole, chunk):
            yield buffer[start : start + chunk]
        pending = [buffer[whole:]]
        pending_len = len(buffer) - whole
    if pending_len:
        yield np.concatenate(pending)


def probe_duration(path: str | Path) -> float | None:
    """Duration in seconds of the first audio stream (or the container), None if unknown.

    Reads only the headers, so it is cheap; for formats without a duration field FFmpeg may
    estimate it from the bit rate.
    """
    path = Path(path)
    with _open_audio(path) as (container, stream):
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / av.time_base
        return None


def probe_audio(path: str | Path, source: BinaryIO | None = None) -> AudioProbe:
    """What the header of `path` (or of the file object `source`, named `path` in errors)
    declares: sample rate, channels, duration. Reads no audio."""
    path = Path(path)
    with _open_audio(path, source) as (container, stream):
        seconds: float | None = None
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / av.time_base
        return AudioProbe(int(stream.sample_rate or 0), int(stream.channels or 0), seconds)


def check_declared(
    probe: AudioProbe,
    limits: DecodeLimits,
    path: str | Path = "upload",
    keep_channels: bool = False,
) -> None:
    """Refuse (AudioLimitError) a file whose header declares a rate or a length out of `limits`,
    before anything is decoded; with `keep_channels` the length counts every channel."""
    _check_frame_rate(probe.sample_rate, limits, Path(path))
    if limits.max_seconds is None or probe.seconds is None:
        return
    seconds = probe.seconds * (max(1, probe.channels) if keep_channels else 1)
    if seconds > limits.max_seconds:
        raise _too_long(Path(path), seconds, limits, declared=True)


def decode_raw_file(
    path: str | Path,
    encoding: str,
    channels: int,
    sample_rate: int,
    keep_channels: bool,
    limits: DecodeLimits | None = None,
    chunk_s: float = 10.0,
) -> list[np.ndarray]:
    """A file of raw interleaved audio (no header) as float32 16 kHz arrays: one per channel
    when `keep_channels`, else one mean mix; the same samples as `codecs.decode_raw_body` of its
    bytes, read and converted `chunk_s` at a time so memory holds only the 16 kHz result.

    The length is known from the size before anything is read: past `limits.max_seconds`
    (counting every channel kept) it raises AudioLimitError. A trailing partial frame is
    dropped; a file shorter than one frame raises AudioDecodeError."""
    path = Path(path)
    frame = bytes_per_sample(encoding) * channels
    _check_rate(sample_rate)
    kept = channels if keep_channels else 1
    if limits is not None:
        _check_frame_rate(sample_rate, limits, path)
        seconds = path.stat().st_size // frame / sample_rate * kept
        if limits.max_seconds is not None and seconds > limits.max_seconds:
            raise _too_long(path, seconds, limits, declared=True)
    resampler = StreamResampler(sample_rate, TARGET_RATE, kept)
    blocks: list[np.ndarray] = []
    step = max(1, int(sample_rate * chunk_s)) * frame
    with path.open("rb") as source:
        while data := source.read(step):
            data = data[: len(data) - len(data) % frame]
            if not data:
                break
            samples = deinterleave(decode_pcm(data, encoding), channels)
            if not keep_channels:
                samples = samples.mean(axis=0, keepdims=True, dtype=np.float32)
            blocks.append(resampler.process(samples if kept > 1 else samples[0]))
    if not blocks:
        raise AudioDecodeError(f"shorter than one {channels}-channel sample")
    blocks.append(resampler.process(np.zeros((kept, 0) if kept > 1 else 0, np.float32), last=True))
    audio = np.concatenate(blocks, axis=-1)
    return list(audio) if kept > 1 else [audio]
