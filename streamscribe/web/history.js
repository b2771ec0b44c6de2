// History: the server's stored sessions, searchable by text; one opened shows its turns with the
// recording player. Clicking a word (or a turn's time) seeks the audio there; the word being
// played is highlighted. Exports (txt, srt, vtt, json) and Delete go through the REST API.

import { api } from "./api.js";
import { clock, fromStored, renderTurn } from "./transcript.js";

const PAGE = 30;
const $ = (id) => document.getElementById(id);

export class History {
  constructor(ui) {
    this.ui = ui;
    this.offset = 0;
    this.current = null;
    this.recordingUrl = null;
    this.searchTimer = null;
    this.highlighted = null;
    this.player = $("player");
    $("history-search").addEventListener("input", () => {
      clearTimeout(this.searchTimer);
      this.searchTimer = setTimeout(() => this.load(), 250);
    });
    $("history-more").addEventListener("click", () => this.load(true));
    $("detail-turns").addEventListener("click", (event) => this.seekFrom(event.target));
    for (const button of document.querySelectorAll("[data-export]")) {
      button.addEventListener("click", () => this.export(button.dataset.export));
    }
    $("delete").addEventListener("click", () => this.confirmDelete(true));
    $("delete-no").addEventListener("click", () => this.confirmDelete(false));
    $("delete-yes").addEventListener("click", () => this.remove());
    const follow = () => {
      this.highlight();
      if (!this.player.paused) requestAnimationFrame(follow);
    };
    this.player.addEventListener("play", () => requestAnimationFrame(follow));
    this.player.addEventListener("seeked", () => this.highlight());
    this.player.addEventListener("timeupdate", () => this.highlight());
  }

  /** (Re)load the list; `more` appends the next page. */
  async load(more = false) {
    const q = $("history-search").value.trim();
    this.offset = more ? this.offset + PAGE : 0;
    const params = new URLSearchParams({ limit: PAGE, offset: this.offset });
    if (q) params.set("q", q);
    let page;
    try {
      page = await api.json(`/v1/sessions?${params}`);
    } catch (error) {
      this.ui.showError(error);
      return;
    }
    const list = $("history-items");
    if (!more) list.replaceChildren();
    for (const session of page.sessions) list.append(this.item(session));
    const shown = list.children.length;
    $("history-count").textContent = page.total
      ? `${page.total} session${page.total === 1 ? "" : "s"}${q ? ` containing “${q}”` : ""}${shown < page.total ? `, ${shown} shown` : ""}`
      : q
        ? `No session contains “${q}”.`
        : "No sessions yet: record or upload something.";
    $("history-more").hidden = shown >= page.total;
  }

  item(session) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.session = session.id;
    const title = document.createElement("span");
    title.className = "item-title";
    title.textContent = titleOf(session);
    const meta = document.createElement("span");
    meta.className = "item-meta";
    meta.textContent = metaOf(session);
    button.append(title, meta);
    button.addEventListener("click", () => this.open(session.id));
    if (this.current?.id === session.id) button.setAttribute("aria-current", "true");
    li.append(button);
    return li;
  }

  async open(id) {
    let session;
    try {
      session = await api.json(`/v1/sessions/${encodeURIComponent(id)}`);
    } catch (error) {
      this.ui.showError(error);
      return;
    }
    this.current = session;
    for (const b of document.querySelectorAll("#history-items button")) {
      if (b.dataset.session === id) b.setAttribute("aria-current", "true");
      else b.removeAttribute("aria-current");
    }
    $("history-detail").hidden = false;
    $("detail-title").textContent = titleOf(session);
    $("detail-meta").textContent = metaOf(session);
    this.confirmDelete(false);
    const turns = $("detail-turns");
    turns.replaceChildren();
    session.turns.forEach((t, i) => renderTurn(turns, fromStored(t, i), { seekable: true }));
    if (!session.turns.length) turns.textContent = "This session has no words.";
    await this.loadRecording(session);
    $("detail-title").focus();
  }

  async loadRecording(session) {
    this.player.pause();
    if (this.recordingUrl) URL.revokeObjectURL(this.recordingUrl);
    this.recordingUrl = null;
    this.player.removeAttribute("src");
    this.player.hidden = true;
    const note = $("player-note");
    note.hidden = true;
    if (!session.has_recording) {
      note.textContent = "No recording was kept for this session (recording was off).";
      note.hidden = false;
      return;
    }
    try {
      // fetched with the key (an <audio src> cannot send it), played from memory
      const blob = await (await api.request(`/v1/sessions/${session.id}/recording.wav`)).blob();
      if (this.current?.id !== session.id) return;
      this.recordingUrl = URL.createObjectURL(blob);
      this.player.src = this.recordingUrl;
      this.player.hidden = false;
    } catch (error) {
      note.textContent = `The recording could not be loaded: ${error.title || error.message}`;
      note.hidden = false;
    }
  }

  seekFrom(target) {
    const el = target.closest?.("[data-seek], .w");
    if (!el || this.player.hidden) return;
    const ms = Number(el.dataset.seek ?? el.dataset.start);
    if (!Number.isFinite(ms)) return;
    this.player.currentTime = ms / 1000;
    this.player.play().catch(() => {});
    this.highlight();
  }

  highlight() {
    const ms = this.player.currentTime * 1000;
    let found = null;
    for (const w of document.querySelectorAll("#detail-turns .w")) {
      if (Number(w.dataset.start) <= ms && ms < Number(w.dataset.end)) {
        found = w;
        break;
      }
    }
    if (found === this.highlighted) return;
    this.highlighted?.classList.remove("playing");
    this.highlighted?.removeAttribute("aria-current");
    this.highlighted = found;
    if (found) {
      found.classList.add("playing");
      found.setAttribute("aria-current", "true");
      if (!this.player.paused) found.scrollIntoView({ block: "nearest" });
    }
  }

  async export(format) {
    if (!this.current) return;
    try {
      const response = await api.request(`/v1/sessions/${this.current.id}/transcript.${format}`);
      const url = URL.createObjectURL(await response.blob());
      const a = document.createElement("a");
      a.href = url;
      a.download = `${this.current.id}.${format}`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (error) {
      this.ui.showError(error);
    }
  }

  confirmDelete(asking) {
    $("delete").hidden = asking;
    $("delete-confirm").hidden = !asking;
    if (asking) $("delete-no").focus();
  }

  async remove() {
    if (!this.current) return;
    try {
      await api.request(`/v1/sessions/${this.current.id}`, { method: "DELETE" });
    } catch (error) {
      this.ui.showError(error);
      return;
    }
    this.player.pause();
    this.current = null;
    $("history-detail").hidden = true;
    await this.load();
  }
}

function titleOf(session) {
  const when = new Date(session.started).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  if (session.protocol === "upload") return `${session.params?.filename || "Upload"} · ${when}`;
  return `Live session · ${when}`;
}

function metaOf(session) {
  const parts = [clock(session.audio_seconds * 1000), `${session.turn_count} turn${session.turn_count === 1 ? "" : "s"}`];
  if (!session.ended) parts.push("still live");
  else if (session.end_reason && session.end_reason !== "terminated") parts.push(`ended: ${session.end_reason.replace("_", " ")}`);
  if (!session.has_recording) parts.push("no recording");
  return parts.join(" · ");
}
