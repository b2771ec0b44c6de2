// AudioWorklet: microphone blocks (at the AudioContext's rate) -> 16 kHz PCM16 chunks of 100 ms.
// Each chunk is posted to the page with its level; "flush" posts what is left (at least 50 ms,
// padded with silence, as the v3 API requires) and then {flushed: true}.
import { Resampler, TARGET_RATE, floatToPcm16, levelDb } from "./pcm.js";

const CHUNK = TARGET_RATE / 10; // 100 ms
const MIN_CHUNK = TARGET_RATE / 20; // 50 ms

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.resampler = new Resampler(sampleRate, TARGET_RATE);
    this.chunk = new Float32Array(CHUNK);
    this.fill = 0;
    this.done = false;
    this.port.onmessage = (event) => {
      if (event.data === "flush") this.flush();
    };
  }

  process(inputs) {
    if (this.done) return false;
    const channels = inputs[0];
    if (channels && channels.length) {
      let mono = channels[0];
      if (channels.length > 1) {
        mono = new Float32Array(mono.length);
        for (const channel of channels) {
          for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / channels.length;
        }
      }
      this.append(this.resampler.push(mono));
    }
    return true;
  }

  append(samples) {
    let offset = 0;
    while (offset < samples.length) {
      const n = Math.min(CHUNK - this.fill, samples.length - offset);
      this.chunk.set(samples.subarray(offset, offset + n), this.fill);
      this.fill += n;
      offset += n;
      if (this.fill === CHUNK) this.post(CHUNK);
    }
  }

  post(length) {
    const samples = this.chunk.slice(0, length);
    const pcm = floatToPcm16(samples);
    this.port.postMessage({ pcm: pcm.buffer, db: levelDb(samples) }, [pcm.buffer]);
    this.chunk.fill(0);
    this.fill = 0;
  }

  flush() {
    if (this.done) return;
    this.append(this.resampler.flush());
    if (this.fill > 0) this.post(Math.max(this.fill, MIN_CHUNK));
    this.done = true;
    this.port.postMessage({ flushed: true });
  }
}

registerProcessor("streamscribe-capture", CaptureProcessor);
