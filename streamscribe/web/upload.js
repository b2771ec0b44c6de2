// Upload a file for the server to transcribe: the upload's own progress (bytes sent), then the
// job's (audio seconds transcribed), then the turns, shown like live ones. The result is a
// stored session, so it can be opened in History.

import { api, PageError, unreachable } from "./api.js";
import { fromStored, renderTurn } from "./transcript.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 400;

export class Upload {
  constructor(ui, settings) {
    this.ui = ui;
    this.settings = settings;
    this.sessionId = null;
    $("upload-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.start();
    });
    $("open-upload").addEventListener("click", () => this.ui.openInHistory(this.sessionId));
  }

  status(text, progress = null) {
    $("upload-status").textContent = text;
    const bar = $("upload-progress");
    bar.hidden = progress === null;
    if (progress !== null) bar.value = progress;
  }

  async start() {
    const file = $("upload-file").files[0];
    if (!file) return;
    this.ui.clearError();
    $("upload-saved").hidden = true;
    $("upload-turns").replaceChildren();
    $("upload-start").disabled = true;
    try {
      const job = await this.send(file);
      await this.follow(job);
    } catch (error) {
      this.status("The file was not transcribed.");
      this.ui.showError(error);
    } finally {
      $("upload-start").disabled = false;
    }
  }

  /** POST the file with XMLHttpRequest (fetch cannot report upload progress). */
  send(file) {
    const settings = this.settings();
    const form = new FormData();
    form.append("file", file, file.name);
    if (settings.language) form.append("language", settings.language);
    if (settings.model) form.append("speech_model", settings.model);
    if (settings.keyterms.length) form.append("keyterms", settings.keyterms.join("\n"));
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/v1/transcripts");
      if (api.key) xhr.setRequestHeader("Authorization", api.key);
      xhr.responseType = "json";
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable) this.status(`Uploading ${file.name}: ${Math.round((100 * e.loaded) / e.total)}%`, (0.1 * e.loaded) / e.total);
      };
      xhr.onerror = () => reject(unreachable());
      xhr.onload = () => {
        if (xhr.status === 202) return resolve(xhr.response);
        const detail = xhr.response?.detail || `the server answered ${xhr.status}`;
        if (xhr.status === 401) return reject(new PageError(api.key ? "The server refused this API key." : "This server needs an API key.", "Enter a valid key in Settings. Create one on the server with `streamscribe keys create NAME`."));
        reject(new PageError(`The upload was refused: ${detail}`, xhr.status === 503 ? "Wait a minute and try again." : ""));
      };
      this.status(`Uploading ${file.name}…`, 0);
      xhr.send(form);
    });
  }

  async follow(job) {
    this.sessionId = job.session_id;
    for (;;) {
      if (job.status === "error") throw new PageError(`The server could not transcribe ${job.filename}.`, job.error);
      if (job.status === "done") break;
      if (job.status === "transcribing") {
        const pct = Math.round(job.progress * 100);
        this.status(`Transcribing ${job.filename}: ${pct}% (${Math.round(job.done_seconds)} of ${Math.round(job.audio_seconds)} s)`, 0.1 + 0.9 * job.progress);
      } else {
        this.status(`Reading ${job.filename}…`, 0.1);
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
      job = await api.json(`/v1/transcripts/${job.id}`);
    }
    const turns = $("upload-turns");
    job.turns.forEach((t, i) => renderTurn(turns, fromStored(t, i)));
    this.status(`Done: ${job.filename}, ${Math.round(job.audio_seconds)} s of audio, ${job.turns.length} turn${job.turns.length === 1 ? "" : "s"}.`, 1);
    $("upload-saved").hidden = false;
  }
}
