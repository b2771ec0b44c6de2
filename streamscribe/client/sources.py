"""Audio sources for the streaming clients: any audio/video file, or the microphone.

Why this exists: a streaming session wants a steady flow of small PCM16 chunks at the session's
sample rate. `FileStream` turns any file PyAV can read into such chunks and, by default, paces
them by the wall clock as if they came from a live source (a chunk is released when its audio has
"happened", so a server's real-time rate checks hold and the latency seen is the live one).
`MicrophoneStream` reads the default (or a chosen) input device through PortAudio and hands
chunks over a bounded queue, so a slow consumer drops the oldest audio instead of growing memory.

Both are plain iterables of bytes (FileStream also async-iterable), usable with any client.
Decoding and resampling live in `streamscribe.audio`; this module only chunks, paces and queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

from streamscribe.errors import StreamscribeError

PORTAUDIO_FIX = (
    "install PortAudio: apt-get install libportaudio2 (macOS: brew install portaudio), "
    "or stream a file instead with `streamscribe stream FILE`"
)
NO_DEVICE_FIX = (
    "no input device found: connect a microphone or pass --device; "
    "list devices with `python -m sounddevice`"
)


class MicrophoneError(StreamscribeError):
    """The microphone cannot be used; the message says how to fix it."""


def _check_chunk(sample_rate: int, chunk_ms: int) -> None:
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    if not 10 <= chunk_ms <= 1000:
        raise ValueError(f"chunk_ms must be between 10 and 1000, got {chunk_ms}")


class FileStream:
    """PCM16 mono chunks of an audio or video file, optionally paced in real time.

    Iterate it (or `async for` it) to get `bytes` of `chunk_ms` of audio each (the last is
    padded with silence). With `realtime=True` each chunk is released when a live source would
    have finished recording it: chunk i at (i + 1) * chunk_ms after the stream starts, on an
    absolute schedule (no drift; a slow consumer catches up), so audio never runs ahead of real
    time. With
    `realtime=False` chunks come as fast as they are taken. Each iteration decodes the file anew.
    Raises FileNotFoundError at once for a missing file, AudioDecodeError while iterating for an
    unreadable one.
    """

    def __init__(
        self,
        path: str | Path,
        sample_rate: int = 16000,
        chunk_ms: int = 100,
        realtime: bool = True,
    ) -> None:
        _check_chunk(sample_rate, chunk_ms)
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no such audio file: {self.path}")
        self.sample_rate = sample_rate
        self.chunk_ms = chunk_ms
        self.realtime = realtime

    @property
    def duration(self) -> float | None:
        """The file's duration in seconds, if the container says (None otherwise)."""
        from streamscribe.audio.files import probe_duration

        return probe_duration(self.path)

    def _chunks(self) -> Iterator[tuple[bytes, float]]:
        """(chunk bytes, audio seconds up to the end of this chunk)."""
        from streamscribe.audio.codecs import encode_pcm16
        from streamscribe.audio.files import iter_file_chunks

        samples = 0
        full = self.sample_rate * self.chunk_ms // 1000
        for chunk in iter_file_chunks(self.path, self.sample_rate, self.chunk_ms):
            if len(chunk) == 0:
                continue
            if len(chunk) < full:  # servers reject frames under 50 ms: pad the last with silence
                chunk = np.concatenate([chunk, np.zeros(full - len(chunk), dtype=chunk.dtype)])
            samples += len(chunk)
            yield encode_pcm16(chunk), samples / self.sample_rate

    def __iter__(self) -> Iterator[bytes]:
        start: float | None = None
        for data, audio_end in self._chunks():
            if self.realtime:
                now = time.monotonic()
                if start is None:
                    start = now
                delay = start + audio_end - now
                if delay > 0:
                    time.sleep(delay)
            yield data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        start: float | None = None
        for data, audio_end in self._chunks():
            if self.realtime:
                now = loop.time()
                if start is None:
                    start = now
                delay = start + audio_end - now
                await asyncio.sleep(max(delay, 0))
            else:
                await asyncio.sleep(0)  # let the reader task run between chunks
            yield data

    def __repr__(self) -> str:
        return (
            f"FileStream({str(self.path)!r}, sample_rate={self.sample_rate}, "
            f"chunk_ms={self.chunk_ms}, realtime={self.realtime})"
        )


def import_sounddevice() -> ModuleType:
    """The sounddevice module, or MicrophoneError naming the fix when PortAudio is missing."""
    try:
        import sounddevice
    except OSError:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise MicrophoneError(f"PortAudio library not found: {PORTAUDIO_FIX}") from None
    except ImportError:
        raise MicrophoneError(
            "the sounddevice package is not installed: pip install sounddevice"
        ) from None
    return sounddevice


