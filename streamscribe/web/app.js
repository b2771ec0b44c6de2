// The dashboard's entry point: server info, settings (kept per browser), tabs, the live view,
// and the error box every part reports to. Upload and History live in their own modules.

import { api, PageError } from "./api.js";
import { History } from "./history.js";
import { LiveSession } from "./recorder.js";
import { clock, fromMessage, renderTurn } from "./transcript.js";
import { Upload } from "./upload.js";

const $ = (id) => document.getElementById(id);
const SETTINGS_STORE = "streamscribe.settings";
const DEFAULTS = {
  model: "", language: "", silence: 1280, keyterms: [], speakers: false, translate: false,
};
const LANGUAGES = {
  en: "English", es: "Spanish", fr: "French", de: "German", it: "Italian", pt: "Portuguese",
  nl: "Dutch", pl: "Polish", sv: "Swedish", tr: "Turkish", ru: "Russian", uk: "Ukrainian",
  ar: "Arabic", hi: "Hindi", ja: "Japanese", ko: "Korean", zh: "Chinese",
};

// ------------------------------------------------------------------ settings

function loadSettings() {
  try {
    return { ...DEFAULTS, ...JSON.parse(localStorage.getItem(SETTINGS_STORE) || "{}") };
  } catch {
    return { ...DEFAULTS };
  }
}

let settings = loadSettings();

/** The v3 query parameters the settings ask for. */
function streamParams() {
  const params = { format_turns: "true" };
  if (settings.speakers) params.speaker_labels = "true";
  if (settings.translate) params.translate = "true";
  if (settings.model) params.speech_model = settings.model;
  if (settings.language === "auto") params.language_detection = "true";
  else if (settings.language) {
    params.language_code = settings.language;
    if (settings.language !== "en") params.language_detection = "true";
  }
  const silence = Number(settings.silence) || DEFAULTS.silence;
  params.max_turn_silence = String(silence);
  params.min_turn_silence = String(Math.min(400, silence));
  if (settings.keyterms.length) params.keyterms_prompt = JSON.stringify(settings.keyterms);
  return params;
}

function fillSettings(note = "") {
  $("settings-note").textContent = note;
  $("settings-note").hidden = !note;
  $("key-field").hidden = api.info?.auth !== "key";
  $("set-key").value = api.key;
  const models = $("set-model");
  models.replaceChildren(new Option(`Server default (${api.info?.model ?? "…"})`, ""));
  for (const name of api.info?.models || []) {
    if (name !== api.info.model) models.append(new Option(name, name));
  }
  models.value = settings.model;
  const languages = $("set-language");
  languages.replaceChildren(new Option("Server default", ""));
  if (api.info?.multilingual) languages.append(new Option("Detect automatically", "auto"));
  for (const [code, name] of Object.entries(LANGUAGES)) {
    if (code === "en" || api.info?.multilingual) languages.append(new Option(name, code));
  }
  languages.value = settings.language;
  $("set-silence").value = settings.silence;
  $("set-keyterms").value = settings.keyterms.join("\n");
  $("set-speakers").checked = Boolean(settings.speakers);
  $("set-translate").checked = Boolean(settings.translate);
  $("set-translate").disabled = !api.info?.multilingual;
}

function openSettings(note = "") {
  fillSettings(note);
  $("settings").showModal();
  (note && api.info?.auth === "key" ? $("set-key") : $("set-model")).focus();
}

function saveSettings() {
  const silence = Math.round(Number($("set-silence").value));
  settings = {
    model: $("set-model").value,
    language: $("set-language").value,
    silence: Number.isFinite(silence) && silence >= 200 ? Math.min(silence, 10000) : DEFAULTS.silence,
    speakers: $("set-speakers").checked,
    translate: $("set-translate").checked && !$("set-translate").disabled,
    keyterms: $("set-keyterms").value.split("\n").map((t) => t.trim()).filter(Boolean).slice(0, 100),
  };
  localStorage.setItem(SETTINGS_STORE, JSON.stringify(settings));
  if (api.info?.auth === "key") api.setKey($("set-key").value);
  showServer();
  clearError();
  if (selectedTab() === "history") historyView.load();
}

// ------------------------------------------------------------------ errors and tabs

export function showError(error) {
  const title = error instanceof PageError ? error.title : error?.message || String(error);
  $("error").querySelector(".error-title").textContent = title;
  $("error").querySelector(".error-fix").textContent = error instanceof PageError ? error.fix : "";
  $("error").hidden = false;
}

export function clearError() {
  $("error").hidden = true;
}

const tabs = [...document.querySelectorAll('[role="tab"]')];

function selectedTab() {
  return tabs.find((t) => t.getAttribute("aria-selected") === "true").id.replace("tab-", "");
}

