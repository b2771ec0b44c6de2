"""Validates v2 server messages with the official SDK 0.64.2 models, as its reader thread does.

Reads a JSON array of messages on stdin; prints a JSON array with, for each, null when the SDK
accepts it or the validation error. Run with PYTHONPATH=.venv/sdk/assemblyai-0.64.2.
"""

from __future__ import annotations

import json
import sys

from assemblyai import types

MODELS = {
    "SessionBegins": types.RealtimeSessionOpened,
    "PartialTranscript": types.RealtimePartialTranscript,
    "FinalTranscript": types.RealtimeFinalTranscript,
    "SessionInformation": types.RealtimeSessionInformation,
}


def check(message: dict) -> str | None:
    model = MODELS.get(message.get("message_type", ""))
    if model is None:
        return None  # SessionTerminated and error objects carry no model
    try:
        model(**message)
    except Exception as exc:  # pydantic's error, whichever major version the SDK runs on
        return str(exc)
    return None


if __name__ == "__main__":
    print(json.dumps([check(m) for m in json.load(sys.stdin)]))
