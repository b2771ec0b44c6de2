"""Draft-verified greedy search against plain greedy, on a small random decoder (no model files).

`greedy_from_drafts` verifies a draft in one teacher-forced pass, keeps the longest prefix
greedy would have written, and continues greedily from the first disagreement, each row at its
own position. Whatever the draft, the tokens must be exactly plain `greedy`'s: the property
below draws drafts that are empty, wholly right, wrong at the first token, right then wrong,
longer than the output, random, or holding tokens that are not text, in batches whose rows
accept different lengths; also the length limit (n_steps) and the end-of-text check.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the torch backend needs PyTorch")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from streamscribe.engine.whisper_torch.network import Dims, TextDecoder  # noqa: E402
from streamscribe.engine.whisper_torch.search import (  # noqa: E402
    DecodeSlots,
    draft_rows,
    greedy,
    greedy_from_drafts,
    prefill,
)

VOCAB = 40
EOT = 30  # tokens >= EOT are "special": suppressed, never text (as in Whisper's vocabulary)
T_ENC = 12
DIMS = Dims(
    n_mels=8,
    n_audio_ctx=T_ENC,
    n_audio_state=32,
    n_audio_head=2,
    n_audio_layer=1,
    n_vocab=VOCAB,
    n_text_ctx=48,
    n_text_state=32,
    n_text_head=2,
    n_text_layer=2,
)
PROMPT = [31, 32, 33]  # a start sequence of special tokens


def _decoder(seed: int) -> TextDecoder:
    """Random weights scaled so that outputs vary in content and length (an untrained
    decoder at its default scale repeats one token to the limit)."""
    torch.manual_seed(seed)
    dec = TextDecoder(DIMS).eval()
    with torch.no_grad():
        dec.positions.normal_(0, 3.0)
        dec.embedding.weight.normal_(0, 0.5)
        for layer in dec.layers:
            layer.mlp.fc2.weight.mul_(8.0)
            layer.cross_out.weight.mul_(8.0)
    return dec


torch.set_num_threads(1)  # a tiny model: threads only contend (the machine has 2 cores)
DECODER = _decoder(1)
SUPPRESS = torch.zeros(VOCAB)
SUPPRESS[EOT + 1 :] = float("-inf")
BEGIN = torch.zeros(VOCAB)
BEGIN[EOT] = float("-inf")


def _slots() -> DecodeSlots:
    return DecodeSlots(DECODER, SUPPRESS, EOT, torch.float32, torch.device("cpu"), False)


def _cross(slots: DecodeSlots, n: int, seed: int):
    slot = slots.get(n, T_ENC)
    gen = torch.Generator().manual_seed(seed)
    enc = torch.randn((n, T_ENC, DIMS.n_audio_state), generator=gen)
    DECODER.set_cross(slot.view(T_ENC, n), enc)
    return slot


@torch.inference_mode()
def plain(n: int, seed: int, n_steps: int):
    slots = _slots()
    slot = _cross(slots, n, seed)
    logits = prefill(DECODER, slot, T_ENC, [PROMPT] * n)
    return greedy(slots, slot, T_ENC, logits[:, -1], len(PROMPT), n_steps, BEGIN)


@torch.inference_mode()
def drafted(drafts: list[list[int]], seed: int, n_steps: int):
    slots = _slots()
    slot = _cross(slots, len(drafts), seed)
    rows, used = draft_rows([PROMPT] * len(drafts), drafts, EOT, n_steps)
    logits = prefill(DECODER, slot, T_ENC, rows)
    return greedy_from_drafts(slots, slot, T_ENC, logits, len(PROMPT), used, n_steps, BEGIN)


def _draft(kind: str, truth: list[int], extra: list[int], cut: int) -> list[int]:
    if kind == "empty":
        return []
    if kind == "right":
        return list(truth)
    if kind == "wrong_first":
        return [(truth[0] + 1) % EOT if truth else 0, *truth[1:], *extra]
    if kind == "right_then_wrong":
        k = min(cut, len(truth))
        return [*truth[:k], *extra]
    if kind == "longer":  # the output, then more: words the new window no longer has
        return [*truth, *extra]
    if kind == "special":  # a token greedy never writes as text: the draft ends there
        return [*truth[:cut], EOT + 2, *truth[cut:]]
    return list(extra)  # random


KINDS = ["empty", "right", "wrong_first", "right_then_wrong", "longer", "special", "random"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n_steps=st.integers(1, 30),
    rows=st.lists(
        st.tuples(
            st.sampled_from(KINDS),
            st.lists(st.integers(0, EOT - 1), max_size=12),
            st.integers(0, 12),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_drafted_greedy_writes_exactly_what_plain_greedy_writes(seed, n_steps, rows) -> None:
    want = plain(len(rows), seed, n_steps)
    drafts = [
        _draft(kind, h.tokens, extra, cut) for (kind, extra, cut), h in zip(rows, want, strict=True)
    ]
    got = drafted(drafts, seed, n_steps)
    for w, g, d, (kind, _, _) in zip(want, got, drafts, rows, strict=True):
        assert g.tokens == w.tokens, (kind, d)
        assert g.cum_logprob == pytest.approx(w.cum_logprob, abs=1e-4)
        assert 0 <= g.accepted <= g.drafted <= min(len(d), n_steps - 1)
        if kind == "right" and len(w.tokens) < n_steps:
            # the whole draft accepted: one pass, or one more step if it ran past the end
            assert g.accepted == len(w.tokens) and g.passes == 1
        if kind == "wrong_first" and w.tokens:
            assert g.accepted == 0
    lengths.update(len(w.tokens) for w in want)


lengths: set[int] = set()


def test_the_outputs_above_varied_in_length() -> None:
    """The property saw outputs of several lengths, ended by the end token and by the limit."""
    assert len(lengths) >= 5, lengths


def test_a_right_draft_costs_one_pass_and_plain_greedy_stops_at_the_end_token() -> None:
    (w,) = plain(1, 2, 30)
    assert w.tokens and len(w.tokens) < 29, "pick a seed whose output ends before the limit"
    # plain greedy looks for the end token after every step on the CPU: no step past it
    assert w.passes == len(w.tokens) + 1
    (g,) = drafted([w.tokens], 2, 30)
    assert g.tokens == w.tokens and g.passes == 1 and g.accepted == len(w.tokens)
    (e,) = drafted([[]], 2, 30)
    assert e.tokens == w.tokens and e.passes == w.passes and e.accepted == 0


def test_rows_at_different_positions_decode_as_each_would_alone() -> None:
    """A batch whose rows accept 0, some and all of their drafts continues with each row at
    its own position (per-row key/value writes and masks)."""
    want = plain(3, 11, 30)
    drafts = [[], want[1].tokens[: len(want[1].tokens) // 2], want[2].tokens]
    got = drafted(drafts, 11, 30)
    assert [g.tokens for g in got] == [w.tokens for w in want]
    assert len({g.accepted for g in got}) > 1
