"""The error tree every dialect shares, the transition machine, and the engine's own Error.

Who is at fault decides the type (PeerError vs ServerRefusal, both ProtocolErrors); a step the
server should never take is a LocalProtocolError, which no `except ProtocolError` catches. Close
codes stay in the dialects: `events.Error` is kind + message, and each live dialect renders it as
its own internal-error close.
"""

from __future__ import annotations

import dataclasses
import json
from enum import Enum

import pytest

from streamscribe.errors import (
    LocalProtocolError,
    PeerError,
    ProtocolError,
    ServerRefusal,
    StreamscribeError,
)
from streamscribe.events import Error, ErrorKind, SessionConfig
from streamscribe.protocols import acs_media
from streamscribe.protocols.assemblyai_v2 import V2Protocol
from streamscribe.protocols.assemblyai_v3 import V3Protocol
from streamscribe.protocols.common import (
    IGNORED,
    Close,
    CodedPeerError,
    CodedRefusal,
    Machine,
    Step,
    close_code_of,
    coded,
)
from streamscribe.protocols.deepgram import DeepgramProtocol, parse_options, session_config
from streamscribe.protocols.deepgram_options import http_error as deepgram_http_error
from streamscribe.protocols.fireworks import FireworksOptions, FireworksProtocol
from streamscribe.protocols.fireworks import http_error as fireworks_http_error
from streamscribe.protocols.openai_common import OpenAIError
from streamscribe.protocols.openai_realtime import RealtimeProtocol

PEER = [ErrorKind.AUTH, ErrorKind.BAD_REQUEST, ErrorKind.BAD_AUDIO]
SERVER = [
    ErrorKind.BUSY,
    ErrorKind.LIMIT,
    ErrorKind.QUOTA,
    ErrorKind.RATE,
    ErrorKind.EXPIRED,
    ErrorKind.TIMEOUT,
    ErrorKind.INTERNAL,
]

# ------------------------------------------------------------------ the tree


def test_every_kind_belongs_to_exactly_one_side():
    assert set(PEER) | set(SERVER) == set(ErrorKind)
    assert PeerError.kinds.isdisjoint(ServerRefusal.kinds)


@pytest.mark.parametrize("kind", PEER)
def test_the_peers_mistakes_are_peer_errors(kind):
    exc = ProtocolError.of(kind, "what was wrong and the fix")
    assert type(exc) is PeerError and exc.kind is kind and exc.reason.endswith("fix")


@pytest.mark.parametrize("kind", SERVER)
def test_server_conditions_are_refusals(kind):
    exc = ProtocolError.of(kind, "try again")
    assert type(exc) is ServerRefusal and exc.kind is kind


def test_except_protocolerror_still_catches_both_and_the_old_constructor_still_works():
    for exc in (
        PeerError(ErrorKind.BAD_AUDIO, "x"),
        ServerRefusal(ErrorKind.BUSY, "y"),
        ProtocolError(ErrorKind.BUSY, "Server busy ..."),  # not yet switched call sites
    ):
        with pytest.raises(ProtocolError):
            raise exc


def test_a_kind_on_the_wrong_side_is_refused_loudly():
    with pytest.raises(ValueError, match="PeerError cannot carry kind 'busy'"):
        PeerError(ErrorKind.BUSY, "x")
    with pytest.raises(ValueError, match="ServerRefusal cannot carry kind 'bad_audio'"):
        ServerRefusal(ErrorKind.BAD_AUDIO, "x")


def test_our_own_illegal_step_is_not_a_protocol_error():
    exc = LocalProtocolError("Deepgram", "render an event", "CLOSED")
    assert isinstance(exc, StreamscribeError) and not isinstance(exc, ProtocolError)
    assert str(exc) == "Deepgram: tried to render an event in state CLOSED"


def test_the_engine_error_event_has_no_close_code():
    assert [f.name for f in dataclasses.fields(Error)] == ["kind", "message"]


# ------------------------------------------------------------------ dialect-side close codes


def test_a_dialect_keeps_its_close_code_on_its_own_error_type():
    peer = coded(ErrorKind.BAD_REQUEST, "bad sample_rate", 4000)
    limit = coded(ErrorKind.RATE, "too fast", 4029)
    assert isinstance(peer, CodedPeerError) and isinstance(peer, PeerError)
    assert isinstance(limit, CodedRefusal) and isinstance(limit, ServerRefusal)
    assert close_code_of(peer) == 4000 and close_code_of(limit) == 4029
    assert close_code_of(PeerError(ErrorKind.BAD_REQUEST, "x")) is None


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (coded(ErrorKind.BAD_REQUEST, "unsupported", 1003), 1003),
        (PeerError(ErrorKind.BAD_AUDIO, "Invalid audio: odd bytes"), 1007),
        (ServerRefusal(ErrorKind.LIMIT, "too many"), 1008),
        (ServerRefusal(ErrorKind.QUOTA, "daily audio spent"), 1008),
    ],
)
def test_acs_media_closes_with_its_code_or_by_kind(exc, code):
    assert acs_media.close_for(exc) == (code, exc.reason)


# ------------------------------------------------------------------ the engine's Error


