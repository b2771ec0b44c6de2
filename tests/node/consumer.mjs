// A customer's ACS transcription consumer, written as ACS users write it: a WebSocket server whose
// frames go through the vendor's own StreamingData.parse, and a callback endpoint whose CloudEvents
// go through parseCallAutomationEvent (both from @azure/communication-call-automation).
//
// Prints one JSON line per thing received: {"type":"ready", ws, http} first, then
// {"type":"frame", conn, kind, parsed, problems} and {"type":"callback", event, problems}.
// `problems` lists every parsed field whose value or type is not what the SDK's models promise.
// Runs until stdin closes.
import http from "node:http";
import { WebSocketServer } from "ws";
import {
  StreamingData,
  parseCallAutomationEvent,
} from "@azure/communication-call-automation";

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const isInt = (v) => Number.isInteger(v) && v >= 0;

function checkMetadata(m, problems) {
  for (const key of ["subscriptionId", "locale", "callConnectionId", "correlationId"]) {
    if (typeof m[key] !== "string" || !m[key]) problems.push(`metadata.${key}: ${m[key]}`);
  }
}

function checkData(d, problems) {
  if (typeof d.text !== "string" || !d.text.trim()) problems.push(`text: ${d.text}`);
  if (d.format !== "display") problems.push(`format: ${d.format}`);
  if (typeof d.confidence !== "number" || d.confidence < 0 || d.confidence > 1)
    problems.push(`confidence: ${d.confidence}`);
  if (!isInt(d.offsetInTicks)) problems.push(`offsetInTicks: ${d.offsetInTicks}`);
  if (!isInt(d.durationInTicks)) problems.push(`durationInTicks: ${d.durationInTicks}`);
  if (!Array.isArray(d.words) || d.words.length === 0) problems.push("words: empty");
  for (const w of d.words || []) {
    if (typeof w.text !== "string" || !w.text) problems.push(`word.text: ${w.text}`);
    if (!isInt(w.offsetInTicks)) problems.push(`word.offsetInTicks: ${w.offsetInTicks}`);
    if (!isInt(w.durationInTicks)) problems.push(`word.durationInTicks: ${w.durationInTicks}`);
  }
  const p = d.participant || {};
  if (p.kind === "phoneNumber") {
    if (!/^\+\d+$/.test(p.phoneNumber || "")) problems.push(`phoneNumber: ${p.phoneNumber}`);
  } else if (p.kind === "communicationUser") {
    if (!(p.communicationUserId || "").startsWith("8:acs:"))
      problems.push(`communicationUserId: ${p.communicationUserId}`);
  } else {
    problems.push(`participant kind: ${p.kind}`);
  }
  if (!["Final", "Intermediate"].includes(d.resultState))
    problems.push(`resultState: ${d.resultState}`);
}

let connections = 0;
const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
wss.on("connection", (ws, request) => {
  const conn = connections++;
  let first = true;
  const headers = {
    authorization: request.headers["authorization"] || null,
    callConnectionId: request.headers["x-ms-call-connection-id"] || null,
  };
  ws.on("message", (data) => {
    const problems = [];
    let parsed;
    let kind;
    try {
      parsed = StreamingData.parse(data);
      kind = StreamingData.getStreamingKind();
    } catch (err) {
      out({ type: "frame", conn, kind: null, parsed: null, problems: [String(err)] });
      return;
    }
    if (first && kind !== "TranscriptionMetadata") problems.push(`first frame is ${kind}`);
    if (!first && kind === "TranscriptionMetadata") problems.push("metadata sent twice");
    if (kind === "TranscriptionMetadata") checkMetadata(parsed, problems);
    else if (kind === "TranscriptionData") checkData(parsed, problems);
    else problems.push(`unexpected kind ${kind}`);
    first = false;
    out({ type: "frame", conn, kind, parsed, headers, problems });
  });
});

const callbacks = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const problems = [];
    const body = Buffer.concat(chunks).toString("utf8");
    let event = null;
    try {
      const array = JSON.parse(body);
      if (!Array.isArray(array) || array.length !== 1) problems.push("not a one-event array");
      event = parseCallAutomationEvent(body);
      for (const key of ["callConnectionId", "serverCallId", "correlationId"]) {
        if (typeof event[key] !== "string" || !event[key]) problems.push(`${key}: ${event[key]}`);
      }
      const info = event.resultInformation || {};
      if (!Number.isInteger(info.code) || !Number.isInteger(info.subCode))
        problems.push(`resultInformation: ${JSON.stringify(info)}`);
      const update = event.transcriptionUpdate || {};
      if (typeof update.transcriptionStatus !== "string")
        problems.push(`transcriptionStatus: ${update.transcriptionStatus}`);
      if (typeof update.transcriptionStatusDetails !== "string")
        problems.push(`transcriptionStatusDetails: ${update.transcriptionStatusDetails}`);
    } catch (err) {
      problems.push(String(err));
    }
    out({ type: "callback", event, problems });
    res.writeHead(200).end();
  });
});

wss.on("listening", () => {
  callbacks.listen(0, "127.0.0.1", () => {
    out({ type: "ready", ws: wss.address().port, http: callbacks.address().port });
  });
});

process.stdin.resume();
process.stdin.on("end", () => {
  wss.close();
  callbacks.close();
  process.exit(0);
});
