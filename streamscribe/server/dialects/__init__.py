"""One thin route module per vendor wire protocol: authenticate, parse, admit, hand over.

Each live route picks its dialect (a sans-I/O object from `protocols/`) and hands the socket to
the one live-stream loop (`server/stream/`); batch routes of the same vendors (OpenAI uploads,
Deepgram pre-recorded) decode and transcribe through the shared scheduler. No protocol logic
lives here, and no dialect imports another.
"""

from streamscribe.protocols import assemblyai_v2 as _v2
from streamscribe.protocols import assemblyai_v3 as _v3
from streamscribe.protocols import deepgram_options as _deepgram
from streamscribe.protocols import fireworks as _fireworks
from streamscribe.protocols import openai_batch as _batch
from streamscribe.protocols import openai_realtime as _realtime
from streamscribe.server.dialects import (
    assemblyai_v2,
    assemblyai_v3,
    azure_speech,
    deepgram,
    deepgram_http,
    fireworks,
    openai_batch,
    openai_realtime,
)

routers = [
    module.router
    for module in (
        assemblyai_v3,
        assemblyai_v2,
        deepgram,
        deepgram_http,
        fireworks,
        openai_batch,
        openai_realtime,
        azure_speech,
    )
]

# per dialect: what is accepted and done approximately (/v1/info "approximated")
approximated = {
    "assemblyai_v3": _v3.APPROXIMATED,
    "assemblyai_v2": _v2.APPROXIMATED,
    "deepgram": _deepgram.APPROXIMATED,
    "openai_realtime": _realtime.APPROXIMATED,
    "openai_batch": _batch.APPROXIMATED,
    "fireworks": _fireworks.APPROXIMATED,
}
