"""streamscribe's Python SDK: stream audio to a v3 (AssemblyAI Universal-Streaming) endpoint.

```
from streamscribe.client import FileStream, StreamingClient

with StreamingClient("ws://127.0.0.1:8000", format_turns=True) as client:
    client.on("turn", lambda client, turn: turn.end_of_turn and print(turn.transcript))
    client.stream(FileStream("meeting.mp4"))
```

Modules: `messages` (server messages, errors, handshake URL; no I/O), `streaming` (the asyncio
client), `sync` (the blocking wrapper), `sources` (file and microphone audio). The SDK works with
any server speaking the v3 protocol, not only streamscribe's.
"""

from streamscribe.client.azure import ConversationTranscriber
from streamscribe.client.messages import (
    Begin,
    Message,
    SpeechStarted,
    StreamingError,
    Termination,
    Turn,
    TurnWord,
    build_query,
    parse_message,
    session_url,
)
from streamscribe.client.sources import FileStream, MicrophoneError, MicrophoneStream
from streamscribe.client.streaming import AsyncStreamingClient, StreamingEvents
from streamscribe.client.sync import StreamingClient

__all__ = [
    "AsyncStreamingClient",
    "Begin",
    "ConversationTranscriber",
    "FileStream",
    "Message",
    "MicrophoneError",
    "MicrophoneStream",
    "SpeechStarted",
    "StreamingClient",
    "StreamingError",
    "StreamingEvents",
    "Termination",
    "Turn",
    "TurnWord",
    "build_query",
    "parse_message",
    "session_url",
]