function selectTab(name, focus = false) {
  for (const tab of tabs) {
    const on = tab.id === `tab-${name}`;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !on;
    if (on && focus) tab.focus();
  }
  if (name === "history") historyView.load();
}

for (const tab of tabs) {
  tab.addEventListener("click", () => selectTab(tab.id.replace("tab-", "")));
  tab.addEventListener("keydown", (event) => {
    const i = tabs.indexOf(tab);
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[event.key];
    if (next === undefined) return;
    event.preventDefault();
    selectTab(tabs[(next + tabs.length) % tabs.length].id.replace("tab-", ""), true);
  });
}

// ------------------------------------------------------------------ live view

class Live {
  constructor() {
    this.session = null;
    this.started = 0;
    this.clockTimer = null;
    $("record").addEventListener("click", () => (this.session ? this.stop() : this.start()));
    $("open-saved").addEventListener("click", () => ui.openInHistory(this.savedId));
  }

  status(text) {
    $("live-status").textContent = text;
  }

  button(recording, disabled = false) {
    const button = $("record");
    button.setAttribute("aria-pressed", String(recording));
    button.textContent = recording ? "Stop" : "Record";
    button.disabled = disabled;
  }

  async start() {
    clearError();
    if (api.needsKey) {
      openSettings("This server needs an API key: paste it below (it stays in this browser).");
      return;
    }
    $("live-turns").replaceChildren();
    $("live-saved").hidden = true;
    $("latency").textContent = "–";
    this.button(true, true);
    this.status("Connecting…");
    const session = new LiveSession(streamParams(), {
      begin: () => {
        this.started = performance.now();
        this.clockTimer = setInterval(() => {
          $("live-clock").textContent = clock(performance.now() - this.started);
        }, 250);
        this.button(true);
        this.status("Recording: speak now. Press Stop when you are done.");
      },
      turn: (message) => this.turn(message),
      level: (db) => {
        $("level").textContent = db <= -99 ? "silent" : `${Math.round(db)} dB`;
        $("level-bar").style.width = `${Math.max(0, Math.min(100, ((db + 60) / 60) * 100))}%`;
      },
      latency: (ms) => {
        $("latency").textContent = `${Math.round(ms)} ms`;
      },
      finishing: () => {
        this.button(true, true);
        this.status("finishing… (waiting for the last words)");
      },
      end: ({ error, sessionId }) => this.ended(error, sessionId),
    });
    this.session = session;
    try {
      await session.start();
    } catch (error) {
      this.session = null;
      this.button(false);
      this.status("Not recording.");
      showError(error);
    }
  }

  stop() {
    this.session?.stop();
  }

  turn(message) {
    const container = $("live-turns");
    const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    const block = renderTurn(container, fromMessage(message));
    if (atBottom) block.scrollIntoView({ block: "nearest" });
  }

  ended(error, sessionId) {
    clearInterval(this.clockTimer);
    this.session = null;
    this.button(false);
    $("level").textContent = "–";
    $("level-bar").style.width = "0";
    if (!error) {
      // after Termination every turn the server kept is final: one still open was dropped
      for (const open of $("live-turns").querySelectorAll(".turn:not(.final)")) open.remove();
    }
    const turns = $("live-turns").querySelectorAll(".turn").length;
    this.savedId = sessionId;
    $("live-saved").hidden = !sessionId;
    if (error) {
      this.status(turns ? "The session ended early; the turns above were kept." : "Not recording.");
      showError(error);
    } else {
      this.status(`Finished: ${turns} turn${turns === 1 ? "" : "s"}.`);
    }
  }
}

// ------------------------------------------------------------------ wiring

const ui = {
  showError,
  clearError,
  async openInHistory(sessionId) {
    selectTab("history", true);
    if (sessionId) await historyView.open(sessionId);
  },
};

const historyView = new History(ui);
const live = new Live();
new Upload(ui, () => settings);

$("open-settings").addEventListener("click", () => openSettings());
$("settings").addEventListener("close", () => {
  if ($("settings").returnValue === "save") saveSettings();
});
$("error-close").addEventListener("click", clearError);
window.addEventListener("beforeunload", () => live.session?.stop());

function showServer() {
  const info = api.info;
  const access =
    info.auth === "open" ? "open (no key needed)" : api.key ? "API key set" : "API key needed";
  $("server-info").textContent = `Model ${info.model} · ${access} · v${info.version}`;
}

async function init() {
  try {
    await api.loadInfo();
  } catch (error) {
    $("server-info").textContent = "server unreachable";
    showError(error);
    return;
  }
  showServer();
  document.body.dataset.ready = "true";
  if (api.needsKey) {
    openSettings("This server needs an API key: paste it below (it stays in this browser).");
  }
}

init();
