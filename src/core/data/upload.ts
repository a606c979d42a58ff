import { CoreInputError } from '../errors.js';
import { checkSeed, deriveSeed } from '../random.js';
import type { ImageDataset } from './dataset.js';
import { parseIdxImages, parseIdxLabels } from './idx.js';
import { type NpyArray, parseNpz } from './npz.js';
import { range, SEED_TAG, stratifiedHoldout } from './splits.js';

/**
 * Uploaded datasets. Every format (IDX pair, npz, and the safetensors variant the integrator adds) ends in
 * `datasetFromArrays`, the one place where counts, labels, shapes, limits and splits are checked and made.
 */

export interface DatasetLimits {
  /** Largest size of the image data in bytes (uploads and the decompressed npz arrays). */
  maxBytes: number;
  maxSamples: number;
  maxClasses: number;
  /** Largest h·w·c of one sample. */
  maxSampleSize: number;
}

export const DEFAULT_DATASET_LIMITS: Readonly<DatasetLimits> = {
  maxBytes: 1 << 30,
  maxSamples: 2_000_000,
  maxClasses: 10_000,
  maxSampleSize: 1 << 20,
};

/** Labels as they come from a parser: any integer typed array (int64 from numpy included) or plain numbers. */
export type LabelInput = ArrayLike<number> | BigInt64Array | BigUint64Array;

export interface SplitOptions {
  /** Fraction of the samples held out as test when the upload has no separate test arrays. Default 1/7. */
  testFraction?: number;
  /** Fraction of train held out as val. Default 0.1. */
  valFraction?: number;
  /** Seed of the stratified holdouts. Default 0. */
  seed?: number;
  limits?: Partial<DatasetLimits>;
}

export interface ArraysInput extends SplitOptions {
  id: string;
  /** N × … samples, row-major; float32 is used as is (it must be finite), uint8 is scaled by 1/255 when batched. */
  x: Uint8Array | Float32Array;
  /** N×H×W, N×H×W×C, or N×D (a vector, treated as D×1×1). */
  xShape: readonly number[];
  y: LabelInput;
  xTest?: Uint8Array | Float32Array;
  xTestShape?: readonly number[];
  yTest?: LabelInput;
  /** Number of classes; default max label + 1. Labels must lie in [0, classes). */
  classes?: number;
}

const DEFAULT_TEST_FRACTION = 1 / 7;
const DEFAULT_VAL_FRACTION = 0.1;

function invalid(message: string, details: Record<string, unknown> = {}, status: 400 | 413 | 422 = 422): CoreInputError {
  return new CoreInputError(status === 413 ? 'dataset-too-large' : 'invalid-dataset', message, details, status);
}

function sampleShape(shape: readonly number[], what: string): [number, number, number] {
  if (!shape.every((d) => Number.isSafeInteger(d) && d > 0)) {
    throw invalid(`${what} has an invalid shape [${shape.join(', ')}] (dimensions must be positive integers)`, { shape });
  }
  if (shape.length === 2) return [shape[1], 1, 1];
  if (shape.length === 3) return [shape[1], shape[2], 1];
  if (shape.length === 4) return [shape[1], shape[2], shape[3]];
  throw invalid(`${what} must be N×D, N×H×W or N×H×W×C, got shape [${shape.join(', ')}]`, { shape });
}

function checkImages(x: Uint8Array | Float32Array, shape: readonly number[], what: string, limits: DatasetLimits): [number, number, number] {
  if (!(x instanceof Uint8Array) && !(x instanceof Float32Array)) throw invalid(`${what} must be uint8 or float32`);
  const s = sampleShape(shape, what);
  const size = s[0] * s[1] * s[2];
  if (size > limits.maxSampleSize) {
    throw invalid(`${what}: one sample has ${size} values, more than the limit ${limits.maxSampleSize}`, { sampleSize: size }, 413);
  }
  if (shape[0] * size !== x.length) {
    throw invalid(`${what}: shape [${shape.join(', ')}] needs ${shape[0] * size} values, got ${x.length}`, { shape, length: x.length });
  }
  if (x instanceof Float32Array) {
    for (let i = 0; i < x.length; i++) {
      if (!Number.isFinite(x[i])) throw invalid(`${what} holds a non-finite value (${x[i]}) at flat index ${i}`, { index: i });
    }
  }
  return s;
}

