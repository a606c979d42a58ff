/** Tests of `merge.ts` (mergeCheckpoints) and of the check it runs first, `validate.ts` (validateCandidates). */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memorySink } from '../../../test/fixtures/checkpoint/helpers.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../checkpoint/dtype.js';
import { FileCheckpointReader } from '../checkpoint/file-reader.js';
import { MemoryCheckpoint } from '../checkpoint/memory.js';
import { openSafetensors, SafetensorsWriter } from '../checkpoint/safetensors.js';
import { writeCheckpointLike } from '../checkpoint/write-like.js';
import { CoreInputError } from '../errors.js';
import { maskHash } from '../masks/compare.js';
import { impliedMask } from '../masks/implied.js';
import { isKept, type Mask } from '../masks/mask.js';
import { Xoshiro128 } from '../random.js';
import type { CheckpointReader, DType } from '../tensors.js';
import { mergeCheckpoints } from './merge.js';
import { type CandidateMismatch, validateCandidates } from './validate.js';

interface T {
  name: string;
  dtype: DType;
  shape: number[];
  /** Float values (encoded into dtype when written) or raw bytes (integer tensors). */
  data: Float32Array | Uint8Array;
}

let dir: string;
let counter = 0;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sparsoup-soups-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function safetensorsBytes(tensors: T[], metadata: Record<string, string> = {}): Promise<Uint8Array> {
  const { sink, bytes } = memorySink();
  const w = new SafetensorsWriter(tensors, metadata, sink);
  for (const t of tensors) await w.writeTensor(t.name, t.data);
  await w.finish();
  return bytes();
}

async function toFile(bytes: Uint8Array): Promise<string> {
  const path = join(dir, `c${counter++}.safetensors`);
  await writeFile(path, bytes);
  return path;
}

async function openAll(models: T[][], metadata?: Record<string, string>) {
  return Promise.all(models.map(async (m) => openSafetensors(await toFile(await safetensorsBytes(m, metadata)))));
}

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
const i64 = (values: number[]) => new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer);

/** Kept/pruned pattern shared by all candidates: about 70 % pruned, deterministic per tensor. */
function sharedKept(name: string, n: number): boolean[] {
  const r = new Xoshiro128(name.length * 1000 + n);
  return Array.from({ length: n }, () => r.uniform() > 0.7);
}

/**
 * A small model with every kind of tensor a soup meets: pruned F32 kernels (one larger than a 4 KiB
 * chunk), batch-norm vectors, an I64 step counter, pruned F16 and F64 kernels, a BF16 bias and an
 * empty tensor. Candidate `seed` differs from the others only at kept positions.
 */
function model(seed: number, opts: { negativeZeros?: boolean } = {}): T[] {
  const r = new Xoshiro128(seed + 1);
  const float = (name: string, dtype: DType, shape: number[], prunable: boolean): T => {
    const n = size(shape);
    const kept = prunable ? sharedKept(name, n) : new Array(n).fill(true);
    const data = Float32Array.from({ length: n }, (_, i) => {
      if (!kept[i]) return opts.negativeZeros && i % 2 ? -0 : 0;
      const base = Math.sin(i * 0.37 + name.length) * 2;
      return base + (r.uniform() - 0.5) * 0.1;
    });
    return { name, dtype, shape, data };
  };
  return [
    float('conv1.weight', 'F32', [8, 3, 5, 5], true),
    float('bn1.weight', 'F32', [8], false),
    float('bn1.bias', 'F32', [8], false),
    float('bn1.running_var', 'F32', [8], false),
    { name: 'bn1.num_batches_tracked', dtype: 'I64', shape: [], data: i64([1234]) },
    float('layer1.conv.weight', 'F32', [33, 70], true),
    float('head.weight', 'F16', [10, 13], true),
    float('head.bias', 'BF16', [9], false),
    // Starts 18 bytes after an aligned offset: an unaligned float32 tensor in the file.
    float('proj.weight', 'F32', [6, 5], true),
    float('empty.weight', 'F32', [0, 4], true),
    float('fc.weight', 'F64', [5, 7], true),
  ];
}

