"""What an uploaded file may decode to, and how a refusal says so (every upload route alike).

A file's byte size says little about what it costs: a 12 KB WAV declaring a 1 Hz sample rate
decodes to three hours at 16 kHz. So every route that takes a file (`POST /v1/transcripts`,
Deepgram's `POST /v1/listen`, OpenAI's transcriptions) bounds the decoded duration and the
declared sample rate from `Settings`, checks the header before decoding and every frame while
decoding (`audio.files`), and answers a refusal that names the limit, its setting and the fix.
The routes render the refusal in their own wire shape.

`upload_slots` is the server's count of uploads in progress (dashboard uploads and Deepgram
pre-recorded requests alike): a slot is taken before the body is read, so parallel slow bodies
count from their first byte, and given back when the upload's work ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from streamscribe.audio.files import AudioLimitError, DecodeLimits
from streamscribe.config import Settings


def decode_limits(settings: Settings, max_seconds: float | None = None) -> DecodeLimits:
    """The server's limits (with `max_seconds`, the lower of it and the server's)."""
    seconds = settings.max_upload_seconds
    if max_seconds is not None:
        seconds = min(seconds, max_seconds)
    return DecodeLimits(seconds, settings.upload_min_sample_rate, settings.upload_max_sample_rate)


def limit_refusal(exc: AudioLimitError, settings: Settings, name: str) -> tuple[int, str]:
    """(HTTP status, reason naming the limit and the fix) for a file out of the limits."""
    if exc.limit == "sample_rate":
        low, high = settings.upload_min_sample_rate, settings.upload_max_sample_rate
        return 400, (
            f"{name!r} declares a sample rate of {exc.value:g} Hz; this server accepts "
            f"{low}-{high} Hz (STREAMSCRIBE_UPLOAD_MIN_SAMPLE_RATE / "
            "STREAMSCRIBE_UPLOAD_MAX_SAMPLE_RATE): resample it, e.g. "
            "`ffmpeg -i IN -ar 16000 OUT.wav`"
        )
    return 413, (
        f"{name!r} holds more than {exc.bound:g} s of audio, this server's limit per upload "
        f"(STREAMSCRIBE_MAX_UPLOAD_SECONDS={settings.max_upload_seconds:g}; with multichannel "
        "every channel counts): cut it into parts and upload them one by one"
    )


class UploadSlots:
    """Uploads being received, decoded or transcribed, counted from their first body byte."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.taken = 0

    def take(self) -> bool:
        if self.taken >= self.size:
            return False
        self.taken += 1
        return True

    def release(self) -> None:
        self.taken = max(0, self.taken - 1)

    def busy(self) -> str:
        """Why an upload was refused, naming the limit and its setting."""
        return (
            f"{self.taken} uploads are being received or transcribed, this server's limit "
            f"(STREAMSCRIBE_MAX_ACTIVE_UPLOADS={self.size}); try again in a minute"
        )


def upload_slots(app: Any, settings: Settings) -> UploadSlots:
    """The app's upload slots (made on first use)."""
    slots = getattr(app.state, "upload_slots", None)
    if slots is None:
        slots = app.state.upload_slots = UploadSlots(settings.max_active_uploads)
    return slots


class UploadStalled(Exception):
    """The body sent nothing for the stall limit; str() says so and names the setting."""


async def body_chunks(request: Any, stall_s: float) -> AsyncIterator[bytes]:
    """The request body's chunks; UploadStalled when none arrives for `stall_s` seconds."""
    body = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(body.__anext__(), stall_s)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise UploadStalled(
                f"the upload sent nothing for {stall_s:g} s, this server's limit "
                "(STREAMSCRIBE_UPLOAD_STALL_SECONDS): send the file without pausing"
            ) from None
        yield chunk
