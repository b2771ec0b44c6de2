"""Matrix row: AssemblyAI Universal-Streaming v3, driven by the official `assemblyai` SDK."""

from __future__ import annotations

import threading

from assemblyai.streaming.v3 import (
    StreamingClient,
    StreamingClientOptions,
    StreamingError,
    StreamingEvents,
    StreamingParameters,
    TurnEvent,
)

from compat_cases import BadOutcome, Outcome


class V3Case:
    name = "assemblyai-v3"
    first = "BeginEvent"
    last = "TerminationEvent"
    clean_close = 1000
    bad_code = 3007

    def stream(self, server, speech) -> Outcome:
        client = StreamingClient(StreamingClientOptions(api_key="k", api_host=server.ws))
        seen: list = []
        done = threading.Event()
        for kind in (StreamingEvents.Begin, StreamingEvents.Turn, StreamingEvents.Termination):
            client.on(kind, lambda _c, e: seen.append(e))
        client.on(StreamingEvents.Error, lambda _c, e: seen.append(e))
        client.on(StreamingEvents.Termination, lambda _c, e: done.set())
        client.connect(StreamingParameters(sample_rate=16000, format_turns=True))
        pcm = speech.pcm16()
        # 100 ms frames; the last one padded (v3 refuses frames under 50 ms)
        client.stream(pcm[i : i + 3200].ljust(3200, b"\0") for i in range(0, len(pcm), 3200))
        client.disconnect(terminate=True)
        done.wait(60)
        turns = [e for e in seen if isinstance(e, TurnEvent) and e.turn_is_formatted]
        errors = [e for e in seen if isinstance(e, StreamingError)]
        return Outcome(
            transcript=" ".join(t.transcript for t in turns),
            messages=[type(e).__name__ for e in seen],
            close_code=1000 if done.is_set() and not errors else None,
        )

    def bad_input(self, server) -> BadOutcome:
        client = StreamingClient(StreamingClientOptions(api_key="k", api_host=server.ws))
        errors: list = []
        got = threading.Event()
        client.on(StreamingEvents.Error, lambda _c, e: (errors.append(e), got.set()))
        client.connect(StreamingParameters(sample_rate=16000))
        client.stream([b"\0" * 3201])  # not a whole number of pcm_s16le samples
        got.wait(10)
        client.disconnect(terminate=False)
        error = errors[0] if errors else None
        return BadOutcome(getattr(error, "code", 0) or 0, str(error or ""))


CASE = V3Case()
