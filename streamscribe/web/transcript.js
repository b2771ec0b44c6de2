// Rendering turns: one block per turn with its start time, speaker and language when known;
// tentative words look different from final ones. Live v3 Turn messages and stored turns
// (from /v1/sessions/{id} or an upload job) are both normalised to one shape first.

/** 75_500 ms -> "1:15", 3_725_000 -> "1:02:05". */
export function clock(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** A live v3 `Turn` message as a view turn. */
export function fromMessage(message) {
  return {
    order: message.turn_order,
    words: (message.words || []).map((w) => ({
      text: w.text,
      start: w.start,
      end: w.end,
      final: Boolean(w.word_is_final),
    })),
    ended: Boolean(message.end_of_turn),
    formatted: Boolean(message.turn_is_formatted),
    speaker: message.speaker_label || null,
    language: message.language_code || null,
    translation: message.translation ?? null,
  };
}

/** A stored turn (REST) as a view turn: every word final. */
export function fromStored(turn, index) {
  const words = (turn.words || []).map((w) => ({
    text: w.text,
    start: w.start,
    end: w.end,
    final: true,
  }));
  if (!words.length && turn.text) {
    words.push({ text: turn.text, start: turn.start_ms, end: turn.end_ms, final: true });
  }
  return {
    order: turn.turn_order ?? index,
    key: `${turn.channel ?? 0}:${turn.turn_order ?? index}`,
    words,
    ended: true,
    formatted: true,
    speaker: turn.speaker || null,
    language: turn.language || null,
    translation: turn.translation ?? null,
    start: turn.start_ms,
  };
}

/** Create or update the block of `turn` inside `container`. Returns the block. */
export function renderTurn(container, turn, { seekable = false } = {}) {
  const key = turn.key ?? String(turn.order);
  let block = container.querySelector(`[data-turn="${CSS.escape(key)}"]`);
  if (!block) {
    block = document.createElement("article");
    block.className = "turn";
    block.dataset.turn = key;
    block.innerHTML = '<div class="turn-head"></div><p class="words"></p>';
    container.append(block);
  }
  block.classList.toggle("final", turn.ended);
  const start = turn.start ?? turn.words[0]?.start;
  if (start !== undefined) block.dataset.start = String(start);
  const head = block.querySelector(".turn-head");
  head.replaceChildren();
  if (start !== undefined) {
    if (seekable) {
      const seek = document.createElement("button");
      seek.type = "button";
      seek.className = "seek secondary";
      seek.dataset.seek = String(start);
      seek.textContent = clock(start);
      seek.setAttribute("aria-label", `Play from ${clock(start)}`);
      head.append(seek);
    } else {
      const time = document.createElement("time");
      time.textContent = clock(start);
      head.append(time);
    }
  }
  if (turn.speaker) {
    head.append(tag(`Speaker ${turn.speaker}`, "speaker"));
    block.dataset.speaker = speakerColour(turn.speaker);
  }
  if (turn.language) head.append(tag(turn.language, "language"));
  if (!turn.ended) head.append(tag("speaking…", "state"));

  const words = block.querySelector(".words");
  words.replaceChildren();
  turn.words.forEach((w, i) => {
    if (i) words.append(" ");
    const span = document.createElement("span");
    span.className = `w ${w.final ? "final" : "tentative"}`;
    span.textContent = w.text;
    span.dataset.start = String(w.start);
    span.dataset.end = String(w.end);
    words.append(span);
  });
  let translation = block.querySelector(".translation");
  if (turn.translation) {
    if (!translation) {
      translation = document.createElement("p");
      translation.className = "translation";
      translation.lang = "en";
      block.append(translation);
    }
    translation.textContent = turn.translation;
  } else if (translation) {
    translation.remove();
  }
  return block;
}

/** One of eight colours per speaker label ("A" -> 0, "B" -> 1, ...), stable for a label. */
export function speakerColour(label) {
  let n = 0;
  for (const ch of String(label)) n = n * 26 + (ch.charCodeAt(0) - 64);
  return String(((n - 1) % 8 + 8) % 8);
}

function tag(text, kind) {
  const span = document.createElement("span");
  span.className = `tag ${kind}`;
  span.textContent = text;
  return span;
}

/** The text of every turn in `container`, one line per turn. */
export function textOf(container) {
  return [...container.querySelectorAll(".turn .words")].map((p) => p.textContent).join("\n");
}
