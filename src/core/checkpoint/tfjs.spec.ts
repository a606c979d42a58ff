import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { concatBytes, expectCoreError, fixture, fixtureJson, memorySink, outcome, split } from '../../../test/fixtures/checkpoint/helpers.js';
import { CoreInputError } from '../errors.js';
import type { TensorEntry } from '../tensors.js';
import { FileCheckpointReader } from './file-reader.js';
import { modelJsonForDownload, openTfjsWeights, parseModelJson, type TfjsModelJson, TfjsWeightsWriter, WeightsIngest } from './tfjs.js';
import { writeCheckpointLike } from './write-like.js';

const MODEL = 'invalid-tfjs-model';
const WEIGHTS = 'invalid-tfjs-weights';
const enc = (v: unknown) => new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v));

interface Expected {
  weightBytes: number;
  weights: { name: string; byteOffset: number; byteLength: number; values: (string | number)[]; zeros: number; nonFinite: number }[];
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sparsoup-tfjs-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const modelBytes = fixture('tfjs/model.json');
const weightBytes = concatBytes(fixture('tfjs/group1-shard1of2.bin'), fixture('tfjs/group1-shard2of2.bin'));
const expected = fixtureJson<Expected>('tfjs.expected.json');

function model(manifest: unknown, extra: Record<string, unknown> = {}): Uint8Array {
  return enc({ modelTopology: { class_name: 'Sequential', config: {} }, format: 'layers-model', weightsManifest: manifest, ...extra });
}
const group = (weights: unknown[], paths: unknown[] = ['w.bin']) => ({ paths, weights });
const w = (name: unknown, shape: unknown = [2], dtype: unknown = 'float32', extra: Record<string, unknown> = {}) => ({ name, shape, dtype, ...extra });

function ingest(entries: readonly TensorEntry[], total: number, bytes: Uint8Array, cuts: number[] = []) {
  const i = new WeightsIngest(entries, total);
  for (const c of split(bytes, cuts)) i.push(c);
  return i.finish();
}

describe('the TensorFlow.js fixture (model.json + two shards, written by make_fixtures.py)', () => {
  it('parses the manifest into entries over the concatenated shards, names kept exactly', () => {
    const p = parseModelJson(modelBytes, { maxBytes: 1 << 20 });
    expect(p.weightBytes).toBe(expected.weightBytes);
    expect(p.weightPaths).toEqual(['group1-shard1of2.bin', 'group1-shard2of2.bin']);
    expect(p.entries.map((e) => [e.name, e.byteOffset, e.byteLength])).toEqual(expected.weights.map((x) => [x.name, x.byteOffset, x.byteLength]));
    expect(p.entries.map((e) => e.dtype)).toEqual(['F32', 'F32', 'I32', 'F32', 'BOOL']);
    expect(p.entries.find((e) => e.name === 'step')!.shape).toEqual([]);
    expect(p.modelJson.generatedBy).toBe('TensorFlow.js tfjs-layers v4.22.0');
  });

  it('ingests the weights in any chunking with the expected statistics', () => {
    const p = parseModelJson(modelBytes);
    fc.assert(
      fc.property(fc.array(fc.nat(), { maxLength: 20 }), (cuts) => {
        const r = ingest(p.entries, p.weightBytes, weightBytes, cuts);
        expect(r.totalBytes).toBe(expected.weightBytes);
        expect(r.stats.map((s) => [s.name, s.zeros, s.nonFinite])).toEqual(expected.weights.map((x) => [x.name, x.zeros, x.nonFinite]));
      }),
      { numRuns: 100 },
    );
  });

  it('reads the stored weights back and rewrites them through a transform', async () => {
    const p = parseModelJson(modelBytes);
    const path = join(dir, 'weights.bin');
    await writeFile(path, weightBytes);
    const reader = await openTfjsWeights(path, p.entries);
    expect(reader).toBeInstanceOf(FileCheckpointReader);
    for (const x of expected.weights) {
      const f = await reader.readFloat32(x.name);
      if (typeof x.values[0] === 'string') {
        expect(Array.from(new Uint32Array(f.buffer, f.byteOffset, f.length), (b) => b.toString(16).padStart(8, '0'))).toEqual(x.values);
      } else {
        expect(Array.from(f)).toEqual(x.values);
      }
    }
    const same = memorySink();
    await writeCheckpointLike(reader, same.sink);
    expect(Array.from(same.bytes())).toEqual(Array.from(weightBytes));

    const halved = memorySink();
    const seen: string[] = [];
    await writeCheckpointLike(reader, halved.sink, {
      format: 'tfjs-weights',
      transform: (name, d) => {
        seen.push(name);
        return d.map((v) => v / 2);
      },
    });
    await reader.close();
    // Only float tensors pass through the transform; the int32 and bool bytes are copied.
    expect(seen).toEqual(['dense_1/kernel', 'dense_1/bias', 'dense_2/kernel']);
    const out = halved.bytes();
    expect(out.byteLength).toBe(weightBytes.byteLength);
    expect(Array.from(new Float32Array(out.slice(0, 24).buffer))).toEqual([0.25, 0, -0.625, -0, 1, 4]);
    expect(Array.from(out.subarray(32, 36))).toEqual(Array.from(weightBytes.subarray(32, 36)));
    expect(Array.from(out.subarray(44))).toEqual([1, 0, 1]);
  });

  it('gives a download model.json with one weights path and the same weights in order', () => {
    const p = parseModelJson(modelBytes);
    const d = modelJsonForDownload(p.modelJson, 'model.weights.bin');
    expect(d.weightsManifest).toEqual([{ paths: ['model.weights.bin'], weights: p.modelJson.weightsManifest.flatMap((g) => g.weights) }]);
    expect(d.modelTopology).toEqual(p.modelJson.modelTopology);
    expect(d.format).toBe('layers-model');
    // The original is untouched, and the result parses back to the same layout.
    expect(p.modelJson.weightsManifest).toHaveLength(2);
    const again = parseModelJson(enc(d));
    expect(again.entries).toEqual(p.entries);
  });
});

describe('bad model.json is a CoreInputError that says what is wrong', () => {
  const cases: [string, Uint8Array, RegExp, number?][] = [
    ['not JSON', enc('{"modelTopology": {'), /model.json is not valid JSON/],
    ['not UTF-8', new Uint8Array([0x7b, 0xff, 0x7d]), /not valid UTF-8/],
    ['not an object', enc('[1]'), /not a JSON object/],
    ['no topology', enc({ weightsManifest: [] }), /no modelTopology object/],
    ['unknown format', model([], { format: 'saved-model' }), /format "saved-model"; supported are layers models/, 422],
    ['no manifest', enc({ modelTopology: {} }), /no weightsManifest list/],
    ['group not an object', model([5]), /weightsManifest\[0\] is not an object/],
    ['no paths', model([{ weights: [] }]), /weightsManifest\[0\].paths is not a non-empty list/],
    ['weights not a list', model([{ paths: ['a'] }]), /weightsManifest\[0\].weights is not a list/],
    ['unknown quantization', model([group([w('k', [2], 'float32', { quantization: { dtype: 'uint4', scale: 1, min: 0 } })])]), /weight k has quantization dtype "uint4"/, 422],
    ['empty weights group', model([group([])]), /weightsManifest\[0\].weights is empty/],
    ['string dtype', model([group([w('k', [2], 'string')])]), /weight k has dtype "string"; supported are float32, int32 and bool/, 422],
    ['duplicate weight name', model([group([w('k')]), group([w('k')], ['b.bin'])]), /weight k is listed twice/],
    ['no weight name', model([group([w('')])]), /weights\[0\] has no name/],
    ['parent segment', model([group([w('k')], ['../secret.bin'])]), /has a "\.\." segment/],
    ['inner parent segment', model([group([w('k')], ['a/../../b.bin'])]), /"\.\." segment/],
    ['absolute path', model([group([w('k')], ['/etc/passwd'])]), /is absolute/],
    ['backslash', model([group([w('k')], ['..\\x.bin'])]), /contains a backslash/],
    ['empty path', model([group([w('k')], [''])]), /not a non-empty string/],
    ['empty segment', model([group([w('k')], ['a//b.bin'])]), /empty segment/],
    ['url', model([group([w('k')], ['https://evil.example/w.bin'])]), /URL scheme or drive letter/],
    ['drive letter', model([group([w('k')], ['C:w.bin'])]), /URL scheme or drive letter/],
    ['path listed twice', model([group([w('k')], ['a.bin']), group([w('j')], ['a.bin'])]), /weight path "a.bin" is listed twice/],
    ['negative dimension', model([group([w('k', [-1])])]), /weight k: shape \[-1\] is not a list of non-negative integers/],
    ['fractional dimension', model([group([w('k', [0.5])])]), /shape \[0.5\]/],
    ['shape not a list', model([group([w('k', 3)])]), /shape 3/],
    ['overflowing shape', model([group([w('k', [2 ** 26, 2 ** 26, 2 ** 26])])]), /safe size/],
    ['nesting deeper than 128', enc(`{"modelTopology":{"x":${'['.repeat(200)}${']'.repeat(200)}},"weightsManifest":[]}`), /nests 202 levels deep, more than the limit of 128/],
    ['duplicate JSON key', enc('{"modelTopology":{},"weightsManifest":[],"modelTopology":{}}'), /has the key "modelTopology" twice/],
  ];
  it.each(cases)('%s', (_label, bytes, message, status) => {
    const e = expectCoreError(() => parseModelJson(bytes), MODEL, message);
    expect(e.status).toBe(status ?? 400);
  });

  it('refuses a model.json over the byte limit with 413', () => {
    const e = expectCoreError(() => parseModelJson(modelBytes, { maxBytes: 100 }), MODEL, /more than the limit of 100/);
    expect(e.status).toBe(413);
  });

  it('accepts the model.json tf.io.http posts (one group, path "./model.weights.bin")', () => {
    const posted = {
      modelTopology: { class_name: 'Sequential', config: { name: 'seq', layers: [] }, keras_version: 'tfjs-layers 4.22.0', backend: 'tensor_flow.js' },
      format: 'layers-model',
      generatedBy: 'TensorFlow.js tfjs-layers v4.22.0',
      convertedBy: null,
      weightsManifest: [{ paths: ['./model.weights.bin'], weights: [w('dense_Dense1/kernel', [784, 10]), w('dense_Dense1/bias', [10])] }],
    };
    const p = parseModelJson(enc(posted));
    expect(p.weightPaths).toEqual(['./model.weights.bin']);
    expect(p.weightBytes).toBe(7850 * 4);
  });

  it('accepts a model without weights and keeps unusual names as they are', () => {
    expect(parseModelJson(model([])).entries).toEqual([]);
    const p = parseModelJson(model([group([w('0'), w('__proto__'), w('dense/kernel:0 ü')], ['sub/dir/w.bin'])]));
    expect(p.entries.map((e) => e.name)).toEqual(['0', '__proto__', 'dense/kernel:0 ü']);
  });
});

describe('WeightsIngest', () => {
  const p = parseModelJson(model([group([w('a', [2]), w('b', [3], 'int32'), w('c', [1], 'bool')])]));

  it('refuses a body shorter or longer than the manifest names, in the same words', () => {
    expect(p.weightBytes).toBe(21);
    expectCoreError(() => ingest(p.entries, p.weightBytes, new Uint8Array(20)), WEIGHTS, /^the weights manifest names 21 bytes, the upload had 20$/, { expectedBytes: 21, actualBytes: 20 });
    expectCoreError(() => ingest(p.entries, p.weightBytes, new Uint8Array(22)), WEIGHTS, /^the weights manifest names 21 bytes, the upload had more$/);
    const i = new WeightsIngest(p.entries, p.weightBytes);
    i.push(new Uint8Array(21));
    expect(() => i.push(new Uint8Array(1))).toThrow(CoreInputError);
    expect(() => i.finish()).toThrow(/had more/);
  });

  it('counts zeros per weight (±0 for floats, all-zero bytes for int32 and bool)', () => {
    const bytes = concatBytes(new Uint8Array(new Float32Array([-0, Number.POSITIVE_INFINITY]).buffer), new Uint8Array(new Int32Array([0, 256, 0]).buffer), new Uint8Array([0]));
    const r = ingest(p.entries, p.weightBytes, bytes, [1, 5, 9, 13]);
    expect(r.stats.map((s) => [s.name, s.size, s.zeros, s.nonFinite])).toEqual([
      ['a', 2, 1, 1],
      ['b', 3, 2, 0],
      ['c', 1, 1, 0],
    ]);
  });

  it('never throws anything but a CoreInputError, and chunking never changes the result (fuzz)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), fc.array(fc.nat(), { maxLength: 10 }), fc.array(fc.nat(), { maxLength: 10 }), (bytes, a, b) => {
        expect(outcome(() => ingest(p.entries, p.weightBytes, bytes, a))).toEqual(outcome(() => ingest(p.entries, p.weightBytes, bytes, b)));
      }),
      { numRuns: 500 },
    );
  });
});

