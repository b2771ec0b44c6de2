"""Decode audio (or the audio track of a video) from any file FFmpeg can read.

Why this exists: uploads and the CLI accept whatever users have -- WAV, MP3, Ogg, MP4, WebM,
FLAC, phone recordings -- and the engine wants float32 at 16 kHz. PyAV (FFmpeg) demuxes and
decodes; sample formats are converted to float here with numpy, and the rate is converted with
the same soxr resampler the live streams use (`resample.py`), so a file uploaded and the same
file streamed reach the engine as identical samples. Down-mixing is a plain mean of the
channels, so a mono recording duplicated into stereo keeps its level (FFmpeg's own stereo-to-mono
matrix adds 3 dB for float output).

Only the first audio stream of a file is decoded. Every failure -- missing file, no audio, corrupt
data -- raises `AudioDecodeError` naming the file and the problem. Uploads that never touch the
disk (an HTTP request body) go through `decode_stream`, which takes a binary file object and can
stop early once a length cap is passed. Raw wire bytes are decoded in `codecs.py`; WAV recordings
are written by `wav.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import av
import av.error
import numpy as np

from streamscribe.audio.resample import TARGET_RATE, StreamResampler
from streamscribe.errors import AudioDecodeError

# Exceptions FFmpeg/PyAV raise for unreadable input. av.error.FFmpegError covers FFmpeg's own
# errors (including av.error.FileNotFoundError); OSError covers the rest of the file system.
_AV_ERRORS = (av.error.FFmpegError, OSError, EOFError)


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
    path: Path, sample_rate: int, mono: bool, source: BinaryIO | None = None
) -> Iterator[np.ndarray]:
    """Decode `path` (or `source`) frame by frame into float32 blocks of shape (channels, n).

    With `mono`, channels are averaged before resampling (cheaper) and blocks have one row.
    Yields nothing at all for an audio stream without frames.
    """
    resampler: StreamResampler | None = None
    channels: int | None = None

    def convert(block: np.ndarray, last: bool = False) -> np.ndarray:
        assert resampler is not None
        if resampler.channels == 1:
            return resampler.process(block[0], last=last)[np.newaxis, :]
        return resampler.process(block, last=last)

    with _open_audio(path, source) as (container, stream):
        try:
            for frame in container.decode(stream):
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


def decode_file_channels(path: str | Path, sample_rate: int = TARGET_RATE) -> np.ndarray:
    """Decode the whole first audio stream, keeping channels: float32 of shape (channels, n)."""
    _check_rate(sample_rate)
    blocks = list(_iter_blocks(Path(path), sample_rate, mono=False))
    if not blocks:
        return np.zeros((1, 0), np.float32)
    return np.concatenate(blocks, axis=1)


def decode_file(path: str | Path, sample_rate: int = TARGET_RATE) -> np.ndarray:
    """Decode the whole first audio stream, down-mixed to mono: float32 of shape (n,)."""
    _check_rate(sample_rate)
    blocks = [block[0] for block in _iter_blocks(Path(path), sample_rate, mono=True)]
    if not blocks:
        return np.zeros(0, np.float32)
    return np.concatenate(blocks)


def decode_stream(
    source: BinaryIO,
    sample_rate: int = TARGET_RATE,
    name: str = "upload",
    max_seconds: float | None = None,
) -> np.ndarray:
    """Decode a seekable binary file object (an upload), down-mixed to mono: float32 (n,).

    `name` stands for the file in error messages. With `max_seconds`, decoding stops as soon as
    more than that has been decoded, so the result is longer than `max_seconds` exactly when the
    file is: a caller can refuse an over-long upload without holding all of it in memory.
    """
    _check_rate(sample_rate)
    limit = None if max_seconds is None else int(max_seconds * sample_rate)
    blocks: list[np.ndarray] = []
    total = 0
    decoder = _iter_blocks(Path(name), sample_rate, mono=True, source=source)
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