class MicrophoneStream:
    """PCM16 mono chunks from an input device, through a bounded queue.

    Opening happens on `open()`, `with`, or the first iteration; iteration ends after `close()`
    (which may be called from another thread) once the chunks recorded before it are taken.
    If the device cannot record at `sample_rate`, it records at its native rate and the audio
    is resampled. When the consumer falls behind by more than `max_queued_chunks`, the oldest
    chunks are dropped (counted in `dropped_chunks`).
    Raises MicrophoneError, naming the fix, when PortAudio or an input device is missing.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        chunk_ms: int = 100,
        device: int | str | None = None,
        max_queued_chunks: int = 50,
    ) -> None:
        _check_chunk(sample_rate, chunk_ms)
        self.sample_rate = sample_rate
        self.chunk_ms = chunk_ms
        self.device = device
        self.dropped_chunks = 0
        self._sd = import_sounddevice()
        self.device_info = self._input_device()
        self.device_rate = self._device_rate()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=max_queued_chunks)
        self._stream: Any = None
        self._closed = threading.Event()
        self._resampler: Any = None
        if self.device_rate != sample_rate:
            from streamscribe.audio.resample import StreamResampler

            self._resampler = StreamResampler(self.device_rate, sample_rate)

    @property
    def device_name(self) -> str:
        return str(self.device_info.get("name", self.device))

    def _input_device(self) -> dict[str, Any]:
        sd = self._sd
        try:
            info = sd.query_devices(self.device, kind="input")
        except (ValueError, sd.PortAudioError) as exc:
            detail = f"device {self.device!r}: {exc}" if self.device is not None else str(exc)
            raise MicrophoneError(f"{NO_DEVICE_FIX} ({detail})") from None
        if int(info.get("max_input_channels", 0)) < 1:
            raise MicrophoneError(f"{NO_DEVICE_FIX} ({info.get('name')!r} has no input channels)")
        return dict(info)

    def _device_rate(self) -> int:
        sd = self._sd
        try:
            sd.check_input_settings(
                device=self.device, channels=1, dtype="int16", samplerate=self.sample_rate
            )
            return self.sample_rate
        except (ValueError, sd.PortAudioError):
            return int(self.device_info.get("default_samplerate") or self.sample_rate)

    def open(self) -> MicrophoneStream:
        """Start recording (idempotent)."""
        if self._stream is not None:
            return self
        if self._closed.is_set():
            raise RuntimeError("this MicrophoneStream was closed: create a new one")
        sd = self._sd
        try:
            self._stream = sd.RawInputStream(
                samplerate=self.device_rate,
                blocksize=self.device_rate * self.chunk_ms // 1000,
                device=self.device,
                channels=1,
                dtype="int16",
                callback=self._on_audio,
            )
            self._stream.start()
        except sd.PortAudioError as exc:
            self._stream = None
            raise MicrophoneError(
                f"cannot open {self.device_name!r}: {exc}; {NO_DEVICE_FIX}"
            ) from None
        return self

    def _on_audio(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio callback (its own thread): queue the block, dropping the oldest if full."""
        data = bytes(indata)
        while True:
            try:
                self._queue.put_nowait(data)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped_chunks += 1
                except queue.Empty:
                    pass

    def close(self) -> None:
        """Stop recording and end iteration (safe to call twice, from any thread)."""
        if self._closed.is_set():
            return
        self._closed.set()
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()
            stream.close()
        while True:  # wake a consumer blocked on the queue
            try:
                self._queue.put_nowait(None)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()

    def _convert(self, raw: bytes, last: bool = False) -> bytes:
        if self._resampler is None:
            return raw
        from streamscribe.audio.codecs import encode_pcm16

        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
        return encode_pcm16(self._resampler.process(samples, last=last))

    def __iter__(self) -> Iterator[bytes]:
        if not self._closed.is_set():
            self.open()
        while True:
            raw = self._queue.get()
            if raw is None:
                self._queue.put(None)  # so a later iteration ends too
                break
            data = self._convert(raw)
            if data:
                yield data
        if self._resampler is not None and (tail := self._convert(b"", last=True)):
            yield tail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        iterator = iter(self)
        end = object()
        while (data := await asyncio.to_thread(next, iterator, end)) is not end:
            yield data  # type: ignore[misc]

    def __enter__(self) -> MicrophoneStream:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
