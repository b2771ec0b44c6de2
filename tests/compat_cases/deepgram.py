"""Matrix row: Deepgram live `/v1/listen`, driven by the official `deepgram-sdk` (7.17)."""

from __future__ import annotations

import contextlib
import threading
import time

from deepgram import DeepgramClient
from deepgram.environment import DeepgramClientEnvironment
from websockets.exceptions import ConnectionClosed

from compat_cases import BadOutcome, Outcome

CHUNK = 3200  # 100 ms of 16 kHz linear16


class DeepgramCase:
    name = "deepgram"
    first = "ListenV1Results"  # no greeting: the first message is a transcript
    last = "ListenV1Metadata"
    clean_close = 1000
    bad_code = 1008

    @staticmethod
    def _client(server) -> DeepgramClient:
        environment = DeepgramClientEnvironment(
            base=server.http, production=server.ws, agent=server.ws, agent_rest=server.http
        )
        return DeepgramClient(api_key="k", environment=environment)

    def stream(self, server, speech) -> Outcome:
        pcm = speech.pcm16()
        seen: list = []
        with self._client(server).listen.v1.connect(
            model="nova-3",
            encoding="linear16",
            sample_rate=16000,
            interim_results=True,
            punctuate=True,
        ) as socket:

            def send() -> None:
                t0 = time.monotonic()
                for k, i in enumerate(range(0, len(pcm), CHUNK)):
                    time.sleep(max(0.0, t0 + k * 0.05 - time.monotonic()))  # twice real time
                    socket.send_media(pcm[i : i + CHUNK])
                socket.send_close_stream()

            sender = threading.Thread(target=send)
            sender.start()
            with contextlib.suppress(ConnectionClosed):  # a bad close shows in close_code
                for message in socket:
                    seen.append(message)
            sender.join(30)
            code = socket._websocket.close_code
        finals = [m for m in seen if getattr(m, "type", None) == "Results" and m.is_final]
        return Outcome(
            transcript=" ".join(m.channel.alternatives[0].transcript for m in finals),
            messages=[type(m).__name__ for m in seen],
            close_code=code,
        )

    def bad_input(self, server) -> BadOutcome:
        # no encoding= and no WAV header: the audio format cannot be known
        with self._client(server).listen.v1.connect(model="nova-3") as socket:
            socket.send_media(b"\x01\x02" * 1600)
            try:
                for _ in socket:
                    pass
            except ConnectionClosed as exc:
                if exc.rcvd is not None:
                    return BadOutcome(exc.rcvd.code, exc.rcvd.reason)
        return BadOutcome(0, "")


CASE = DeepgramCase()