async function soupOf(readers: CheckpointReader[], weights: number[] | null, opts: Parameters<typeof mergeCheckpoints>[3] = {}) {
  const { sink, bytes } = memorySink();
  const result = await mergeCheckpoints(readers, weights, sink, opts);
  return { result, bytes: bytes() };
}

async function closeAll(readers: CheckpointReader[]) {
  await Promise.all(readers.map((r) => r.close()));
}

/** Catches the CoreInputError an async call throws. */
async function coreError(p: Promise<unknown>): Promise<CoreInputError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CoreInputError) return err;
    throw err;
  }
  throw new Error('expected a CoreInputError');
}

const mismatches = (e: CoreInputError) => e.details.mismatches as CandidateMismatch[];

describe('mergeCheckpoints: invariants', () => {
  it('the soup of identical models is that model, byte for byte (F32, F16, BF16, F64, I64, empty)', async () => {
    const same = model(1);
    const readers = await openAll([same, same, same], { format: 'pt' });
    const reference = memorySink();
    await writeCheckpointLike(readers[0], reference.sink);
    for (const [chunkBytes, io, simd] of [[4096, 'sync', true], [4096, 'async', true], [1 << 20, 'sync', true], [4096, 'sync', false]] as const) {
      const { bytes, result } = await soupOf(readers, null, { chunkBytes, io, simd });
      const ref = reference.bytes();
      const at = bytes.findIndex((b, i) => b !== ref[i]);
      expect(at, `${chunkBytes} ${io} ${simd}: first differing byte of ${ref.byteLength}`).toBe(-1);
      expect(result.bytesWritten).toBe(bytes.byteLength);
      expect(result.simd).toBe(simd);
    }
    await closeAll(readers);
  });

  it('identical models through MemoryCheckpoint (the non-file path) give the same bytes as through files', async () => {
    const floats = model(2).filter((t) => t.dtype === 'F32');
    const mem = [0, 1, 2].map(() => new MemoryCheckpoint(floats.map((t) => ({ name: t.name, shape: t.shape, data: (t.data as Float32Array).slice() }))));
    const files = await openAll([floats, floats, floats]);
    const viaFiles = await soupOf(files, null, { chunkBytes: 4096 });
    for (const io of ['sync', 'async'] as const) {
      const viaMemory = await soupOf(mem, null, { format: 'safetensors', chunkBytes: 4096, io });
      expect(Buffer.from(viaMemory.bytes).equals(Buffer.from(viaFiles.bytes))).toBe(true);
    }
    // Mixed: a file reader and memory readers in one merge.
    const mixed = await soupOf([files[0], mem[1], mem[2]], null, { chunkBytes: 4096, io: 'async' });
    expect(Buffer.from(mixed.bytes).equals(Buffer.from(viaFiles.bytes))).toBe(true);
    await closeAll(files);
  });

  it('the uniform soup equals a hand-written mean, and its zero pattern is the shared mask', async () => {
    const models = [model(1), model(2, { negativeZeros: true }), model(3)];
    const readers = await openAll(models);
    const { bytes } = await soupOf(readers, null, { chunkBytes: 4096 });
    const viaAsync = await soupOf(readers, null, { chunkBytes: 8192, io: 'async' });
    expect(Buffer.from(viaAsync.bytes).equals(Buffer.from(bytes))).toBe(true);
    // The plain JS kernels (hosts without WebAssembly SIMD) write the same bytes.
    const viaJs = await soupOf(readers, null, { chunkBytes: 4096, simd: false });
    expect(Buffer.from(viaJs.bytes).equals(Buffer.from(bytes))).toBe(true);
    const soup = await openSafetensors(await toFile(bytes));
    for (const t of models[0]) {
      if (t.dtype === 'I64' || size(t.shape) === 0) continue;
      const inputs = await Promise.all(readers.map((r) => r.readFloat32(t.name)));
      const got = await soup.readFloat32(t.name);
      const kept = sharedKept(t.name, size(t.shape));
      for (let i = 0; i < got.length; i++) {
        // Weighted sum in double, rounded once to float32, then to the stored dtype. (The F64
        // inputs hold float32 values, so reading them as float32 loses nothing.)
        let mean = 0;
        for (const x of inputs) mean += (1 / 3) * x[i];
        let want = Math.fround(mean);
        if (t.dtype === 'F16') want = f16ToF32(f32ToF16(want));
        if (t.dtype === 'BF16') want = bf16ToF32(f32ToBf16(want));
        const prunable = t.shape.length >= 2;
        if (prunable && !kept[i]) expect(Object.is(got[i], 0), `${t.name}[${i}] is +0`).toBe(true);
        else expect(got[i], `${t.name}[${i}]`).toBe(want);
      }
    }
    // Zero pattern: the soup's implied mask is the candidates' shared mask.
    expect(maskHash(await impliedMask(soup))).toBe(maskHash(await impliedMask(readers[0])));
    await closeAll([...readers, soup]);
  });

  it('F64 tensors are averaged and written in float64', async () => {
    const models = [model(1), model(2)];
    const readers = await openAll(models);
    const { bytes } = await soupOf(readers, [1, 3]);
    const soup = await openSafetensors(await toFile(bytes));
    const raw = async (r: CheckpointReader) => {
      const b = await r.readRaw('fc.weight');
      return new Float64Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    };
    const [a, b, s] = [await raw(readers[0]), await raw(readers[1]), await raw(soup)];
    // x₀ + w₁·(x₁ − x₀) (see mergeF64), within an ulp or two of 0.25·a + 0.75·b.
    for (let i = 0; i < s.length; i++) {
      expect(s[i]).toBe(a[i] === 0 ? 0 : a[i] + 0.75 * (b[i] - a[i]));
      expect(Math.abs(s[i] - (0.25 * a[i] + 0.75 * b[i]))).toBeLessThanOrEqual(Math.abs(s[i]) * 2 ** -51);
    }
    await closeAll([...readers, soup]);
  });

  it('pruned positions are written as +0 even where every candidate stores -0 (the mask, not the sign, decides)', async () => {
    const negative = model(4, { negativeZeros: true });
    const readers = await openAll([negative, negative]);
    const { bytes } = await soupOf(readers, null);
    const soup = await openSafetensors(await toFile(bytes));
    const input = await readers[0].readFloat32('layer1.conv.weight');
    const got = await soup.readFloat32('layer1.conv.weight');
    expect(input.some((v) => Object.is(v, -0))).toBe(true);
    for (let i = 0; i < got.length; i++) expect(Object.is(got[i], input[i] === 0 ? 0 : input[i])).toBe(true);
    await closeAll([...readers, soup]);
  });

  it('weighted: weights are normalised, and a zero-weight candidate is never read', async () => {
    const a = model(1);
    const b = model(2);
    const readers = await openAll([a, b]);
    const failing: CheckpointReader = {
      tensors: readers[0].tensors,
      readFloat32: () => Promise.reject(new Error('read a zero-weight candidate')),
      readRaw: () => Promise.reject(new Error('read a zero-weight candidate')),
      close: async () => {},
    };
    const { bytes, result } = await soupOf([readers[0], failing, readers[1]], [2, 0, 6]);
    expect(result.weights).toEqual([0.25, 0, 0.75]);
    const soup = await openSafetensors(await toFile(bytes));
    const x = await readers[0].readFloat32('layer1.conv.weight');
    const y = await readers[1].readFloat32('layer1.conv.weight');
    const got = await soup.readFloat32('layer1.conv.weight');
    for (let i = 0; i < got.length; i++) expect(got[i]).toBe(Math.fround(0.25 * x[i] + 0.75 * y[i]));
    // Scaling every weight changes nothing.
    const scaled = await soupOf(readers, [0.5, 1.5]);
    expect(Buffer.from(scaled.bytes).equals(Buffer.from(bytes))).toBe(true);
    await closeAll([...readers, soup]);
  });

  it('re-applies a given mask: pruned positions become +0 even when a candidate holds noise there', async () => {
    const a = model(1);
    const readers = await openAll([a, model(2)]);
    const mask = await impliedMask(readers[0]);
    // A candidate that revived pruned weights with tiny values (what the mask must undo).
    const noisy = a.map((t) => (t.name === 'conv1.weight' ? { ...t, data: (t.data as Float32Array).map((v) => (v === 0 ? 1e-30 : v)) } : t));
    const [noisyReader] = await openAll([noisy]);
    const { bytes, result } = await soupOf([noisyReader, readers[1]], null, { mask });
    expect(result.maskSource).toBe('given');
    const soup = await openSafetensors(await toFile(bytes));
    const got = await soup.readFloat32('conv1.weight');
    const tm = mask.tensors.find((t) => t.name === 'conv1.weight')!;
    for (let i = 0; i < got.length; i++) if (!isKept(tm, i)) expect(Object.is(got[i], 0)).toBe(true);
    expect(maskHash(await impliedMask(soup))).toBe(maskHash(mask));
    await closeAll([...readers, noisyReader, soup]);
  });

  it('F16 round trip: identical F16 candidates give their exact bytes; a mix rounds once per stored dtype', async () => {
    const half = (seed: number): T[] => [{ name: 'w', dtype: 'F16', shape: [3, 50], data: Float32Array.from({ length: 150 }, (_, i) => (i % 4 === 0 ? 0 : Math.cos(i + seed) * 3)) }];
    const same = await openAll([half(1), half(1)]);
    const input = await same[0].readRaw('w');
    const { bytes } = await soupOf(same, null);
    const soup = await openSafetensors(await toFile(bytes));
    expect(Buffer.from(await soup.readRaw('w')).equals(Buffer.from(input))).toBe(true);
    const mixed = await openAll([half(1), half(2)]);
    const mix = await openSafetensors(await toFile((await soupOf(mixed, null)).bytes));
    const [x, y, got] = [await mixed[0].readFloat32('w'), await mixed[1].readFloat32('w'), await mix.readFloat32('w')];
    for (let i = 0; i < got.length; i++) expect(got[i]).toBe(f16ToF32(f32ToF16(Math.fround(0.5 * x[i] + 0.5 * y[i]))));
    await closeAll([...same, ...mixed, soup, mix]);
  });

  it('writes TensorFlow.js weights, and refuses dtypes they cannot hold', async () => {
    const floats = model(1).filter((t) => t.dtype === 'F32');
    const readers = await openAll([floats, floats]);
    const reference = memorySink();
    await writeCheckpointLike(readers[0], reference.sink, { format: 'tfjs-weights' });
    const { bytes } = await soupOf(readers, null, { format: 'tfjs-weights' });
    expect(Buffer.from(bytes).equals(Buffer.from(reference.bytes()))).toBe(true);
    const withF16 = await openAll([model(1), model(1)]);
    expect((await coreError(soupOf(withF16, null, { format: 'tfjs-weights' }))).code).toBe('invalid-checkpoint');
    await closeAll([...readers, ...withF16]);
  });

  it('reads files whose tensors are not packed alike (one read per piece)', async () => {
    // A raw weights file with 16 bytes of padding between tensors, described by its own layout.
    const tensors = model(5).filter((t) => t.dtype === 'F32');
    const encoded = tensors.map((t) => new Uint8Array((t.data as Float32Array).buffer));
    let offset = 16;
    const entries = tensors.map((t, i) => {
      const e = { name: t.name, dtype: t.dtype, shape: t.shape, byteOffset: offset, byteLength: encoded[i].byteLength };
      offset += encoded[i].byteLength + 16;
      return e;
    });
    const file = new Uint8Array(offset);
    for (const [i, e] of entries.entries()) file.set(encoded[i], e.byteOffset);
    const padded = new FileCheckpointReader(await toFile(file), entries, 'safetensors');
    const [packed] = await openAll([tensors]);
    const viaPadded = await soupOf([padded, packed], null, { chunkBytes: 4096 });
    const viaPacked = await soupOf([packed, packed], null, { chunkBytes: 4096 });
    expect(Buffer.from(viaPadded.bytes).equals(Buffer.from(viaPacked.bytes))).toBe(true);
    await closeAll([padded, packed]);
  });

  it('concurrent merges do not share buffers', async () => {
    const [a, b, c] = await openAll([model(1), model(2), model(3)]);
    const alone = [(await soupOf([a, b], null, { chunkBytes: 4096 })).bytes, (await soupOf([b, c], null, { chunkBytes: 4096 })).bytes];
    const together = await Promise.all([soupOf([a, b], null, { chunkBytes: 4096, io: 'async' }), soupOf([b, c], null, { chunkBytes: 4096, io: 'async' })]);
    expect(together.map((t) => Buffer.from(t.bytes).equals(Buffer.from(alone[together.indexOf(t)])))).toEqual([true, true]);
    await closeAll([a, b, c]);
  });

  it('refuses differing integer tensors with their element count, and layout differences', async () => {
    const other = model(1).map((t) => (t.name === 'bn1.num_batches_tracked' ? { ...t, data: i64([999]) } : t));
    const readers = await openAll([model(1), other]);
    const e = await coreError(soupOf(readers, null));
    expect(e.code).toBe('candidate-mismatch');
    expect(e.status).toBe(422);
    expect(mismatches(e)).toEqual([{ tensor: 'bn1.num_batches_tracked', kind: 'values', candidate: 1, expected: 'I64', differing: 1 }]);
    const [short] = await openAll([model(1).filter((t) => t.name !== 'bn1.bias')]);
    const layout = await coreError(soupOf([readers[0], short], null));
    expect(mismatches(layout)).toEqual([{ tensor: 'bn1.bias', kind: 'missing', candidate: 1 }]);
    await closeAll([...readers, short]);
  });

  it('stops on abort and passes a failing sink error through', async () => {
    const readers = await openAll([model(1), model(2)]);
    const ctl = new AbortController();
    ctl.abort();
    await expect(mergeCheckpoints(readers, null, async () => {}, { signal: ctl.signal })).rejects.toThrow(/abort/i);
    let calls = 0;
    const failing = async () => {
      if (++calls === 2) throw new Error('disk full');
    };
    await expect(mergeCheckpoints(readers, null, failing, { chunkBytes: 4096 })).rejects.toThrow('disk full');
    // The engine went back to the pool intact: the next merge is still right.
    const reference = await soupOf(readers, null, { chunkBytes: 4096 });
    const again = await soupOf(readers, null, { chunkBytes: 4096 });
    expect(Buffer.from(again.bytes).equals(Buffer.from(reference.bytes))).toBe(true);
    await closeAll(readers);
  });
});

