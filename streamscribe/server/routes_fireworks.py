"""Fireworks streaming transcription (`/v1/audio/transcriptions/streaming`)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