def _dialects():
    dg = parse_options([("model", "nova-3"), ("encoding", "linear16"), ("sample_rate", "16000")])
    return {
        "v3": (V3Protocol(SessionConfig()), 3005),
        "v2": (V2Protocol(SessionConfig()), 1011),
        "deepgram": (DeepgramProtocol(session_config(dg), dg), 1011),
        "fireworks": (FireworksProtocol(SessionConfig(), FireworksOptions()), 1011),
        "openai": (RealtimeProtocol(SessionConfig()), 1011),
    }


@pytest.mark.parametrize("name", ["v3", "v2", "deepgram", "fireworks", "openai"])
def test_each_dialect_renders_the_engines_error_as_its_internal_error(name):
    dialect, code = _dialects()[name]
    out = dialect.render(Error(ErrorKind.INTERNAL, "the speech model failed; session ended"))
    assert isinstance(out[-1], Close) and out[-1].code == code
    assert dialect.error(ServerRefusal(ErrorKind.INTERNAL, "again")) == []  # already closed
    assert dialect.receive_bytes(b"\0\0" * 800) == []  # a frame the loop read meanwhile
    with pytest.raises(LocalProtocolError, match="in state CLOSED"):
        dialect.render(Error(ErrorKind.INTERNAL, "twice"))


# ------------------------------------------------------------------ the machine


class Light(Enum):
    OFF = "off"
    ON = "on"


TABLE = {
    Light.OFF: {Step.RENDER: Light.ON, Step.RECEIVE: IGNORED},
    Light.ON: {Step.END: Light.OFF},
}


def test_the_machine_follows_its_table_and_names_the_state_of_an_illegal_step():
    m = Machine("Lamp", TABLE, Light.OFF)
    assert not m.allows(Step.RECEIVE) and m.state is Light.OFF  # a documented no-op
    assert m.move(Step.RENDER) is Light.ON
    with pytest.raises(LocalProtocolError) as info:
        m.move(Step.RENDER)
    assert str(info.value) == "Lamp: tried to render an event in state ON"
    assert m.move(Step.END) is Light.OFF


# ------------------------------------------------------------------ a spent daily quota

# What each dialect says when a key's daily audio allowance is spent, beside what it says for too
# many concurrent sessions (LIMIT): never the same (clients retry the one, stop at the other).
QUOTA_CLOSES = {  # dialect: (quota close code, limit close code)
    "v3": (4002, 3009),  # Insufficient Funds / Too many concurrent sessions
    "v2": (4002, 4102),  # Insufficient Funds / too many streams
    "deepgram": (1008, 1011),  # ASR_PAYMENT_REQUIRED reason / NET-0000
    "fireworks": (1008, 1008),  # the error object's type tells them apart
    "openai": (1008, 1008),  # the error event's code tells them apart
}


@pytest.mark.parametrize("name", list(QUOTA_CLOSES))
def test_each_dialect_renders_a_spent_quota_as_its_own_quota_error(name):
    quota_close, limit_close = QUOTA_CLOSES[name]
    reason = "Daily audio limit reached: key 'k' allows 1 h of audio a day; resets at 00:00 UTC"
    quota = _dialects()[name][0].error(ServerRefusal(ErrorKind.QUOTA, reason))
    limit = _dialects()[name][0].error(ServerRefusal(ErrorKind.LIMIT, "too many"))
    assert isinstance(quota[-1], Close) and quota[-1].code == quota_close
    assert limit[-1].code == limit_close
    assert quota[:-1] != limit[:-1] or quota[-1].reason != limit[-1].reason
    said = " ".join(getattr(o, "text", "") or "" for o in quota) + quota[-1].reason
    assert "Daily audio limit" in said
    if name == "deepgram":
        assert quota[-1].reason.startswith("ASR_PAYMENT_REQUIRED Daily audio limit")
    if name == "fireworks":
        assert json.loads(quota[0].text)["error"]["type"] == "payment_required"
    if name == "openai":
        error = json.loads(quota[0].text)["error"]
        assert error["type"] == error["code"] == "insufficient_quota"
        assert quota[-1].reason == "insufficient_quota"


def test_http_quota_refusals_are_the_vendors_billing_errors():
    reason = "Daily audio limit reached"
    assert deepgram_http_error(ErrorKind.QUOTA, reason)[0] == 402
    assert deepgram_http_error(ErrorKind.QUOTA, reason)[1]["err_code"] == "ASR_PAYMENT_REQUIRED"
    status, body = fireworks_http_error(ServerRefusal(ErrorKind.QUOTA, reason))
    assert status == 402 and body["error"]["type"] == "payment_required"
    quota = OpenAIError.from_protocol(ServerRefusal(ErrorKind.QUOTA, reason))
    assert quota.status == 429 and quota.body()["type"] == quota.body()["code"]
    assert quota.body()["code"] == "insufficient_quota"
    assert quota.headers == {"x-should-retry": "false"}  # the SDK retries other 429s
    limit = OpenAIError.from_protocol(ServerRefusal(ErrorKind.LIMIT, "too many"))
    assert limit.body()["code"] == "rate_limit_exceeded" and limit.headers == {}
