import { CoreInputError } from '../errors.js';
import { f16BitsToF32Bits } from './dtype.js';
import type { ByteSink } from './tensor-writer.js';

/**
 * TensorFlow.js weight quantization, as the converter's `--quantize_uint8/uint16/float16` writes it:
 * the weight's bytes in the shard are the quantized values; `uint8`/`uint16` decode as
 * `q · scale + min`, `float16` as the IEEE half. Decoded here on ingest exactly as
 * `tf.io.decodeWeights` does (the product and sum in double precision, rounded once to float32;
 * `Math.round` for int32 weights), so the stored float32 weights are the ones TensorFlow.js itself
 * would load.
 */

export type TfjsQuantization = { dtype: 'uint8' | 'uint16'; min: number; scale: number } | { dtype: 'float16' };

/** Bytes per quantized value. */
export const QUANTIZED_BYTES: Readonly<Record<TfjsQuantization['dtype'], number>> = { uint8: 1, uint16: 2, float16: 2 };

function bad(message: string, details: Record<string, unknown>, status: 400 | 422 = 400): CoreInputError {
  return new CoreInputError('invalid-tfjs-model', message, details, status);
}

/** Validates a manifest entry's `quantization` for a weight of `dtype` (float32, int32 or bool). */
export function parseQuantization(q: unknown, weight: string, dtype: string): TfjsQuantization {
  const details = { weight };
  if (typeof q !== 'object' || q === null || Array.isArray(q)) throw bad(`weight ${weight}: quantization is not an object`, details);
  const { dtype: qd, min, scale } = q as Record<string, unknown>;
  if (qd === 'uint8' || qd === 'uint16') {
    if (dtype !== 'float32' && dtype !== 'int32') throw bad(`weight ${weight} is ${dtype} quantized as ${qd}; only float32 and int32 weights can be`, details, 422);
    for (const [field, v] of [['min', min], ['scale', scale]] as const) {
      if (v === undefined) throw bad(`weight ${weight}: ${qd} quantization has no ${field}`, details);
      // JSON has no NaN, but 1e999 parses to Infinity.
      if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(`weight ${weight}: quantization ${field} ${typeof v === 'number' ? String(v) : JSON.stringify(v)} is not a finite number`, details);
    }
    return { dtype: qd, min: min as number, scale: scale as number };
  }
  if (qd === 'float16') {
    if (dtype !== 'float32') throw bad(`weight ${weight} is ${dtype} quantized as float16; only float32 weights can be`, details, 422);
    return { dtype: 'float16' };
  }
  throw bad(`weight ${weight} has quantization dtype ${JSON.stringify(qd)}; supported are uint8, uint16 and float16`, details, 422);
}

/** A weight as its bytes lie in the uploaded shards (quantized or not). */
export interface SourceWeight {
  name: string;
  dtype: 'float32' | 'int32' | 'bool';
  /** Bytes in the shards: elements × the quantized (or plain) element size. */
  sourceLength: number;
  quantization?: TfjsQuantization;
}

const BATCH = 16_384;

/**
 * Push decoder from the uploaded weight bytes (the concatenation of every shard in manifest order)
 * to the stored ones: plain weights pass through untouched, quantized ones come out as float32 (or
 * int32) little-endian bytes. Memory is one batch buffer and a one-byte carry, whatever the size.
 */
export class TfjsWeightsDecoder {
  private index = 0;
  private pos = 0;
  private received = 0;
  /** A 2-byte value split across two chunks: its first byte, or -1. */
  private carry = -1;
  private readonly f32 = new Float32Array(BATCH);
  private readonly i32 = new Int32Array(this.f32.buffer);
  private readonly u32 = new Uint32Array(this.f32.buffer);
  private readonly bytes = new Uint8Array(this.f32.buffer);
  readonly sourceBytes: number;

  constructor(private readonly weights: readonly SourceWeight[]) {
    this.sourceBytes = weights.reduce((n, w) => n + w.sourceLength, 0);
  }

  get bytesReceived(): number {
    return this.received;
  }

  /** Decodes a chunk; every output chunk is handed to `sink` (a view of a reused buffer). */
  async push(chunk: Uint8Array, sink: ByteSink): Promise<void> {
    if (this.received + chunk.byteLength > this.sourceBytes) {
      throw new CoreInputError('invalid-tfjs-weights', `the weights manifest names ${this.sourceBytes} bytes, the upload had more`, { expectedBytes: this.sourceBytes });
    }
    this.received += chunk.byteLength;
    let off = 0;
    while (off < chunk.byteLength) {
      while (this.weights[this.index].sourceLength === this.pos) {
        this.index++;
        this.pos = 0;
      }
      const w = this.weights[this.index];
      const take = Math.min(w.sourceLength - this.pos, chunk.byteLength - off);
      const piece = chunk.subarray(off, off + take);
      if (w.quantization) await this.decode(w, w.quantization, piece, sink);
      else await sink(piece);
      this.pos += take;
      off += take;
    }
  }

  finish(): void {
    if (this.received !== this.sourceBytes) {
      throw new CoreInputError('invalid-tfjs-weights', `the weights manifest names ${this.sourceBytes} bytes, the upload had ${this.received}`, {
        expectedBytes: this.sourceBytes,
        actualBytes: this.received,
      });
    }
  }

  private async decode(w: SourceWeight, q: TfjsQuantization, piece: Uint8Array, sink: ByteSink): Promise<void> {
    const width = QUANTIZED_BYTES[q.dtype];
    let i = 0;
    let n = 0;
    const flush = async () => {
      if (n > 0) await sink(this.bytes.subarray(0, n * 4));
      n = 0;
    };
    const put = (v: number) => {
      if (q.dtype === 'float16') this.u32[n++] = f16BitsToF32Bits(v);
      else if (w.dtype === 'int32') this.i32[n++] = Math.round(v * q.scale + q.min);
      else this.f32[n++] = v * q.scale + q.min;
    };
    if (width === 2 && this.carry >= 0 && piece.byteLength > 0) {
      put(this.carry | (piece[0] << 8));
      this.carry = -1;
      i = 1;
    }
    while (i + width <= piece.byteLength) {
      put(width === 1 ? piece[i] : piece[i] | (piece[i + 1] << 8));
      i += width;
      if (n === BATCH) await flush();
    }
    if (i < piece.byteLength) this.carry = piece[i];
    await flush();
  }
}
