import * as tf from '@tensorflow/tfjs';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { CoreInputError } from '../errors.js';
// Imported for its side effect: it silences the cpu backend's install-tfjs-node banner, as the service does.
import '../tf/backend.js';
import { parseModelJson, WeightsIngest } from './tfjs.js';
import { TfjsWeightsDecoder } from './tfjs-quantization.js';

const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

type Spec = tf.io.WeightsManifestEntry;

function modelJson(weights: Spec[]) {
  return enc({ modelTopology: {}, format: 'layers-model', weightsManifest: [{ paths: ['w.bin'], weights }] });
}

/** Our decoding of the uploaded bytes, cut into chunks at `cuts`. */
async function ours(weights: Spec[], bytes: Uint8Array, cuts: number[] = []): Promise<Uint8Array> {
  const parsed = parseModelJson(modelJson(weights));
  const decoder = new TfjsWeightsDecoder(parsed.sourceWeights);
  const ingest = new WeightsIngest(parsed.entries, parsed.weightBytes);
  const out: Uint8Array[] = [];
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  let prev = 0;
  for (const p of [...points, bytes.length]) {
    await decoder.push(bytes.subarray(prev, p), async (c) => {
      ingest.push(c);
      out.push(c.slice());
    });
    prev = p;
  }
  decoder.finish();
  ingest.finish();
  return new Uint8Array(Buffer.concat(out));
}

/** TensorFlow.js's own decoding of the same bytes, as little-endian float32/int32 bytes in manifest order. */
function theirs(weights: Spec[], bytes: Uint8Array): Uint8Array {
  const copy = bytes.slice();
  const map = tf.io.decodeWeights(copy.buffer, weights);
  const parts = weights.map((w) => {
    const data = map[w.name].dataSync() as Float32Array | Int32Array;
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
  });
  return new Uint8Array(Buffer.concat(parts));
}

/** Compares as bit patterns, except that any NaN equals any NaN (payloads are not specified by tfjs). */
function expectSameValues(a: Uint8Array, b: Uint8Array, weights: Spec[]) {
  expect(a.length).toBe(b.length);
  const fa = new Float32Array(a.buffer, a.byteOffset, a.length / 4);
  const fb = new Float32Array(b.buffer, b.byteOffset, b.length / 4);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length / 4);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length / 4);
  const intWeights = weights.some((w) => w.dtype === 'int32');
  for (let i = 0; i < fa.length; i++) {
    if (!intWeights && Number.isNaN(fa[i]) && Number.isNaN(fb[i])) continue;
    if (ua[i] !== ub[i]) throw new Error(`value ${i}: ours ${fa[i]} (0x${ua[i].toString(16)}), tfjs ${fb[i]} (0x${ub[i].toString(16)})`);
  }
}

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('quantized TensorFlow.js weights decode exactly as tf.io.decodeWeights does', () => {
  it('every float16 bit pattern', async () => {
    const bytes = new Uint8Array(new Uint16Array(65536).map((_, i) => i).buffer);
    const weights: Spec[] = [{ name: 'h', shape: [65536], dtype: 'float32', quantization: { dtype: 'float16' } }];
    expectSameValues(await ours(weights, bytes), theirs(weights, bytes), weights);
  });

  it('every uint8 and uint16 value with awkward scales', async () => {
    const u8 = new Uint8Array(256).map((_, i) => i);
    const u16 = new Uint8Array(new Uint16Array(65536).map((_, i) => i).buffer);
    const weights: Spec[] = [
      { name: 'a', shape: [256], dtype: 'float32', quantization: { dtype: 'uint8', min: -0.123456789, scale: 0.00987654321 } },
      { name: 'b', shape: [256, 256], dtype: 'float32', quantization: { dtype: 'uint16', min: 1e-7, scale: 3.3e-5 } },
    ];
    const bytes = new Uint8Array(Buffer.concat([u8, u16]));
    expectSameValues(await ours(weights, bytes, [1, 257, 258, 30001]), theirs(weights, bytes), weights);
  });

  it('random manifests (plain and quantized weights mixed), bytes and chunkings', async () => {
    const qArb = fc.oneof(
      fc.constant(undefined),
      fc.constant({ dtype: 'float16' as const }),
      fc.record({ dtype: fc.constantFrom('uint8' as const, 'uint16' as const), min: fc.double({ min: -1e6, max: 1e6, noNaN: true }), scale: fc.double({ min: -1e3, max: 1e3, noNaN: true }) }),
    );
    const weightArb = fc.record({ shape: fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 3 }), q: qArb, int: fc.boolean() });
    await fc.assert(
      fc.asyncProperty(fc.array(weightArb, { minLength: 1, maxLength: 5 }), fc.array(fc.nat(), { maxLength: 8 }), fc.integer(), async (ws, cuts, seed) => {
        const weights: Spec[] = ws.map((w, i) => {
          const dtype = w.int && w.q && w.q.dtype !== 'float16' ? 'int32' : 'float32';
          return { name: `w${i}`, shape: w.shape, dtype, ...(w.q ? { quantization: w.q } : {}) };
        });
        const parsed = parseModelJson(modelJson(weights));
        const total = parsed.sourceWeights.reduce((n, x) => n + x.sourceLength, 0);
        let s = seed >>> 0;
        const bytes = new Uint8Array(total).map(() => {
          s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
          return s >>> 24;
        });
        const a = await ours(weights, bytes, cuts);
        const b = theirs(weights, bytes);
        // Mixed int32/float32: compare bits; NaN only arises in float16 weights.
        expect(a.length).toBe(b.length);
        const fa = new Float32Array(a.buffer);
        const fb = new Float32Array(b.buffer);
        for (let i = 0; i < fa.length; i++) {
          if (Number.isNaN(fa[i]) && Number.isNaN(fb[i])) continue;
          expect(new Uint32Array(a.buffer)[i]).toBe(new Uint32Array(b.buffer)[i]);
        }
      }),
      { numRuns: 150 },
    );
  });

  it('stored layout: quantized weights become float32 (int32 stays int32), offsets over the stored bytes', () => {
    const p = parseModelJson(
      modelJson([
        { name: 'k', shape: [3, 2], dtype: 'float32', quantization: { dtype: 'uint8', min: 0, scale: 1 } },
        { name: 'i', shape: [2], dtype: 'int32', quantization: { dtype: 'uint16', min: 0, scale: 1 } },
        { name: 'b', shape: [2], dtype: 'float32' },
      ]),
    );
    expect(p.quantized).toBe(true);
    expect(p.entries.map((e) => [e.name, e.dtype, e.byteOffset, e.byteLength])).toEqual([
      ['k', 'F32', 0, 24],
      ['i', 'I32', 24, 8],
      ['b', 'F32', 32, 8],
    ]);
    expect(p.sourceWeights.map((w) => w.sourceLength)).toEqual([6, 4, 8]);
    expect(p.groups).toEqual([{ paths: ['w.bin'], sourceBytes: 18 }]);
  });
});

