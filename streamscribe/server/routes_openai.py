"""OpenAI transcription: batch, SSE streaming and the Realtime transcription session."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
