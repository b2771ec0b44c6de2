// What the sdk_*.mjs drivers share: their input, how they record what the SDK hands them, and
// the one JSON line they end with.
//
// Each driver is run by tests/integration/test_js_sdks.py as
//   node sdk_<vendor>.mjs '{"case": ..., "http": "https://127.0.0.1:PORT", "ws": "wss://...",
//                           "pcm16k": FILE, "pcm24k": FILE, "wav": FILE}'
// with NODE_EXTRA_CA_CERTS naming the server's CA: the SDKs are used exactly as a user would,
// with nothing but the host changed. The driver prints one line, {"result": {...}}:
//   events      what the SDK delivered, in order (its own event names)
//   errors      every error the SDK or the driver saw (must stay empty)
//   transcript  the final text, assembled the way the SDK's users assemble it
//   close       how the session ended ({code, reason} of the close, or what the SDK reports)
//   body        for batch requests: what the SDK returned
import { readFileSync } from "node:fs";

export const config = JSON.parse(process.argv[2] || "{}");

export class Recorder {
  constructor() {
    this.events = [];
    this.errors = [];
    this.transcript = "";
    this.close = null;
    this.body = undefined;
    this.extra = {};
  }

  event(name) {
    this.events.push(name);
  }

  error(where, err) {
    const text = err instanceof Error ? `${err.name}: ${err.message}` : JSON.stringify(err);
    const cause = err && err.cause ? ` (cause: ${err.cause.code || err.cause.message || err.cause})` : "";
    this.errors.push(`${where}: ${text}${cause}`);
  }
}

// `bytes`-sized pieces of a PCM file (the last one may be shorter)
export function* chunks(path, bytes) {
  const pcm = readFileSync(path);
  for (let i = 0; i < pcm.length; i += bytes) yield pcm.subarray(i, i + bytes);
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// resolves when `predicate()` holds, rejects after `ms` with `what` in the message
export async function waitFor(predicate, ms, what) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

// Run `body(recorder)`, then print the result line and exit (open handles must not keep the
// process alive after the session is over).
export async function drive(body) {
  const rec = new Recorder();
  process.on("unhandledRejection", (err) => rec.error("unhandled rejection", err));
  try {
    await body(rec);
  } catch (err) {
    rec.error("driver", err);
  }
  const result = {
    events: rec.events,
    errors: rec.errors,
    transcript: rec.transcript,
    close: rec.close,
    body: rec.body,
    extra: rec.extra,
  };
  process.stdout.write(JSON.stringify({ result }) + "\n", () => process.exit(0));
}