describe('validateCandidates', () => {
  it('accepts candidates sharing layout and mask, and returns the shared mask and its hash', async () => {
    const readers = await openAll([model(1), model(2, { negativeZeros: true }), model(3)]);
    const v = await validateCandidates(readers);
    const mask = await impliedMask(readers[0]);
    expect(v.maskHash).toBe(maskHash(mask));
    expect(v.maskHashes).toEqual([v.maskHash, v.maskHash, v.maskHash]);
    expect(maskHash(v.mask as Mask)).toBe(v.maskHash);
    expect(v.tensors.map((t) => t.name)).toEqual(model(1).map((t) => t.name));
    await closeAll(readers);
  });

  it('lists every layout difference of every candidate (missing, extra, order, shape, dtype)', async () => {
    const base = model(1);
    const missingExtra = [...base.filter((t) => t.name !== 'bn1.bias'), { name: 'extra.bias', dtype: 'F32' as DType, shape: [2], data: new Float32Array(2) }];
    const reshaped = base.map((t) => (t.name === 'bn1.weight' ? { ...t, shape: [2, 4] } : t.name === 'head.bias' ? { ...t, dtype: 'F32' as DType } : t));
    const reordered = [base[1], base[0], ...base.slice(2)];
    const readers = await openAll([base, missingExtra, reshaped, reordered]);
    const e = await coreError(validateCandidates(readers));
    expect(e.code).toBe('candidate-mismatch');
    expect(e.status).toBe(422);
    const got = mismatches(e);
    expect(got).toContainEqual({ tensor: 'bn1.bias', kind: 'missing', candidate: 1 });
    expect(got).toContainEqual({ tensor: 'extra.bias', kind: 'extra', candidate: 1 });
    expect(got).toContainEqual({ tensor: 'bn1.weight', kind: 'shape', candidate: 2, expected: [8], actual: [2, 4] });
    expect(got).toContainEqual({ tensor: 'head.bias', kind: 'dtype', candidate: 2, expected: 'BF16', actual: 'F32' });
    // safetensors lists tensors by file offset: the reordered file is a real order difference.
    expect(got).toContainEqual({ tensor: 'conv1.weight', kind: 'order', candidate: 3, position: 0, expected: 'conv1.weight', actual: 'bn1.weight' });
    expect(e.message).toMatch(/candidate 1: .*candidate 2: .*candidate 3: /);
    await closeAll(readers);
  });

  it('reports mask differences per tensor with how many positions differ (mask-mismatch)', async () => {
    const base = model(1);
    const revived = base.map((t) => {
      if (t.name !== 'layer1.conv.weight') return t;
      const data = (t.data as Float32Array).slice();
      const firstKept = data.findIndex((v) => v !== 0);
      let changed = 0;
      for (let i = 0; i < data.length && changed < 5; i++) {
        if (data[i] === 0) {
          data[i] = 0.5; // revived
          changed++;
        }
      }
      data[firstKept] = 0; // and one more pruned
      return { ...t, data };
    });
    const readers = await openAll([base, model(2), revived]);
    const e = await coreError(validateCandidates(readers));
    expect(e.code).toBe('mask-mismatch');
    expect(mismatches(e)).toEqual([{ tensor: 'layer1.conv.weight', kind: 'mask', candidate: 2, differing: 6, keptOnlyInReference: 1, keptOnlyInCandidate: 5 }]);
    await closeAll(readers);
  });

  it('reports differing integer tensors as values', async () => {
    const readers = await openAll([model(1), model(1).map((t) => (t.dtype === 'I64' ? { ...t, data: i64([7]) } : t))]);
    const e = await coreError(validateCandidates(readers));
    expect(mismatches(e)).toEqual([{ tensor: 'bn1.num_batches_tracked', kind: 'values', candidate: 1, expected: 'I64', differing: 1 }]);
    await closeAll(readers);
  });

  it('matching precomputed hashes skip reading float tensors; stale ones fall back to the masks', async () => {
    const readers = await openAll([model(1), model(2)]);
    const real = maskHash(await impliedMask(readers[0]));
    const noFloats = (r: CheckpointReader): CheckpointReader => ({
      tensors: r.tensors,
      readFloat32: () => Promise.reject(new Error('read floats')),
      readRaw: (name, into) => r.readRaw(name, into),
      close: async () => {},
    });
    const v = await validateCandidates(readers.map(noFloats), { maskHashes: ['h', 'h'] });
    expect(v).toMatchObject({ maskHash: 'h', maskHashes: ['h', 'h'], mask: undefined });
    const stale = await validateCandidates(readers, { maskHashes: ['old', real] });
    expect(stale.maskHashes).toEqual([real, real]);
    await closeAll(readers);
  });

  it('refuses zero candidates', async () => {
    expect((await coreError(validateCandidates([]))).code).toBe('no-candidates');
  });
});
