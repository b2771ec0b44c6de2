// npm `openai` against streamscribe over https/wss: `audio.transcriptions.create` in every
// `response_format` and with `stream: true`, and a Realtime transcription session.
// Cases: "batch:<format>", "stream", "realtime". See sdk_common.mjs.
import { createReadStream } from "node:fs";
import OpenAI from "openai";
import { OpenAIRealtimeWS } from "openai/realtime/ws";
import { chunks, config, drive, waitFor } from "./sdk_common.mjs";

const CHUNK = 4800; // 100 ms of 24 kHz PCM16
const COMPLETED = "conversation.item.input_audio_transcription.completed";
const DELTA = "conversation.item.input_audio_transcription.delta";

// the only change from the cloud: baseURL (the Realtime URL is derived from it, always wss://)
const client = () => new OpenAI({ apiKey: "any", baseURL: `${config.http}/v1`, maxRetries: 0 });

async function batch(rec, format) {
  const params = { file: createReadStream(config.wav), model: "whisper-1", response_format: format };
  if (format === "verbose_json") params.timestamp_granularities = ["word", "segment"];
  rec.body = await client().audio.transcriptions.create(params);
  rec.event("response");
}

async function stream(rec) {
  const events = await client().audio.transcriptions.create({
    file: createReadStream(config.wav),
    model: "gpt-4o-transcribe",
    stream: true,
  });
  let deltas = "";
  for await (const event of events) {
    rec.event(event.type);
    if (event.type === "transcript.text.delta") deltas += event.delta;
    if (event.type === "transcript.text.done") rec.transcript = event.text;
  }
  rec.extra.deltas = deltas;
}

async function realtime(rec) {
  const rt = new OpenAIRealtimeWS({ intent: "transcription" }, client());
  const completed = new Map();
  const committedByClient = new Set();
  const stopped = new Set();
  let closed = false;
  rec.extra.items = {}; // item_id -> {deltas: the deltas joined, transcript: the completed one}
  rt.on("event", (event) => {
    rec.event(event.type);
    if (event.type === "input_audio_buffer.speech_stopped") stopped.add(event.item_id);
    if (event.type === "input_audio_buffer.committed" && !stopped.has(event.item_id))
      committedByClient.add(event.item_id);
    if (event.type === COMPLETED) completed.set(event.item_id, event.transcript);
    if (event.type === DELTA || event.type === COMPLETED) {
      const item = (rec.extra.items[event.item_id] ??= { deltas: "", transcript: null });
      if (event.type === DELTA) item.deltas += event.delta;
      else item.transcript = event.transcript;
    }
  });
  rt.on("error", (err) => rec.error("error event", err));
  rt.socket.on("close", (code, reason) => {
    rec.close = { code, reason: reason.toString() };
    closed = true;
  });
  await new Promise((resolve, reject) => {
    rt.socket.once("open", resolve);
    rt.socket.once("error", reject);
  });
  await waitFor(() => rec.events.includes("session.created"), 10_000, "session.created");
  rt.send({
    type: "session.update",
    session: {
      type: "transcription",
      audio: {
        input: {
          format: { type: "audio/pcm", rate: 24000 },
          transcription: { model: "gpt-4o-transcribe", language: "en" },
          turn_detection: { type: "server_vad", silence_duration_ms: 500 },
        },
      },
    },
  });
  for (const chunk of chunks(config.pcm24k, CHUNK)) {
    rt.send({ type: "input_audio_buffer.append", audio: chunk.toString("base64") });
    await new Promise((resolve) => setImmediate(resolve));
  }
  rt.send({ type: "input_audio_buffer.commit" });
  // done when the client's own commit has its transcript (server_vad commits the rest itself)
  await waitFor(
    () => committedByClient.size > 0 && [...committedByClient].every((id) => completed.has(id)),
    60_000,
    "the transcript of the committed audio",
  );
  rt.close();
  await waitFor(() => closed, 10_000, "the close");
  rec.transcript = [...completed.values()].filter(Boolean).join(" ");
}

await drive(async (rec) => {
  if (config.case.startsWith("batch:")) await batch(rec, config.case.slice("batch:".length));
  else if (config.case === "stream") await stream(rec);
  else if (config.case === "realtime") await realtime(rec);
  else throw new Error(`unknown case ${config.case}`);
});
