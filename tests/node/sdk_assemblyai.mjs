// npm `assemblyai` against streamscribe over wss: Universal-Streaming v3 (API key or temporary
// token) and the v2 RealtimeTranscriber (the same). Cases: "v3", "v3-token", "v2", "v2-token".
// See sdk_common.mjs.
import { AssemblyAI } from "assemblyai";
import { chunks, config, drive } from "./sdk_common.mjs";

const CHUNK = 3200; // 100 ms of 16 kHz PCM16
const WAIT_MS = 60_000; // how long close() may wait for the last turn (the SDK's default is 5 s)

// the server's own message types as they arrive on the socket, beside what the SDK dispatches
function tapWire(socket, rec) {
  rec.extra.wire = [];
  socket.on("message", (data) => {
    try {
      const message = JSON.parse(data.toString());
      rec.extra.wire.push(message.type || message.message_type || "?");
    } catch {
      rec.extra.wire.push("(not JSON)");
    }
  });
  watchClose(socket, rec);
}

// how the socket closed; close() drops every listener before it closes the socket, so this is
// attached again once close() has returned
function watchClose(socket, rec) {
  if (socket.readyState === socket.CLOSED) {
    rec.close ??= { code: socket._closeCode, reason: "" };
    return;
  }
  socket.once("close", (code, reason) => {
    rec.close = { code, reason: reason.toString() };
  });
}

async function sendAll(transcriber) {
  for (const chunk of chunks(config.pcm16k, CHUNK)) {
    transcriber.sendAudio(chunk);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

async function v3(rec, useToken) {
  // the only change from the cloud: where the SDK connects
  const client = new AssemblyAI({ apiKey: "any", streamingBaseUrl: config.http });
  const params = { websocketBaseUrl: `${config.ws}/v3/ws`, sampleRate: 16000, formatTurns: true };
  if (useToken) {
    params.token = await client.streaming.createTemporaryToken({ expires_in_seconds: 60 });
    rec.event("token");
  }
  const transcriber = client.streaming.transcriber(params);
  const turns = [];
  transcriber.on("open", (begin) => rec.event(`open:${begin.type}`));
  transcriber.on("turn", (turn) => {
    rec.event(turn.end_of_turn ? (turn.turn_is_formatted ? "turn:formatted" : "turn:end") : "turn");
    if (turn.end_of_turn && turn.turn_is_formatted) turns.push(turn.transcript);
  });
  transcriber.on("error", (err) => rec.error("error event", err));
  transcriber.on("close", (code, reason) => rec.event(`close:${code}`));
  const begin = await transcriber.connect();
  rec.extra.session_id = begin.id;
  const socket = transcriber.socket;
  tapWire(socket, rec);
  await sendAll(transcriber);
  await transcriber.close(true, WAIT_MS);
  watchClose(socket, rec);
  rec.event("closed");
  rec.transcript = turns.join(" ");
}

async function v2(rec, useToken) {
  const client = new AssemblyAI({ apiKey: "any", baseUrl: config.http });
  const params = { realtimeUrl: `${config.ws}/v2/realtime/ws`, sampleRate: 16000 };
  if (useToken) {
    params.token = await client.realtime.createTemporaryToken({ expires_in: 60 });
    rec.event("token");
  }
  const transcriber = client.realtime.transcriber(params);
  const finals = [];
  transcriber.on("open", () => rec.event("open"));
  transcriber.on("transcript.partial", () => rec.event("partial"));
  transcriber.on("transcript.final", (t) => {
    rec.event("final");
    if (t.text) finals.push(t.text);
  });
  transcriber.on("session_information", () => rec.event("session_information"));
  transcriber.on("error", (err) => rec.error("error event", err));
  transcriber.on("close", (code) => rec.event(`close:${code}`));
  const begin = await transcriber.connect();
  rec.extra.session_id = begin.sessionId;
  const socket = transcriber.socket;
  tapWire(socket, rec);
  await sendAll(transcriber);
  await transcriber.close(true, WAIT_MS);
  watchClose(socket, rec);
  rec.event("closed");
  rec.transcript = finals.join(" ");
}

await drive(async (rec) => {
  if (config.case === "v3") await v3(rec, false);
  else if (config.case === "v3-token") await v3(rec, true);
  else if (config.case === "v2") await v2(rec, false);
  else if (config.case === "v2-token") await v2(rec, true);
  else throw new Error(`unknown case ${config.case}`);
  // close() returns once Termination arrived; the server's close frame follows
  const deadline = Date.now() + 5000;
  while (rec.close === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
});
