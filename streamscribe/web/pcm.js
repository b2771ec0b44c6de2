// Audio arithmetic shared by the capture worklet and the tests: a streaming windowed-sinc
// resampler to 16 kHz, float to PCM16, and the level of a block in dBFS. No DOM, no I/O.

export const TARGET_RATE = 16000;
const ZERO_CROSSINGS = 16; // sinc lobes on each side of the kernel's centre
const PHASES = 256; // fractional positions the kernel is tabulated at

/** Streaming resampler: push() float blocks at `inRate`, get float blocks at `outRate`.
 * Low-passes below the output's Nyquist (92%) so downsampling does not alias; the output
 * sample n is the input at time n * inRate / outRate (a constant delay of half a kernel). */
export class Resampler {
  constructor(inRate, outRate = TARGET_RATE) {
    this.inRate = inRate;
    this.outRate = outRate;
    this.ratio = inRate / outRate;
    this.identity = inRate === outRate;
    const cutoff = Math.min(1, outRate / inRate) * 0.92; // of the input's Nyquist
    this.half = Math.ceil(ZERO_CROSSINGS / cutoff); // taps on each side, in input samples
    this.table = buildTable(this.half, cutoff);
    this.pos = this.half; // index into `buffer` of the next output sample
    this.buffer = new Float64Array(this.half); // leading zeros: output 0 sits at input 0
  }

  push(block) {
    if (this.identity) return Float32Array.from(block);
    const joined = new Float64Array(this.buffer.length + block.length);
    joined.set(this.buffer);
    joined.set(block, this.buffer.length);
    this.buffer = joined;
    return this.drain();
  }

  /** The last samples, padded with silence so every input sample is represented. */
  flush() {
    if (this.identity) return new Float32Array(0);
    return this.push(new Float32Array(this.half + 1));
  }

  drain() {
    const { buffer, half, table, ratio } = this;
    const taps = 2 * half;
    const out = [];
    let pos = this.pos;
    while (Math.floor(pos) + half < buffer.length) {
      const base = Math.floor(pos);
      const phase = Math.min(PHASES - 1, Math.round((pos - base) * PHASES));
      const kernel = table[phase];
      const first = base - half + 1;
      let acc = 0;
      for (let j = 0; j < taps; j++) acc += kernel[j] * buffer[first + j];
      out.push(acc);
      pos += ratio;
    }
    const drop = Math.max(0, Math.floor(pos) - half);
    this.buffer = buffer.slice(drop);
    this.pos = pos - drop;
    return Float32Array.from(out);
  }
}

function buildTable(half, cutoff) {
  const table = [];
  for (let p = 0; p < PHASES; p++) {
    const frac = p / PHASES;
    const kernel = new Float64Array(2 * half);
    let sum = 0;
    for (let j = 0; j < 2 * half; j++) {
      const t = j - half + 1 - frac; // input samples from the output's position
      const x = Math.PI * cutoff * t;
      const sinc = t === 0 ? 1 : Math.sin(x) / x;
      const window = 0.5 + 0.5 * Math.cos((Math.PI * t) / (half + 1)); // Hann
      kernel[j] = sinc * window;
      sum += kernel[j];
    }
    for (let j = 0; j < kernel.length; j++) kernel[j] /= sum; // unit gain at DC
    table.push(kernel);
  }
  return table;
}

/** Float samples in [-1, 1] to little-endian signed 16-bit PCM (clipped). */
export function floatToPcm16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    out[i] = s < 0 ? Math.round(s * 32768) : Math.round(s * 32767);
  }
  return out;
}

/** RMS level of a block in dBFS (-100 for silence). */
export function levelDb(samples) {
  let sum = 0;
  for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
  const rms = Math.sqrt(sum / Math.max(1, samples.length));
  return rms > 1e-5 ? Math.max(-100, 20 * Math.log10(rms)) : -100;
}
