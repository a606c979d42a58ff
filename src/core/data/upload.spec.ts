import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { zipSync } from 'fflate';
import { describe, expect, it } from 'vitest';
import { CoreInputError } from '../errors.js';
import { fillBatch, type ImageDataset } from './dataset.js';
import { encodeIdx } from './idx.js';
import { encodeNpy } from './npz.js';
import { datasetFromArrays, datasetFromIdx, datasetFromNpz } from './upload.js';

const FIX = join(import.meta.dirname, '../../../test/fixtures/data');

function inputError(f: () => unknown, pattern: RegExp, status?: number): CoreInputError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(CoreInputError);
    expect((e as Error).message).toMatch(pattern);
    if (status) expect((e as CoreInputError).status).toBe(status);
    return e as CoreInputError;
  }
  throw new Error('expected a CoreInputError');
}

function checkSplits(ds: ImageDataset, n: number) {
  const { train, val, test } = ds.splits;
  const seen = new Set<number>();
  for (const s of [train, val, test]) for (const i of s) seen.add(i);
  // Disjoint and covering.
  expect(seen.size).toBe(train.length + val.length + test.length);
  expect(seen.size).toBe(n);
}

const images = (n: number, size: number) => Uint8Array.from({ length: n * size }, (_, i) => i % 251);

describe('datasetFromArrays', () => {
  it('builds N×H×W uploads with a stratified 1/7 test and 10 % val', () => {
    const n = 140;
    const y = Int32Array.from({ length: n }, (_, i) => i % 4);
    const ds = datasetFromArrays({ id: 'u1', x: images(n, 9), xShape: [n, 3, 3], y });
    expect(ds.inputShape).toEqual([3, 3, 1]);
    expect(ds.classes).toBe(4);
    expect(ds.y).toBeInstanceOf(Uint8Array);
    expect(ds.splits.test.length).toBe(20);
    expect(ds.splits.val.length).toBe(12);
    expect(ds.splits.train.length).toBe(108);
    checkSplits(ds, n);
    const perClass = [0, 0, 0, 0];
    for (const i of ds.splits.test) perClass[ds.y[i]]++;
    expect(perClass).toEqual([5, 5, 5, 5]);
    // Same seed, same splits; another seed, other splits.
    expect(datasetFromArrays({ id: 'u1', x: images(n, 9), xShape: [n, 3, 3], y }).splits).toEqual(ds.splits);
    expect(datasetFromArrays({ id: 'u1', x: images(n, 9), xShape: [n, 3, 3], y, seed: 1 }).splits.test).not.toEqual(ds.splits.test);
    // The batch helper reads it: pixels scaled by 1/255.
    const xb = new Float32Array(9);
    const yb = new Int32Array(1);
    fillBatch(ds, ds.splits.test, 0, 1, xb, yb);
    expect(xb[0]).toBeCloseTo(ds.x[ds.splits.test[0] * 9] / 255, 6);
    expect(yb[0]).toBe(ds.y[ds.splits.test[0]]);
  });

  it('maps N×D to D×1×1 and N×H×W×C to H×W×C, and honours fractions and classes', () => {
    const v = datasetFromArrays({ id: 'v', x: new Float32Array(20 * 6), xShape: [20, 6], y: new Array(20).fill(0).map((_, i) => i % 2), classes: 5 });
    expect(v.inputShape).toEqual([6, 1, 1]);
    expect(v.classes).toBe(5);
    const c = datasetFromArrays({ id: 'c', x: images(10, 12), xShape: [10, 2, 2, 3], y: [0, 1, 0, 1, 0, 1, 0, 1, 0, 1], testFraction: 0.5, valFraction: 0 });
    expect(c.inputShape).toEqual([2, 2, 3]);
    expect(c.splits.test.length).toBe(5);
    expect(c.splits.val.length).toBe(0);
  });

  it('appends separate test arrays after the training samples', () => {
    const ds = datasetFromArrays({
      id: 't',
      x: images(30, 4),
      xShape: [30, 2, 2],
      y: new Array(30).fill(0).map((_, i) => i % 3),
      xTest: Uint8Array.from({ length: 5 * 4 }, () => 9),
      xTestShape: [5, 2, 2],
      yTest: BigInt64Array.from([0n, 1n, 2n, 0n, 1n]),
    });
    expect(Array.from(ds.splits.test)).toEqual([30, 31, 32, 33, 34]);
    expect(ds.splits.val.length).toBe(3);
    expect(Array.from(ds.x.subarray(30 * 4))).toEqual(new Array(20).fill(9));
    expect(Array.from(ds.y.subarray(30))).toEqual([0, 1, 2, 0, 1]);
    checkSplits(ds, 35);
  });

  it('rejects inconsistent or unusable input with a named reason', () => {
    const base = { id: 'b', x: images(10, 4), xShape: [10, 2, 2], y: [0, 1, 0, 1, 0, 1, 0, 1, 0, 1] };
    inputError(() => datasetFromArrays({ ...base, y: [0, 1] }), /x has 10 samples but y has 2 labels/);
    inputError(() => datasetFromArrays({ ...base, xShape: [10, 2, 3] }), /needs 60 values, got 40/);
    inputError(() => datasetFromArrays({ ...base, xShape: [10, 2, 2, 1, 1] }), /N×D, N×H×W or N×H×W×C/);
    inputError(() => datasetFromArrays({ ...base, xShape: [10, 0, 4] }), /positive integers/);
    inputError(() => datasetFromArrays({ ...base, y: [0, 1, 0, 1, 0, 1, 0, 1, 0, -1] }), /y\[9\] = -1/);
    inputError(() => datasetFromArrays({ ...base, y: [0, 1, 0, 1, 0, 1, 0, 1, 0, 1.5] }), /y\[9\] = 1.5/);
    inputError(() => datasetFromArrays({ ...base, y: [0, 1, 0, 1, 0, 1, 0, 1, 0, 7], classes: 5 }), /label 7 is out of range for 5 classes/);
    inputError(() => datasetFromArrays({ ...base, y: new Array(10).fill(0) }), /at least 2 classes/);
    const nan = new Float32Array(40);
    nan[13] = Number.NaN;
    inputError(() => datasetFromArrays({ ...base, x: nan }), /non-finite value \(NaN\) at flat index 13/);
    inputError(() => datasetFromArrays({ ...base, limits: { maxSamples: 9 } }), /10 samples exceed the limit of 9/, 413);
    inputError(() => datasetFromArrays({ ...base, limits: { maxBytes: 39 } }), /40 bytes exceeds the limit of 39/, 413);
    inputError(() => datasetFromArrays({ ...base, xTest: images(2, 4), xTestShape: [2, 2, 2] }), /x_test and y_test/);
    inputError(() => datasetFromArrays({ ...base, xTest: images(2, 6), xTestShape: [2, 3, 2], yTest: [0, 1] }), /x_test samples are 3×2×1 but x samples are 2×2×1/);
    inputError(() => datasetFromArrays({ ...base, testFraction: 0 }), /testFraction must be in \(0, 1\)/);
    inputError(() => datasetFromArrays({ ...base, seed: 0.5 }), /seed must be a safe integer/);
  });
});

