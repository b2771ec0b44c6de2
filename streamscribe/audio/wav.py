"""PCM16 WAV recordings that survive a crash of the process writing them.

Why this exists: sessions can record their audio, and a recording must stream to disk as audio
arrives rather than be assembled at the end. A WAV header states the data size up front, which a
streaming writer does not know; `WavWriter` writes the header with sizes 0 and patches them on
`flush()`, `close()` and after every second of audio, so a reader sees all but the last second
even if the process dies. `repair_wav_header` recomputes the sizes of such a file from its length,
recovering every byte that reached the disk. `read_wav` reads plain PCM WAV with the stdlib.

Durability is against a crash of the process (data handed to the OS survives), not against a
crash of the machine: nothing here calls fsync. Files of any other format go through `files.py`.
"""

from __future__ import annotations

import os
import struct
import wave
from pathlib import Path
from types import TracebackType

import numpy as np

from streamscribe.audio.codecs import encode_pcm16
from streamscribe.errors import AudioDecodeError

_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")  # RIFF, fmt (PCM, 16 bytes), data: 44 bytes
_RIFF_SIZE_AT = 4
_DATA_SIZE_AT = 40
_MAX_CHUNK = 0xFFFFFFFF  # RIFF sizes are 32-bit: a WAV addresses at most 4 GiB
_PATCH_EVERY_S = 1.0


def _header(sample_rate: int, channels: int, data_bytes: int) -> bytes:
    block_align = 2 * channels
    return _HEADER.pack(
        b"RIFF",
        min(36 + data_bytes, _MAX_CHUNK),
        b"WAVE",
        b"fmt ",
        16,
        1,  # WAVE_FORMAT_PCM
        channels,
        sample_rate,
        sample_rate * block_align,
        block_align,
        16,
        b"data",
        min(data_bytes, _MAX_CHUNK),
    )


