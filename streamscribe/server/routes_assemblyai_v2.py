"""AssemblyAI v2 realtime (`/v2/realtime/ws`, `POST /v2/realtime/token`)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