describe('uploaded formats', () => {
  it('an IDX pair (with an optional test pair)', () => {
    const x = images(14, 4);
    const y = Array.from({ length: 14 }, (_, i) => i % 2);
    const ds = datasetFromIdx({ id: 'idx', images: encodeIdx('uint8', [14, 2, 2], x), labels: encodeIdx('uint8', [14], y) });
    expect(ds.splits.test.length).toBe(2);
    expect(Array.from(ds.x)).toEqual(Array.from(x));
    const t = datasetFromIdx({
      id: 'idx2',
      images: encodeIdx('uint8', [14, 2, 2], x),
      labels: encodeIdx('uint8', [14], y),
      testImages: encodeIdx('uint8', [3, 2, 2], images(3, 4)),
      testLabels: encodeIdx('uint8', [3], [1, 0, 1]),
    });
    expect(Array.from(t.splits.test)).toEqual([14, 15, 16]);
    inputError(() => datasetFromIdx({ id: 'e', images: encodeIdx('uint8', [14, 2, 2], x), labels: encodeIdx('uint8', [13], y.slice(1)) }), /14 samples but y has 13/);
    inputError(() => datasetFromIdx({ id: 'e', images: encodeIdx('uint8', [14, 2, 2], x), labels: new Uint8Array(3) }), /labels: too short/);
  });

  it('numpy-written npz files, uint8 images and float vectors with a test part', () => {
    const a = datasetFromNpz({ id: 'n1', bytes: readFileSync(join(FIX, 'uint8-images.npz')) });
    expect(a.inputShape).toEqual([4, 4, 1]);
    expect(a.classes).toBe(3);
    expect(a.x[16 * 5 + 4 * 2 + 1]).toBe(16 * 5 + 9);
    expect(a.y[20]).toBe(20 % 3);
    checkSplits(a, 21);
    const b = datasetFromNpz({ id: 'n2', bytes: readFileSync(join(FIX, 'float-vectors-with-test.npz')) });
    expect(b.inputShape).toEqual([5, 1, 1]);
    expect(b.x).toBeInstanceOf(Float32Array);
    expect(b.classes).toBe(4);
    expect(Array.from(b.splits.test)).toEqual([12, 13, 14, 15, 16, 17, 18, 19]);
    expect(b.x[12 * 5 + 1]).toBeCloseTo(-0.1, 6);
    expect(b.y[12]).toBe(1);
  });

  it('npz: float64 images are narrowed, missing or wrong arrays are named', () => {
    const x64 = encodeNpy('float64', [8, 2], Array.from({ length: 16 }, (_, i) => i / 4));
    const y = encodeNpy('int64', [8], [0, 1, 0, 1, 0, 1, 0, 1]);
    const ds = datasetFromNpz({ id: 'f64', bytes: zipSync({ 'x.npy': x64, 'y.npy': y }) });
    expect(ds.x).toBeInstanceOf(Float32Array);
    expect(ds.x[5]).toBe(1.25);
    inputError(() => datasetFromNpz({ id: 'm', bytes: zipSync({ 'X.npy': x64, 'y.npy': y }) }), /no array 'x'/);
    inputError(() => datasetFromNpz({ id: 'm', bytes: zipSync({ 'x.npy': encodeNpy('int32', [8, 2], new Array(16).fill(1)), 'y.npy': y }) }), /uint8 or float32/);
    inputError(() => datasetFromNpz({ id: 'm', bytes: zipSync({ 'x.npy': x64, 'y.npy': encodeNpy('int64', [4, 2], new Array(8).fill(0)) }) }), /1-D/);
    inputError(() => datasetFromNpz({ id: 'm', bytes: zipSync({ 'x.npy': x64, 'y.npy': y, 'x_test.npy': x64 }) }), /x_test and y_test/);
  });
});