class WavWriter:
    """Stream 16-bit PCM to a WAV file whose header is kept up to date as it grows.

    `write` takes float samples, shape (n,) for mono or (channels, n); `write_pcm16` takes
    interleaved little-endian int16 bytes. Only whole frames are accepted.
    """

    def __init__(self, path: str | Path, sample_rate: int = 16000, channels: int = 1) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
        if channels < 1:
            raise ValueError(f"channels must be at least 1, got {channels}")
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.channels = channels
        self._block_align = 2 * channels
        self._patch_every = max(1, int(sample_rate * _PATCH_EVERY_S))
        self._frames = 0
        self._frames_in_header = 0
        self._file = open(self.path, "wb")  # noqa: SIM115 -- closed by close()
        self._file.write(_header(sample_rate, channels, 0))
        self._file.flush()

    @property
    def frames_written(self) -> int:
        """Frames (samples per channel) written so far, flushed or not."""
        return self._frames

    @property
    def closed(self) -> bool:
        return self._file.closed

    def write(self, samples: np.ndarray) -> None:
        """Append float samples: shape (n,) when mono, else (channels, n); clipped to [-1, 1]."""
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim == 1 and self.channels == 1:
            x = x[np.newaxis, :]
        if x.ndim != 2 or x.shape[0] != self.channels:
            want = "(n,) or (1, n)" if self.channels == 1 else f"({self.channels}, n)"
            raise ValueError(f"expected samples of shape {want}, got {x.shape}")
        self._append(encode_pcm16(x.T), x.shape[1])  # (n, channels) in C order = interleaved

    def write_pcm16(self, data: bytes) -> None:
        """Append interleaved 16-bit little-endian PCM bytes (whole frames only)."""
        if len(data) % self._block_align:
            raise ValueError(
                f"{len(data)} bytes is not a whole number of {self.channels}-channel PCM16 "
                f"frames ({self._block_align} bytes each)"
            )
        self._append(bytes(data), len(data) // self._block_align)

    def _append(self, data: bytes, frames: int) -> None:
        if self._file.closed:
            raise ValueError(f"write to closed WavWriter for {self.path}")
        self._file.write(data)
        self._frames += frames
        if self._frames - self._frames_in_header >= self._patch_every:
            self.flush()

    def flush(self) -> None:
        """Hand buffered audio to the OS, then make the header cover it."""
        if self._file.closed:
            raise ValueError(f"flush of closed WavWriter for {self.path}")
        self._file.flush()  # data first: the header never claims bytes not yet written
        data_bytes = self._frames * self._block_align
        self._file.seek(_RIFF_SIZE_AT)
        self._file.write(struct.pack("<I", min(36 + data_bytes, _MAX_CHUNK)))
        self._file.seek(_DATA_SIZE_AT)
        self._file.write(struct.pack("<I", min(data_bytes, _MAX_CHUNK)))
        self._file.seek(0, os.SEEK_END)
        self._file.flush()
        self._frames_in_header = self._frames

    def close(self) -> None:
        """Flush and close; closing twice is harmless."""
        if self._file.closed:
            return
        try:
            self.flush()
        finally:
            self._file.close()

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def repair_wav_header(path: str | Path) -> int:
    """Rewrite the RIFF and data sizes of a WAV from its length; return its frame count.

    For files whose writer died before patching the header. Assumes the data chunk is the last
    one (as `WavWriter` writes it); a torn trailing partial frame is cut off.
    """
    path = Path(path)
    try:
        with open(path, "r+b") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                raise AudioDecodeError(f"cannot repair {path}: not a RIFF/WAVE file")
            file_size = os.fstat(f.fileno()).st_size
            block_align = 0
            pos = 12
            while True:
                f.seek(pos)
                chunk = f.read(8)
                if len(chunk) < 8:
                    raise AudioDecodeError(f"cannot repair {path}: no data chunk")
                chunk_id, chunk_size = struct.unpack("<4sI", chunk)
                if chunk_id == b"data":
                    break
                if chunk_id == b"fmt ":
                    fmt = f.read(min(chunk_size, 16))
                    if len(fmt) >= 14:
                        (block_align,) = struct.unpack_from("<H", fmt, 12)
                pos += 8 + chunk_size + (chunk_size & 1)
            if block_align == 0:
                raise AudioDecodeError(f"cannot repair {path}: no valid fmt chunk before data")
            data_start = pos + 8
            frames = max(0, file_size - data_start) // block_align
            data_bytes = frames * block_align
            f.truncate(data_start + data_bytes)
            riff_size = data_start + data_bytes - 8
            if data_bytes & 1:  # RIFF chunks are padded to even length
                f.seek(0, os.SEEK_END)
                f.write(b"\0")
                riff_size += 1
            f.seek(_RIFF_SIZE_AT)
            f.write(struct.pack("<I", min(riff_size, _MAX_CHUNK)))
            f.seek(pos + 4)
            f.write(struct.pack("<I", min(data_bytes, _MAX_CHUNK)))
    except OSError as exc:
        raise AudioDecodeError(f"cannot repair {path}: {exc.strerror or exc}") from exc
    return min(frames, _MAX_CHUNK // block_align)


def _pcm_to_float(raw: bytes, width: int) -> np.ndarray:
    if width == 1:  # 8-bit WAV is unsigned
        return (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 2:
        return (np.frombuffer(raw, "<i2") / np.float32(32768.0)).astype(np.float32)
    if width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        value = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8) >> 8  # sign-extend 24 bits
        return (value / np.float32(2**23)).astype(np.float32)
    if width == 4:
        return (np.frombuffer(raw, "<i4") / 2.0**31).astype(np.float32)
    raise AudioDecodeError(f"unsupported sample width {width} bytes")


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a PCM WAV: (float32 samples, sample rate); shape (n,) if mono else (channels, n)."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise AudioDecodeError(
            f"cannot read {path} as PCM WAV: {exc}; other formats decode with decode_file"
        ) from exc
    except OSError as exc:
        raise AudioDecodeError(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        samples = _pcm_to_float(raw[: len(raw) - len(raw) % (width * channels)], width)
    except AudioDecodeError as exc:
        raise AudioDecodeError(f"cannot read {path}: {exc}") from None
    if channels == 1:
        return samples, rate
    return np.ascontiguousarray(samples.reshape(-1, channels).T), rate
