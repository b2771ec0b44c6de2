"""The browser dashboard: static page and assets served at `/`."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
