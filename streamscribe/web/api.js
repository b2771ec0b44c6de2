// Talking to this server: REST calls (with the API key when the server has keys), temporary
// tokens for live audio, the /v3/ws URL, and every failure turned into plain words with a fix.
// The API key never goes into a WebSocket URL: live sessions use a single-use token.

const KEY_STORE = "streamscribe.apiKey";
const CREATE_KEY = "Create one on the server with `streamscribe keys create NAME`.";

/** A failure the page can show: `title` says what happened, `fix` what to do about it. */
export class PageError extends Error {
  constructor(title, fix = "", status = 0) {
    super(title);
    this.title = title;
    this.fix = fix;
    this.status = status;
  }
}

export const api = {
  key: localStorage.getItem(KEY_STORE) || "",
  info: null,

  setKey(key) {
    this.key = (key || "").trim();
    if (this.key) localStorage.setItem(KEY_STORE, this.key);
    else localStorage.removeItem(KEY_STORE);
  },

  get needsKey() {
    return this.info?.auth === "key" && !this.key;
  },

  headers(extra = {}) {
    return this.key ? { Authorization: this.key, ...extra } : { ...extra };
  },

  async request(path, options = {}) {
    let response;
    try {
      response = await fetch(path, { ...options, headers: this.headers(options.headers) });
    } catch {
      throw unreachable();
    }
    if (!response.ok) throw await httpError(response);
    return response;
  },

  async json(path, options) {
    return (await this.request(path, options)).json();
  },

  async loadInfo() {
    this.info = await this.json("/v1/info");
    return this.info;
  },

  /** A single-use token for one live session (the key stays on this side). */
  async token() {
    const body = await this.json("/v3/token?expires_in_seconds=60");
    return body.token;
  },

  wsUrl(params, token) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ ...params, token });
    return `${scheme}//${location.host}/v3/ws?${query}`;
  },
};

export function unreachable() {
  return new PageError(
    `Cannot reach the server at ${location.origin}.`,
    "Check that `streamscribe serve` is still running and reachable, then try again.",
  );
}

async function httpError(response) {
  let detail = "";
  try {
    const body = await response.json();
    detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? body);
  } catch {
    detail = response.statusText;
  }
  if (response.status === 401) {
    return api.key
      ? new PageError("The server refused this API key.", `Enter a valid key in Settings. ${CREATE_KEY}`, 401)
      : new PageError("This server needs an API key.", `Enter it in Settings. ${CREATE_KEY}`, 401);
  }
  if (response.status === 413) return new PageError("The file is too large.", detail, 413);
  if (response.status === 503) {
    return new PageError("The server is busy.", `${detail} — wait a moment and try again.`, 503);
  }
  return new PageError(detail || `The server answered ${response.status}.`, "", response.status);
}

/** What a WebSocket close (and the Error message before it) means, in plain words. */
export function explainClose(code, reason) {
  const said = reason ? ` The server said: “${reason}”.` : "";
  switch (code) {
    case 1008:
      return new PageError(
        "The server refused the credentials for live audio." + said,
        `Check the API key in Settings. ${CREATE_KEY}`,
      );
    case 1013:
      return new PageError(
        "The server is busy: it is already serving as many live sessions as it allows." + said,
        "Try again in a moment. If you run the server, raise its limit with --max-sessions " +
          "(or STREAMSCRIBE_MAX_SESSIONS) or end another session.",
      );
    case 3009:
      return new PageError(
        "This API key has reached one of its limits." + said,
        "End another session that uses this key, or ask the server's admin for a higher limit.",
      );
    case 3006:
      return new PageError("The server did not accept the session's settings." + said, "Change them in Settings and press Record again.");
    case 3007:
      return new PageError("The server did not accept the audio." + said, "Reload the page and try again; if it keeps happening, report it with the server's log.");
    case 3008:
      return new PageError("The session reached its maximum length." + said, "Press Record to start a new one.");
    case 4031:
      return new PageError("The session ended because no audio arrived for too long." + said, "Press Record to start again.");
    case 3005:
    case 1011:
      return new PageError("The server failed while transcribing." + said, "Press Record to try again; the server's log says what went wrong.");
    default:
      return new PageError(
        `The connection to the server closed unexpectedly (code ${code}).` + said,
        "Check that the server is still running and reachable, then press Record again.",
      );
  }
}

/** getUserMedia failures, in plain words. */
export function explainMicrophone(error) {
  const name = error?.name || "";
  if (name === "NotAllowedError" || name === "SecurityError") {
    return new PageError(
      "Microphone access was blocked.",
      "Allow the microphone for this page (the icon at the left of the address bar, then Allow) and press Record again.",
    );
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return new PageError("No microphone was found.", "Connect a microphone (or choose one in your system's sound settings) and press Record again.");
  }
  if (name === "NotReadableError" || name === "AbortError") {
    return new PageError("The microphone could not be started.", "Close other applications that use it and press Record again.");
  }
  return new PageError(`The microphone could not be used (${name || error}).`, "Reload the page and try again.");
}

export function insecureContext() {
  return new PageError(
    "This browser only allows the microphone on secure pages.",
    `Open the dashboard at http://localhost:${location.port || 80} on the server's machine, or serve it over HTTPS: start the server with --tls self-signed (or --ssl-certfile/--ssl-keyfile).`,
  );
}
