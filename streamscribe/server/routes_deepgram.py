"""Deepgram live (`/v1/listen` WebSocket) and pre-recorded (`POST /v1/listen`)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
