// npm `@deepgram/sdk` against streamscribe over https/wss: live `listen.v1.connect` and
// pre-recorded `listen.v1.media.transcribeFile`. Cases: "live", "prerecorded". See sdk_common.mjs.
import { createReadStream } from "node:fs";
import { DeepgramClient } from "@deepgram/sdk";
import { chunks, config, drive, waitFor } from "./sdk_common.mjs";

const CHUNK = 3200; // 100 ms of 16 kHz linear16

// the only change from the cloud: baseUrl (REST and WebSocket alike)
const client = () => new DeepgramClient({ apiKey: "any", baseUrl: config.http });

async function live(rec) {
  const connection = await client().listen.v1.connect({
    model: "nova-3",
    encoding: "linear16",
    sample_rate: 16000,
    interim_results: "true",
    punctuate: "true",
    smart_format: "true",
    utterance_end_ms: "1000",
    vad_events: "true",
    reconnectAttempts: 0,
  });
  const finals = [];
  let closed = false;
  connection.on("open", () => rec.event("open"));
  connection.on("message", (message) => {
    if (message.type === "Results") {
      rec.event(message.is_final ? (message.speech_final ? "Results:speech_final" : "Results:final") : "Results");
      const text = message.channel.alternatives[0].transcript;
      if (message.is_final && text) finals.push(text);
    } else {
      rec.event(message.type);
    }
  });
  connection.on("error", (err) => rec.error("error event", err));
  connection.on("close", (event) => {
    rec.close = { code: event.code, reason: event.reason || "" };
    rec.event("close");
    closed = true;
  });
  connection.connect();
  await connection.waitForOpen();
  for (const chunk of chunks(config.pcm16k, CHUNK)) {
    connection.sendMedia(chunk);
    await new Promise((resolve) => setImmediate(resolve));
  }
  connection.sendCloseStream({ type: "CloseStream" });
  await waitFor(() => closed, 60_000, "the server to close after CloseStream");
  rec.transcript = finals.join(" ");
}

async function prerecorded(rec) {
  const response = await client().listen.v1.media.transcribeFile(createReadStream(config.wav), {
    model: "nova-3",
    punctuate: true,
    smart_format: true,
    utterances: true,
  });
  rec.event("response");
  rec.body = response;
  rec.transcript = response.results.channels[0].alternatives[0].transcript;
}

await drive(async (rec) => {
  if (config.case === "live") await live(rec);
  else if (config.case === "prerecorded") await prerecorded(rec);
  else throw new Error(`unknown case ${config.case}`);
});
