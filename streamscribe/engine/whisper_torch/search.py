"""Greedy decoding and beam search over the static-cache decoder, with CUDA graphs on a GPU.

Eager PyTorch spends ~5 ms per token launching a small decoder's ~100 kernels, far more than the
GPU needs to run them. On CUDA one decoding step (embedding, layers, suppression, log-softmax,
argmax, bookkeeping) is captured once per batch-size bucket and encoder length, then replayed:
one launch per token. Batches are padded up to the bucket (padded rows start finished). On the
CPU the very same step functions run eagerly, so both paths decode identically.

The search rules are CTranslate2's, so results match the other backend: tokens in `suppress`
are never emitted, `suppress_begin` not as the first token; greedy scores sum the log
probabilities including the end token; beam search keeps `2 * beam` candidates per step, moves
finished hypotheses out, stops after `beam` of them and ranks by score / length.

Draft-verified greedy (`greedy_from_drafts`, eager steps): a draft of expected tokens is run
through the decoder with the prompt in one teacher-forced pass; the longest prefix whose every
token is the argmax before it is what greedy would write, so it is kept and greedy continues from
the first disagreement, each row of a batch at its own position. Same tokens, fewer passes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from streamscribe.engine.whisper_torch.network import KVCache, TextDecoder

log = logging.getLogger(__name__)

__all__ = [
    "BUCKETS",
    "DecodeSlots",
    "Hypothesis",
    "beam_search",
    "draft_rows",
    "greedy",
    "greedy_from_drafts",
    "prefill",
]

BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# greedy on a GPU: look whether every row has finished every this many tokens (each look waits
# for the device); on the CPU looking costs nothing, so it looks after every token
CHECK_EVERY = 8


@dataclass
class Hypothesis:
    tokens: list[int]  # without the end token
    cum_logprob: float  # including the end token's, when it was emitted
    score: float  # cum_logprob / len(tokens) (CTranslate2's normalised score)
    drafted: int = 0  # draft tokens verified (greedy_from_drafts)
    accepted: int = 0  # ... of which the model would have written the same
    passes: int = 0  # decoder passes this row took part in (prefill/verification included)


def bucket_for(n: int) -> int:
    for b in BUCKETS:
        if b >= n:
            return b
    return n


class Slot:
    """Static buffers for `rows` decoding rows: KV cache, search state, captured graphs."""

    def __init__(
        self, decoder: TextDecoder, rows: int, cross_len: int, dtype: torch.dtype, device
    ) -> None:
        dims = decoder.dims
        h, hd = dims.n_text_head, dims.n_text_state // dims.n_text_head
        n, ctx = dims.n_text_layer, dims.n_text_ctx
        z = dict(device=device, dtype=dtype)
        self.rows = rows
        self.cache = KVCache(
            torch.zeros((n, rows, h, ctx, hd), **z),
            torch.zeros((n, rows, h, ctx, hd), **z),
            torch.zeros((n, rows, h, cross_len, hd), **z),
            torch.zeros((n, rows, h, cross_len, hd), **z),
        )
        long = dict(device=device, dtype=torch.long)
        self.cur = torch.zeros(rows, **long)
        self.pos = torch.zeros(1, **long)
        self.step_i = torch.zeros(1, **long)
        self.finished = torch.zeros(rows, device=device, dtype=torch.bool)
        self.sum_lp = torch.zeros(rows, device=device, dtype=torch.float32)
        self.out = torch.zeros((rows, ctx), **long)
        self.logits = torch.zeros((rows, dims.n_vocab), device=device, dtype=torch.float32)
        self.greedy_graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.step_graphs: dict[int, torch.cuda.CUDAGraph] = {}

    def view(self, cross_len: int, rows: int | None = None) -> KVCache:
        r = self.rows if rows is None else rows
        c = self.cache
        return KVCache(
            c.self_k[:, :r],
            c.self_v[:, :r],
            c.cross_k[:, :r, :, :cross_len],
            c.cross_v[:, :r, :, :cross_len],
        )


def _greedy_body(
    decoder: TextDecoder,
    slot: Slot,
    cache: KVCache,
    suppress: torch.Tensor,
    eot: torch.Tensor,
    length: int | None = None,
) -> None:
    logits = decoder.step(slot.cur, slot.pos, cache, length)
    lp = torch.log_softmax(logits + suppress, dim=-1)
    nxt = torch.where(slot.finished, eot, lp.argmax(dim=-1))
    tok_lp = lp.gather(1, nxt[:, None])[:, 0]
    slot.sum_lp.add_(torch.where(slot.finished, torch.zeros_like(tok_lp), tok_lp))
    slot.finished.logical_or_(nxt == eot)
    slot.out.index_copy_(1, slot.step_i, nxt[:, None])
    slot.cur.copy_(nxt)
    slot.pos.add_(1)
    slot.step_i.add_(1)


def _step_body(decoder: TextDecoder, slot: Slot, cache: KVCache, length: int | None = None) -> None:
    slot.logits.copy_(decoder.step(slot.cur, slot.pos, cache, length))


class DecodeSlots:
    """Hands out decoding slots and runs their steps.

    Static shapes (always with CUDA graphs): one cached slot per batch bucket, its cross buffers
    sized for the longest encoder output, every step attending over the whole masked cache;
    with graphs each (bucket, encoder length) step is captured once and replayed. Without
    (the CPU default): a fresh exact-size slot per call, steps read only the filled cache.
    `static_shapes` on a CPU runs the very bodies a GPU captures, eagerly: how their logic is
    tested where no GPU is."""

    def __init__(
        self,
        decoder: TextDecoder,
        suppress: torch.Tensor,
        eot: int,
        dtype: torch.dtype,
        device: torch.device,
        use_graphs: bool,
        static_shapes: bool = False,
    ) -> None:
        self.decoder = decoder
        self.suppress = suppress
        self.eot = torch.tensor(eot, device=device)
        self.dtype = dtype
        self.device = device
        self.use_graphs = use_graphs and device.type == "cuda"
        if use_graphs and not self.use_graphs:
            log.info("CUDA graphs need a CUDA device; decoding steps run eagerly on %s", device)
        self.static = self.use_graphs or static_shapes
        self._slots: dict[int, Slot] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self.captured = 0

    def rows_for(self, n: int) -> int:
        return bucket_for(n) if self.static else n

    def get(self, rows: int, cross_len: int) -> Slot:
        if not self.static:
            return Slot(self.decoder, rows, cross_len, self.dtype, self.device)
        rows = bucket_for(rows)
        if rows not in self._slots:
            ctx = self.decoder.dims.n_audio_ctx
            self._slots[rows] = Slot(self.decoder, rows, ctx, self.dtype, self.device)
        return self._slots[rows]

    def release(self) -> None:
        self._slots.clear()
        self.captured = 0

    def run_greedy_step(self, slot: Slot, cross_len: int, pos: int) -> None:
        """One greedy step writing position `pos` (slot.pos holds the same on the device)."""
        cache = slot.view(cross_len)
        if not self.use_graphs:
            length = None if self.static else pos + 1
            _greedy_body(self.decoder, slot, cache, self.suppress, self.eot, length)
            return
        graph = slot.greedy_graphs.get(cross_len)
        if graph is None:
            graph = self._capture(
                lambda: _greedy_body(self.decoder, slot, cache, self.suppress, self.eot), slot
            )
            slot.greedy_graphs[cross_len] = graph
        graph.replay()

    def run_step(self, slot: Slot, cross_len: int, pos: int) -> None:
        cache = slot.view(cross_len)
        if not self.use_graphs:
            _step_body(self.decoder, slot, cache, None if self.static else pos + 1)
            return
        graph = slot.step_graphs.get(cross_len)
        if graph is None:
            graph = self._capture(lambda: _step_body(self.decoder, slot, cache), slot)
            slot.step_graphs[cross_len] = graph
        graph.replay()

    def _capture(self, body, slot: Slot) -> torch.cuda.CUDAGraph:
        # warm up on a side stream (lazy kernel initialisation must not happen in capture);
        # the bodies mutate the slot's state, which every decode resets before use
        saved = [t.clone() for t in (slot.cur, slot.pos, slot.step_i, slot.finished, slot.sum_lp)]
        slot.pos.zero_()
        slot.step_i.zero_()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                body()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            body()
        for t, s in zip(
            (slot.cur, slot.pos, slot.step_i, slot.finished, slot.sum_lp), saved, strict=True
        ):
            t.copy_(s)
        self.captured += 1
        return graph


def prefill(
    decoder: TextDecoder, slot: Slot, cross_len: int, prompts: list[list[int]]
) -> torch.Tensor:
    """Run equal-length prompts through the first len(prompts) rows; logits (n, P, V)."""
    tokens = torch.tensor(prompts, device=slot.cur.device)
    return decoder.prefill(tokens, slot.view(cross_len, len(prompts)))


def greedy(
    slots: DecodeSlots,
    slot: Slot,
    cross_len: int,
    last_logits: torch.Tensor,
    prompt_len: int,
    n_steps: int,
    suppress_begin: torch.Tensor,
) -> list[Hypothesis]:
    """Greedy search for the n rows whose prompt logits (n, V) are given; at most n_steps
    tokens per row (the end token included)."""
    n = last_logits.shape[0]
    eot = int(slots.eot)
    lp = torch.log_softmax(last_logits + slots.suppress + suppress_begin, dim=-1)
    first = lp.argmax(dim=-1)
    slot.cur.fill_(eot)
    slot.cur[:n] = first
    slot.finished.fill_(True)
    slot.finished[:n] = first == eot
    slot.sum_lp.zero_()
    slot.sum_lp[:n] = lp.gather(1, first[:, None])[:, 0]
    slot.out[:, 0] = slot.cur
    slot.pos.fill_(prompt_len)
    slot.step_i.fill_(1)
    check = 1 if slots.device.type == "cpu" else CHECK_EVERY
    done = 1
    while done < n_steps:
        if done % check == 0 and bool(slot.finished[:n].all()):
            break
        slots.run_greedy_step(slot, cross_len, prompt_len + done - 1)
        done += 1
    out = slot.out[:n, :done].tolist()
    sums = slot.sum_lp[:n].tolist()
    hyps = []
    for row, cum in zip(out, sums, strict=True):
        tokens = row[: row.index(eot)] if eot in row else row
        score = cum / len(tokens) if tokens else float("-inf")
        hyps.append(Hypothesis(tokens, cum, score, passes=done))  # the prefill + done - 1 steps
    return hyps


def draft_rows(
    prompts: list[list[int]], drafts: list[list[int]], eot: int, n_steps: int
) -> tuple[list[list[int]], list[list[int]]]:
    """The verification pass's input: each prompt followed by its draft, padded to one width
    (with `eot`; causal attention keeps padding from the positions before it), and the drafts
    as used: text tokens only (cut at the first token that is not), at most n_steps - 1 (the
    pass then predicts at most n_steps tokens, greedy's limit)."""
    used = []
    for d in drafts:
        cut = next((k for k, t in enumerate(d) if not 0 <= t < eot), len(d))
        used.append(list(d[: min(cut, n_steps - 1)]))
    width = max(len(d) for d in used)
    rows = [p + d + [eot] * (width - len(d)) for p, d in zip(prompts, used, strict=True)]
    return rows, used


def greedy_from_drafts(
    slots: DecodeSlots,
    slot: Slot,
    cross_len: int,
    logits: torch.Tensor,
    prompt_len: int,
    drafts: list[list[int]],
    n_steps: int,
    suppress_begin: torch.Tensor,
) -> list[Hypothesis]:
    """Greedy search that starts from a verified draft: the same tokens `greedy` writes, fewer
    decoder passes when the draft is right.

    `logits` (n, P + W, V) are the verification pass's over `draft_rows` (prompt, draft,
    padding), whose keys/values fill the slot's first n rows. The logits at the prompt's last
    position and at each draft token are greedy's predictions given the draft before them:
    every draft token that equals the prediction before it is what greedy would have written,
    so the longest such prefix is accepted, and the prediction after it (the first
    disagreement, or the token after a draft wholly right) is greedy's next token. Greedy then
    continues from there, each row at its own position (rows accept different lengths); the
    end token is looked for after every step. Eager steps only (not the CUDA-graph path)."""
    n = len(drafts)
    eot = int(slots.eot)
    decoder = slots.decoder
    width = max(len(d) for d in drafts)
    ver = logits[:n, prompt_len - 1 : prompt_len + width]  # predictions of tokens 0 .. width
    first = torch.log_softmax(ver[:, 0] + slots.suppress + suppress_begin, dim=-1)
    lp = torch.log_softmax(ver + slots.suppress, dim=-1)
    lp[:, 0] = first
    pred = lp.argmax(dim=-1)
    pred_lp = lp.gather(-1, pred[..., None])[..., 0]
    pred_l, pred_lp_l = pred.tolist(), pred_lp.tolist()

    tokens: list[list[int]] = []
    sums: list[float] = []
    accepted: list[int] = []
    active: list[int] = []
    for i, d in enumerate(drafts):
        a = 0
        while a < len(d) and pred_l[i][a] == d[a]:
            a += 1
        accepted.append(a)
        out = pred_l[i][: a + 1]  # the accepted draft and greedy's next token
        sums.append(sum(pred_lp_l[i][: a + 1]))
        tokens.append(out)
        if out[-1] != eot and len(out) < n_steps:
            active.append(i)
    passes = [1] * n
    # row i's next token (its last one) goes in at position prompt_len + len(tokens[i]) - 1
    cache = slot.view(cross_len, n)
    while active:
        cur = torch.tensor([tokens[i][-1] for i in range(n)], device=logits.device)
        # finished rows idle at their last position (what they compute is not used)
        last = slot.cache.self_k.shape[3] - 1
        positions = [min(last, prompt_len + len(t) - 1) for t in tokens]
        if len(set(positions)) == 1:
            pos = torch.tensor([positions[0]], device=logits.device)
            step_logits = decoder.step(cur, pos, cache, positions[0] + 1)
        else:
            pos = torch.tensor(positions, device=logits.device)
            step_logits = decoder.step_rows(cur, pos, cache, max(positions) + 1)
        step_lp = torch.log_softmax(step_logits + slots.suppress, dim=-1)
        nxt = step_lp.argmax(dim=-1)
        nxt_lp = step_lp.gather(1, nxt[:, None])[:, 0]
        nxt_l, nxt_lp_l = nxt.tolist(), nxt_lp.tolist()
        still = []
        for i in active:
            tokens[i].append(nxt_l[i])
            sums[i] += nxt_lp_l[i]
            passes[i] += 1
            if nxt_l[i] != eot and len(tokens[i]) < n_steps:
                still.append(i)
        active = still
    hyps = []
    for i in range(n):
        row = tokens[i]
        text = row[: row.index(eot)] if eot in row else row
        score = sums[i] / len(text) if text else float("-inf")
        hyps.append(Hypothesis(text, sums[i], score, len(drafts[i]), accepted[i], passes[i]))
    return hyps


def beam_search(
    slots: DecodeSlots,
    slot: Slot,
    cross_len: int,
    last_logits: torch.Tensor,
    prompt_len: int,
    n_steps: int,
    suppress_begin: torch.Tensor,
    beam: int,
) -> list[Hypothesis]:
    """Beam search for items whose rows are item*beam .. item*beam+beam-1 (each with the same
    prompt already run); `last_logits` (items*beam, V). Returns the best hypothesis per item."""
    eot = int(slots.eot)
    rows = last_logits.shape[0]
    items = rows // beam
    cand = 2 * beam
    vocab = last_logits.shape[-1]
    device = last_logits.device
    scores = torch.full((items, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0  # every beam of an item is the same at first: expand only one
    alive: list[list[list[int]]] = [[[] for _ in range(beam)] for _ in range(items)]
    finished: list[list[Hypothesis]] = [[] for _ in range(items)]
    done = [False] * items
    logits = last_logits
    begin = suppress_begin
    pos = prompt_len  # where the next step writes
    for step in range(n_steps):
        lp = torch.log_softmax(logits.float() + slots.suppress + begin, dim=-1)
        total = (lp.view(items, beam, vocab) + scores[..., None]).view(items, -1)
        top_s, top_i = total.topk(cand, dim=-1)
        top_s_l, top_i_l = top_s.tolist(), top_i.tolist()
        last = step + 1 == n_steps
        new_scores = torch.full((items, beam), float("-inf"))
        order = list(range(slot.rows))
        next_tokens = [eot] * slot.rows
        for b in range(items):
            if done[b]:
                continue
            chosen = []
            spare = beam
            for k in range(beam):
                origin, token = divmod(top_i_l[b][k], vocab)
                pick = k
                if token == eot or last:
                    seq = alive[b][origin] + ([] if token == eot else [token])
                    cum = top_s_l[b][k]
                    finished[b].append(
                        Hypothesis(seq, cum, cum / len(seq) if seq else float("-inf"))
                    )
                    for j in range(spare, cand):
                        if top_i_l[b][j] % vocab != eot:
                            pick, spare = j, j + 1
                            break
                chosen.append(pick)
            nxt_alive = []
            for k, j in enumerate(chosen):
                origin, token = divmod(top_i_l[b][j], vocab)
                nxt_alive.append(alive[b][origin] + [token])
                new_scores[b, k] = top_s_l[b][j]
                order[b * beam + k] = b * beam + origin
                next_tokens[b * beam + k] = token
            alive[b] = nxt_alive
            if last or len(finished[b]) >= beam:
                done[b] = True
        if all(done):
            break
        scores = new_scores.to(device)
        slot.cache.reorder(torch.tensor(order, device=device), pos)
        slot.cur.copy_(torch.tensor(next_tokens, device=device))
        slot.pos.fill_(pos)
        slots.run_step(slot, cross_len, pos)
        logits = slot.logits[:rows]
        begin = 0.0
        pos += 1
    best = []
    for hyps in finished:
        best.append(max(hyps, key=lambda h: h.score) if hyps else Hypothesis([], 0.0, 0.0))
    return best