/** Converts labels to numbers, checking they are integers ≥ 0; returns their maximum. */
function labelMax(y: LabelInput, what: string): number {
  let max = -1;
  for (let i = 0; i < y.length; i++) {
    const raw = y[i];
    const v = typeof raw === 'bigint' ? (raw <= BigInt(Number.MAX_SAFE_INTEGER) && raw >= 0n ? Number(raw) : -1) : raw;
    if (!Number.isInteger(v) || v < 0) {
      throw invalid(`${what}[${i}] = ${String(raw)} is not a non-negative integer class label`, { index: i, label: String(raw) });
    }
    if (v > max) max = v;
  }
  return max;
}

/** The common, validated entry point of uploaded datasets; `x` is kept (not copied) when there is no test part. */
export function datasetFromArrays(input: ArraysInput): ImageDataset {
  const limits: DatasetLimits = { ...DEFAULT_DATASET_LIMITS, ...input.limits };
  const seed = checkSeed(input.seed ?? 0);
  const hasTest = input.xTest !== undefined || input.yTest !== undefined || input.xTestShape !== undefined;
  if (hasTest && (input.xTest === undefined || input.yTest === undefined || input.xTestShape === undefined)) {
    throw invalid('test arrays come as a pair: x_test and y_test (with its shape) are both needed');
  }
  const nTrain = input.xShape[0];
  const nTest = hasTest ? input.xTestShape![0] : 0;
  const total = nTrain + nTest;
  const bytes = input.x.byteLength + (input.xTest?.byteLength ?? 0);
  if (total > limits.maxSamples) throw invalid(`${total} samples exceed the limit of ${limits.maxSamples}`, { samples: total }, 413);
  if (bytes > limits.maxBytes) throw invalid(`image data of ${bytes} bytes exceeds the limit of ${limits.maxBytes}`, { bytes }, 413);
  const inputShape = checkImages(input.x, input.xShape, 'x', limits);
  if (input.y.length !== nTrain) throw invalid(`x has ${nTrain} samples but y has ${input.y.length} labels`, { x: nTrain, y: input.y.length });
  let max = labelMax(input.y, 'y');
  if (hasTest) {
    const ts = checkImages(input.xTest!, input.xTestShape!, 'x_test', limits);
    if (ts.join() !== inputShape.join()) {
      throw invalid(`x_test samples are ${ts.join('×')} but x samples are ${inputShape.join('×')}`, { x: inputShape, xTest: ts });
    }
    if (input.xTest!.constructor !== input.x.constructor) throw invalid('x and x_test must have the same dtype');
    if (input.yTest!.length !== nTest) {
      throw invalid(`x_test has ${nTest} samples but y_test has ${input.yTest!.length} labels`, { x: nTest, y: input.yTest!.length });
    }
    max = Math.max(max, labelMax(input.yTest!, 'y_test'));
  }
  const classes = input.classes ?? max + 1;
  if (!Number.isSafeInteger(classes) || classes < 2) throw invalid(`a classification dataset needs at least 2 classes, got ${classes}`, { classes });
  if (classes > limits.maxClasses) throw invalid(`${classes} classes exceed the limit of ${limits.maxClasses}`, { classes }, 413);
  if (max >= classes) throw invalid(`label ${max} is out of range for ${classes} classes (labels must be in [0, ${classes}))`, { classes, label: max });

  const y = classes <= 256 ? new Uint8Array(total) : new Int32Array(total);
  for (let i = 0; i < nTrain; i++) y[i] = Number(input.y[i]);
  for (let i = 0; i < nTest; i++) y[nTrain + i] = Number(input.yTest![i]);
  let x = input.x;
  if (hasTest) {
    x = input.x instanceof Uint8Array ? new Uint8Array(input.x.length + input.xTest!.length) : new Float32Array(input.x.length + input.xTest!.length);
    x.set(input.x);
    x.set(input.xTest!, input.x.length);
  }

  let trainAll: Uint32Array;
  let test: Uint32Array;
  if (hasTest) {
    trainAll = range(nTrain);
    test = range(nTest, nTrain);
  } else {
    const f = input.testFraction ?? DEFAULT_TEST_FRACTION;
    if (!(f > 0 && f < 1)) throw invalid(`testFraction must be in (0, 1) when the upload has no x_test/y_test, got ${f}`, { testFraction: f }, 400);
    if (nTrain < 2) throw invalid(`need at least 2 samples to hold out a test split, got ${nTrain}`);
    const s = stratifiedHoldout(range(nTrain), y, classes, f, deriveSeed(seed, SEED_TAG.test));
    trainAll = s.kept;
    test = s.heldOut;
  }
  const vf = input.valFraction ?? DEFAULT_VAL_FRACTION;
  if (!(vf >= 0 && vf < 1)) throw invalid(`valFraction must be in [0, 1), got ${vf}`, { valFraction: vf }, 400);
  const v = stratifiedHoldout(trainAll, y, classes, vf, deriveSeed(seed, SEED_TAG.val));
  if (v.kept.length === 0) throw invalid('the train split is empty');
  return { id: input.id, inputShape, classes, x, y, splits: { train: v.kept, val: v.heldOut, test } };
}

