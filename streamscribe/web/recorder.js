// One live session: microphone -> AudioWorklet (16 kHz PCM16, 100 ms chunks) -> /v3/ws.
// Stop flushes the last audio, sends Terminate and keeps listening until Termination, so the
// last turn is never lost. The socket is opened with a single-use token, never the API key.

import { api, explainClose, explainMicrophone, insecureContext, PageError } from "./api.js";

const FINISH_TIMEOUT_MS = 30000;
const BEGIN_TIMEOUT_MS = 15000;

export class LiveSession {
  /**
   * @param {object} params  v3 query parameters (sample_rate is set here)
   * @param {object} on  handlers: begin(id), turn(message), level(db), latency(ms),
   *                     finishing(), end({error, sessionId})
   */
  constructor(params, on) {
    this.params = { ...params, sample_rate: 16000, encoding: "pcm_s16le" };
    this.on = on;
    this.sessionId = null;
    this.sentMs = 0;
    this.pending = [];
    this.begun = false;
    this.stopping = false;
    this.ended = false;
    this.serverError = "";
  }

  /** Resolves once the server said Begin; throws a PageError when the session cannot start. */
  async start() {
    if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) throw insecureContext();
    const token = await api.token(); // a bad key or a dead server fails before the mic opens
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: true },
      });
    } catch (error) {
      throw explainMicrophone(error);
    }
    try {
      this.context = new AudioContext();
      await this.context.audioWorklet.addModule("/web/capture-worklet.js");
      this.node = new AudioWorkletNode(this.context, "streamscribe-capture", {
        numberOfInputs: 1,
        numberOfOutputs: 0,
        channelCount: 1,
        channelCountMode: "explicit",
      });
      this.node.port.onmessage = (event) => this.chunk(event.data);
      this.context.createMediaStreamSource(this.stream).connect(this.node);
      await this.context.resume();
    } catch (error) {
      this.release();
      throw new PageError(`The browser could not process audio (${error.message || error}).`, "Use a current Chrome, Edge, Firefox or Safari and reload the page.");
    }
    await this.connect(token);
  }

  connect(token) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.release();
        reject(new PageError("The server did not start the session in time.", "Check that the server is not overloaded, then press Record again."));
      }, BEGIN_TIMEOUT_MS);
      const ws = new WebSocket(api.wsUrl(this.params, token));
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      ws.onmessage = (event) => {
        if (typeof event.data !== "string") return;
        const message = JSON.parse(event.data);
        if (message.type === "Begin") {
          clearTimeout(timer);
          this.begun = true;
          this.sessionId = message.id;
          for (const pcm of this.pending.splice(0)) ws.send(pcm);
          this.on.begin?.(message.id);
          resolve();
        } else if (message.type === "Turn") {
          this.turn(message);
        } else if (message.type === "Termination") {
          this.finish(null);
        } else if (message.type === "Error") {
          this.serverError = message.error || "";
        }
      };
      ws.onclose = (event) => {
        clearTimeout(timer);
        if (this.ended) return;
        const error = explainClose(event.code, event.reason || this.serverError);
        if (!this.begun) {
          this.release();
          this.ended = true;
          reject(error);
        } else {
          this.finish(error);
        }
      };
    });
  }

  chunk(data) {
    if (data.flushed) {
      if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "Terminate" }));
      this.releaseAudio();
      return;
    }
    this.on.level?.(data.db);
    this.sentMs += data.pcm.byteLength / 32; // 16 kHz, 2 bytes a sample
    if (this.begun && this.ws.readyState === WebSocket.OPEN) this.ws.send(data.pcm);
    else if (!this.begun) this.pending.push(data.pcm);
  }

  turn(message) {
    this.on.turn?.(message);
    const words = message.words || [];
    if (!message.end_of_turn && words.length) {
      const heard = Math.max(...words.map((w) => w.end));
      this.on.latency?.(Math.max(0, this.sentMs - heard));
    }
  }

  /** Stop capturing; the session ends when the server's Termination arrives. */
  stop() {
    if (this.stopping || this.ended) return;
    this.stopping = true;
    this.on.finishing?.();
    for (const track of this.stream?.getTracks() || []) track.stop();
    this.node?.port.postMessage("flush");
    this.finishTimer = setTimeout(() => {
      this.finish(new PageError("The server did not finish the session in time.", "The turns already shown are saved; check the server's log, then press Record again."));
    }, FINISH_TIMEOUT_MS);
  }

  finish(error) {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.finishTimer);
    this.release();
    this.on.end?.({ error, sessionId: this.sessionId });
  }

  releaseAudio() {
    for (const track of this.stream?.getTracks() || []) track.stop();
    if (this.node) this.node.port.onmessage = null;
    if (this.context && this.context.state !== "closed") this.context.close();
  }

  release() {
    this.releaseAudio();
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
  }
}