describe('TfjsWeightsWriter', () => {
  it('writes the raw concatenation and refuses dtypes tfjs weights cannot hold', async () => {
    const out = memorySink();
    const writer = new TfjsWeightsWriter([{ name: 'k', dtype: 'F32', shape: [2] }, { name: 'i', dtype: 'I32', shape: [1] }], out.sink);
    await writer.writeTensor('k', new Float32Array([1, 2]));
    await writer.writeTensor('i', new Uint8Array([7, 0, 0, 0]));
    await writer.finish();
    expect(Array.from(out.bytes())).toEqual([0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 7, 0, 0, 0]);
    expect(() => new TfjsWeightsWriter([{ name: 'h', dtype: 'F16', shape: [1] }], out.sink)).toThrow(/only float32, int32 and bool/);
  });
});

describe('fuzzing parseModelJson: never anything but a CoreInputError', () => {
  it('random bytes and random JSON', () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 100 }), fc.json({ maxDepth: 4 }).map(enc)), (bytes) => {
        outcome(() => parseModelJson(bytes));
      }),
      { numRuns: 500 },
    );
  });

  it('mutated valid model.json files (spliced text, random manifests)', () => {
    const text = new TextDecoder().decode(modelBytes);
    const anyWeight = fc.record(
      { name: fc.oneof(fc.string({ maxLength: 4 }), fc.integer()), shape: fc.oneof(fc.array(fc.integer({ min: -1, max: 2 ** 30 }), { maxLength: 3 }), fc.jsonValue({ maxDepth: 1 })), dtype: fc.oneof(fc.constantFrom('float32', 'int32', 'bool', 'string'), fc.jsonValue({ maxDepth: 0 })) },
      { requiredKeys: [] },
    );
    const manifest = fc.array(fc.record({ paths: fc.oneof(fc.array(fc.string({ maxLength: 6 }), { maxLength: 2 }), fc.jsonValue({ maxDepth: 1 })), weights: fc.array(anyWeight, { maxLength: 3 }) }, { requiredKeys: [] }), { maxLength: 3 });
    fc.assert(
      fc.property(
        fc.oneof(
          fc.tuple(fc.nat(), fc.nat({ max: 30 }), fc.oneof(fc.json({ maxDepth: 2 }), fc.string({ maxLength: 8 }))).map(([at, cut, ins]) => {
            const i = at % text.length;
            return enc(text.slice(0, i) + ins + text.slice(i + cut));
          }),
          manifest.map((m) => model(m)),
        ),
        (bytes) => {
          const r = outcome(() => parseModelJson(bytes));
          if (r.ok) {
            // Whatever was accepted is internally consistent.
            let end = 0;
            for (const e of r.value.entries) {
              expect(e.byteOffset).toBe(end);
              end += e.byteLength;
            }
            expect(end).toBe(r.value.weightBytes);
            expect(new Set(r.value.entries.map((e) => e.name)).size).toBe(r.value.entries.length);
            const d: TfjsModelJson = modelJsonForDownload(r.value.modelJson, 'w.bin');
            expect(parseModelJson(enc(d)).entries).toEqual(r.value.entries);
          }
        },
      ),
      { numRuns: 800 },
    );
  });
});

describe('openTfjsWeights', () => {
  it('refuses a stored file whose size does not match the manifest', async () => {
    const p = parseModelJson(modelBytes);
    const path = join(dir, 'short.bin');
    await writeFile(path, weightBytes.subarray(1));
    await expect(openTfjsWeights(path, p.entries)).rejects.toThrow(/names 47 bytes, the weights file has 46/);
  });
});