export interface IdxUpload extends SplitOptions {
  id: string;
  images: Uint8Array;
  labels: Uint8Array;
  testImages?: Uint8Array;
  testLabels?: Uint8Array;
  classes?: number;
}

/** An IDX images + labels pair (MNIST's format), with an optional test pair. */
export function datasetFromIdx(u: IdxUpload): ImageDataset {
  if ((u.testImages === undefined) !== (u.testLabels === undefined)) throw invalid('test IDX files come as a pair: images and labels');
  const a = parseIdxImages(u.images, 'images');
  const l = parseIdxLabels(u.labels, 'labels');
  const t = u.testImages ? parseIdxImages(u.testImages, 'test images') : undefined;
  const tl = u.testLabels ? parseIdxLabels(u.testLabels, 'test labels') : undefined;
  return datasetFromArrays({
    ...u,
    x: a.x,
    xShape: a.shape,
    y: l,
    xTest: t?.x,
    xTestShape: t?.shape,
    yTest: tl,
  });
}

export interface NpzUpload extends SplitOptions {
  id: string;
  bytes: Uint8Array;
  classes?: number;
}

const NPZ_NAMES = ['x', 'y', 'x_test', 'y_test'] as const;

function npzImages(a: NpyArray, name: string): Uint8Array | Float32Array {
  if (a.dtype === 'uint8' || a.dtype === 'float32') return a.data as Uint8Array | Float32Array;
  // float64 is numpy's default float; narrowing it here spares users an astype call.
  if (a.dtype === 'float64') return Float32Array.from(a.data as Float64Array);
  throw invalid(`npz array '${name}' must be uint8 or float32 (or float64), got ${a.dtype}`, { array: name, dtype: a.dtype });
}

function npzLabels(a: NpyArray, name: string): LabelInput {
  if (a.shape.length !== 1) throw invalid(`npz array '${name}' must be 1-D (N labels), got shape (${a.shape.join(', ')})`, { shape: a.shape });
  if (a.dtype === 'bool') throw invalid(`npz array '${name}' must hold integer labels, got bool`);
  return a.data as LabelInput;
}

/** An `.npz` with `x` and `y`, and optionally `x_test` and `y_test`; other arrays are ignored. */
export function datasetFromNpz(u: NpzUpload): ImageDataset {
  const limits: DatasetLimits = { ...DEFAULT_DATASET_LIMITS, ...u.limits };
  // Bounds on the inflated arrays before any is inflated: images may be float64 (narrowed to float32
  // later, so twice maxBytes), labels int64 (8 bytes a sample), plus npy headers.
  const maxEntryBytes = Math.max(2 * limits.maxBytes, 8 * limits.maxSamples) + 65_536;
  const maxTotalBytes = 2 * limits.maxBytes + 8 * limits.maxSamples + 4 * 65_536;
  const { arrays } = parseNpz(u.bytes, NPZ_NAMES, { maxEntryBytes, maxTotalBytes, maxEntries: 1024 });
  for (const k of ['x', 'y'] as const) {
    if (!arrays.has(k)) throw invalid(`npz has no array '${k}' (expected x, y and optionally x_test, y_test)`, { missing: k }, 400);
  }
  const x = arrays.get('x')!;
  const xt = arrays.get('x_test');
  const yt = arrays.get('y_test');
  if ((xt === undefined) !== (yt === undefined)) throw invalid('npz test arrays come as a pair: x_test and y_test');
  return datasetFromArrays({
    ...u,
    limits,
    x: npzImages(x, 'x'),
    xShape: x.shape,
    y: npzLabels(arrays.get('y')!, 'y'),
    xTest: xt && npzImages(xt, 'x_test'),
    xTestShape: xt?.shape,
    yTest: yt && npzLabels(yt, 'y_test'),
  });
}