describe('refused quantization', () => {
  const cases: [string, unknown, string, RegExp, number][] = [
    ['unknown dtype', { dtype: 'int4', min: 0, scale: 1 }, 'float32', /quantization dtype "int4"; supported are uint8, uint16 and float16/, 422],
    ['no min', { dtype: 'uint8', scale: 1 }, 'float32', /uint8 quantization has no min/, 400],
    ['NaN scale (as a string, JSON has no NaN)', { dtype: 'uint8', min: 0, scale: 'NaN' }, 'float32', /quantization scale "NaN" is not a finite number/, 400],
    ['huge scale parsed to Infinity', null, 'float32', /quantization scale Infinity is not a finite number/, 400],
    ['float16 on int32', { dtype: 'float16' }, 'int32', /int32 quantized as float16/, 422],
    ['bool quantized', { dtype: 'uint8', min: 0, scale: 1 }, 'bool', /bool quantized as uint8/, 422],
    ['not an object', 'uint8', 'float32', /quantization is not an object/, 400],
  ];
  it.each(cases)('%s', (_label, quantization, dtype, message, status) => {
    const bytes =
      quantization === null
        ? new TextEncoder().encode(`{"modelTopology":{},"weightsManifest":[{"paths":["w.bin"],"weights":[{"name":"k","shape":[1],"dtype":"float32","quantization":{"dtype":"uint8","min":0,"scale":1e999}}]}]}`)
        : modelJson([{ name: 'k', shape: [1], dtype, quantization } as unknown as Spec]);
    try {
      parseModelJson(bytes);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(CoreInputError);
      expect((err as CoreInputError).message).toMatch(message);
      expect((err as CoreInputError).status).toBe(status);
    }
  });

  it('never throws anything but a CoreInputError on arbitrary quantization objects', () => {
    fc.assert(
      fc.property(fc.anything(), fc.constantFrom('float32', 'int32', 'bool'), (q, dtype) => {
        try {
          parseModelJson(modelJson([{ name: 'k', shape: [2], dtype, quantization: q } as unknown as Spec]));
        } catch (err) {
          if (!(err instanceof CoreInputError)) throw err;
        }
      }),
    );
  });

  it('bytes beyond the manifest and short bytes', async () => {
    const weights: Spec[] = [{ name: 'k', shape: [4], dtype: 'float32', quantization: { dtype: 'uint16', min: 0, scale: 1 } }];
    const parsed = parseModelJson(modelJson(weights));
    const d = new TfjsWeightsDecoder(parsed.sourceWeights);
    await expect(d.push(new Uint8Array(9), async () => {})).rejects.toThrow(/names 8 bytes, the upload had more/);
    const short = new TfjsWeightsDecoder(parsed.sourceWeights);
    await short.push(new Uint8Array(7), async () => {});
    expect(() => short.finish()).toThrow(/names 8 bytes, the upload had 7/);
  });
});
