import { stat } from 'node:fs/promises';
import { CoreInputError } from '../errors.js';
import { DTYPE_BYTES, type DType, type TensorEntry, type TensorStats } from '../tensors.js';
import type { ByteSource } from './byte-source.js';
import { FileCheckpointReader, SourceCheckpointReader } from './file-reader.js';
import { scanJsonKeys } from './json-scan.js';
import { TensorStatsAccumulator } from './stats.js';
import { type ByteSink, layoutTensors, shapeSize, type TensorSpec, TensorStreamWriter } from './tensor-writer.js';
import { parseQuantization, QUANTIZED_BYTES, type SourceWeight, type TfjsQuantization } from './tfjs-quantization.js';

/**
 * TensorFlow.js layers models: `model.json` (topology + weights manifest) plus weight files whose
 * concatenation, in manifest order, holds every weight back to back as little-endian raw bytes.
 */

/** Problem type for a refused model.json. */
export const TFJS_MODEL_ERROR = 'invalid-tfjs-model';
/** Problem type for refused weight bytes. */
export const TFJS_WEIGHTS_ERROR = 'invalid-tfjs-weights';
export const DEFAULT_MAX_MODEL_JSON_BYTES = 64 * 1024 * 1024;
/** Keras topologies nest a few dozen levels at most; far deeper JSON would overflow JSON.stringify. */
export const MAX_MODEL_JSON_DEPTH = 128;

export type TfjsDtype = 'float32' | 'int32' | 'bool';
const TFJS_DTYPES: Readonly<Record<TfjsDtype, DType>> = { float32: 'F32', int32: 'I32', bool: 'BOOL' };

export interface TfjsWeightSpec {
  name: string;
  shape: number[];
  dtype: TfjsDtype;
  [field: string]: unknown;
}

export interface TfjsWeightsGroup {
  paths: string[];
  weights: TfjsWeightSpec[];
}

export interface TfjsModelJson {
  modelTopology: Record<string, unknown>;
  weightsManifest: TfjsWeightsGroup[];
  format?: string;
  [field: string]: unknown;
}

export interface ParsedModelJson {
  modelJson: TfjsModelJson;
  /** Weights with absolute offsets over the concatenation of all weight files in manifest order. */
  entries: TensorEntry[];
  /** Total weight bytes the manifest describes. */
  weightBytes: number;
  /** Every weight file path, in manifest order. */
  weightPaths: string[];
  /** The weights as their bytes lie in the weight files (quantized ones narrower than stored). */
  sourceWeights: SourceWeight[];
  /** Per manifest group: its weight files and the bytes they hold together. */
  groups: { paths: string[]; sourceBytes: number }[];
  /** True when some weight is quantized (the stored weights are then the dequantized ones). */
  quantized: boolean;
  /** A graph model (`format: "graph-model"`, a converted SavedModel): weights and an op graph, no layers. */
  graph: boolean;
}

function bad(message: string, details: Record<string, unknown> = {}, status: 400 | 413 | 422 = 400): CoreInputError {
  return new CoreInputError(TFJS_MODEL_ERROR, message, details, status);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Weight paths are resolved against model.json's folder: refuse anything that could leave it. */
function checkWeightPath(p: unknown, group: number): string {
  const where = { group, path: p };
  if (typeof p !== 'string' || p.length === 0) throw bad(`weightsManifest[${group}]: a weight path is not a non-empty string`, where);
  if (p.includes('\\')) throw bad(`weight path ${JSON.stringify(p)} contains a backslash`, where);
  if (p.includes('\0')) throw bad(`weight path ${JSON.stringify(p)} contains a NUL character`, where);
  if (p.startsWith('/')) throw bad(`weight path ${JSON.stringify(p)} is absolute`, where);
  if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(p)) throw bad(`weight path ${JSON.stringify(p)} has a URL scheme or drive letter`, where);
  // tf.io.http itself writes "./model.weights.bin": "." stays in the folder; ".." and "" do not.
  for (const seg of p.split('/')) {
    if (seg === '..' || seg === '') throw bad(`weight path ${JSON.stringify(p)} has a ${seg === '' ? 'empty' : JSON.stringify(seg)} segment`, where);
  }
  return p;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Parses and validates a layers- or graph-model `model.json`. Quantized weights (uint8, uint16, float16) are
 * accepted: `entries` is the layout once dequantized to float32 (int32 stays int32), `sourceWeights`
 * the layout of the uploaded bytes. String or complex weights, graph models, groups without
 * weights, duplicate weight names and weight paths that leave their folder are refused.
 */
export function parseModelJson(bytes: Uint8Array, opts: { maxBytes?: number } = {}): ParsedModelJson {
  const max = opts.maxBytes ?? DEFAULT_MAX_MODEL_JSON_BYTES;
  if (bytes.byteLength > max) throw bad(`model.json is ${bytes.byteLength} bytes, more than the limit of ${max}`, { limit: max }, 413);
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw bad('model.json is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw bad(`model.json is not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(json)) throw bad('model.json is not a JSON object');
  const scan = scanJsonKeys(text);
  const dup = scan.duplicate;
  if (scan.maxDepth > MAX_MODEL_JSON_DEPTH) throw bad(`model.json nests ${scan.maxDepth} levels deep, more than the limit of ${MAX_MODEL_JSON_DEPTH}`);
  if (dup) throw bad(`model.json has the key ${JSON.stringify(dup.key)} twice${dup.path.length ? ` in ${dup.path.join('.')}` : ''}`, { key: dup.key });
  if (json.format !== undefined && json.format !== 'layers-model' && json.format !== 'graph-model') {
    throw bad(`model.json has format ${JSON.stringify(json.format)}; supported are layers models ("layers-model") and graph models ("graph-model")`, {}, 422);
  }
  if (!isObject(json.modelTopology)) throw bad('model.json has no modelTopology object');
  const manifest = json.weightsManifest;
  if (!Array.isArray(manifest)) throw bad('model.json has no weightsManifest list');

  const entries: TensorEntry[] = [];
  const names = new Set<string>();
  const weightPaths: string[] = [];
  const sourceWeights: SourceWeight[] = [];
  const groups: ParsedModelJson['groups'] = [];
  let offset = 0;
  manifest.forEach((group: unknown, g) => {
    if (!isObject(group)) throw bad(`weightsManifest[${g}] is not an object`, { group: g });
    const { paths, weights } = group;
    if (!Array.isArray(paths) || paths.length === 0) throw bad(`weightsManifest[${g}].paths is not a non-empty list`, { group: g });
    const groupPaths: string[] = [];
    for (const p of paths) {
      const path = checkWeightPath(p, g);
      if (weightPaths.includes(path)) throw bad(`weight path ${JSON.stringify(path)} is listed twice`, { group: g, path });
      weightPaths.push(path);
      groupPaths.push(path);
    }
    if (!Array.isArray(weights)) throw bad(`weightsManifest[${g}].weights is not a list`, { group: g });
    // The converter never writes an empty group; its files would hold nothing.
    if (weights.length === 0) throw bad(`weightsManifest[${g}].weights is empty: a weights group names at least one weight`, { group: g });
    let groupBytes = 0;
    weights.forEach((w: unknown, i) => {
      if (!isObject(w)) throw bad(`weightsManifest[${g}].weights[${i}] is not an object`, { group: g });
      const { name, shape, dtype } = w;
      if (typeof name !== 'string' || name.length === 0) throw bad(`weightsManifest[${g}].weights[${i}] has no name`, { group: g });
      const details = { weight: name };
      if (typeof dtype !== 'string' || !Object.hasOwn(TFJS_DTYPES, dtype)) {
        throw bad(`weight ${name} has dtype ${JSON.stringify(dtype)}; supported are float32, int32 and bool`, details, 422);
      }
      if (names.has(name)) throw bad(`weight ${name} is listed twice`, details);
      names.add(name);
      const size = shapeSize(shape);
      const st = TFJS_DTYPES[dtype as TfjsDtype];
      const byteLength = size === undefined ? Number.NaN : size * DTYPE_BYTES[st];
      if (!Number.isSafeInteger(byteLength) || !Number.isSafeInteger(offset + byteLength)) {
        throw bad(`weight ${name}: shape ${JSON.stringify(shape)} is not a list of non-negative integers with a safe size`, details);
      }
      let quantization: TfjsQuantization | undefined;
      if (w.quantization !== undefined) quantization = parseQuantization(w.quantization, name, dtype as string);
      const sourceLength = quantization ? (size as number) * QUANTIZED_BYTES[quantization.dtype] : byteLength;
      // `+ 0` turns a dimension written as -0 (JSON allows it, e.g. -5e-3241) into 0.
      entries.push({ name, dtype: st, shape: (shape as number[]).map((d) => d + 0), byteOffset: offset, byteLength });
      sourceWeights.push({ name, dtype: dtype as TfjsDtype, sourceLength, ...(quantization ? { quantization } : {}) });
      offset += byteLength;
      groupBytes += sourceLength;
    });
    groups.push({ paths: groupPaths, sourceBytes: groupBytes });
  });
  return { modelJson: json as TfjsModelJson, entries, weightBytes: offset, weightPaths, sourceWeights, groups, quantized: sourceWeights.some((w) => w.quantization), graph: json.format === 'graph-model' };
}

/**
 * The model.json stored for an upload: the same topology and fields, the weights as stored (one
 * group, dequantized specs without `quantization`) so every later reader sees plain weights.
 */
export function storedModelJson(parsed: ParsedModelJson, weightsPath = 'model.weights.bin'): TfjsModelJson {
  const weights = parsed.modelJson.weightsManifest.flatMap((g) =>
    g.weights.map((w) => {
      const { quantization: _q, ...rest } = w;
      return { ...rest, shape: [...w.shape] };
    }),
  );
  return { ...parsed.modelJson, weightsManifest: weights.length ? [{ paths: [weightsPath], weights }] : [] };
}

/**
 * The model.json a client downloads: the same topology and weights, in the same order, as one
 * group whose single path is `weightsPath` (so `tf.loadLayersModel(url)` fetches the weights from
 * the service).
 */
export function modelJsonForDownload(modelJson: TfjsModelJson, weightsPath: string): TfjsModelJson {
  const weights = modelJson.weightsManifest.flatMap((g) => g.weights.map((w) => ({ ...w, shape: [...w.shape] })));
  return { ...modelJson, weightsManifest: weights.length ? [{ paths: [weightsPath], weights }] : [] };
}

export interface WeightsIngestResult {
  stats: TensorStats[];
  totalBytes: number;
}

/**
 * Push parser for the concatenated weight bytes of a tfjs model (entries from parseModelJson):
 * per-weight statistics without keeping the data; refuses a body longer than the manifest as soon
 * as the excess arrives and a shorter one at finish.
 */
export class WeightsIngest {
  private readonly acc: TensorStatsAccumulator;
  private total = 0;
  private error?: CoreInputError;
  private finished = false;

  constructor(
    readonly entries: readonly TensorEntry[],
    readonly expectedBytes: number,
  ) {
    this.acc = new TensorStatsAccumulator(entries);
    if (this.acc.expectedBytes !== expectedBytes || (entries.length > 0 && entries[0].byteOffset !== 0)) {
      throw new Error(`weights entries cover ${this.acc.expectedBytes} bytes from ${entries[0]?.byteOffset ?? 0}, expected ${expectedBytes} from 0`);
    }
  }

  get bytesReceived(): number {
    return this.total;
  }

  private fail(message: string, details: Record<string, unknown>): CoreInputError {
    this.error = new CoreInputError(TFJS_WEIGHTS_ERROR, message, details, 400);
    return this.error;
  }

  push(chunk: Uint8Array): void {
    if (this.error) throw this.error;
    if (this.finished) throw new Error('weights ingest already finished');
    if (this.total + chunk.byteLength > this.expectedBytes) {
      this.total += chunk.byteLength;
      throw this.fail(`the weights manifest names ${this.expectedBytes} bytes, the upload had more`, { expectedBytes: this.expectedBytes });
    }
    this.total += chunk.byteLength;
    this.acc.consume(chunk);
  }

  finish(): WeightsIngestResult {
    if (this.error) throw this.error;
    if (this.finished) throw new Error('weights ingest already finished');
    if (this.total !== this.expectedBytes) {
      throw this.fail(`the weights manifest names ${this.expectedBytes} bytes, the upload had ${this.total}`, { expectedBytes: this.expectedBytes, actualBytes: this.total });
    }
    this.finished = true;
    return { stats: this.acc.stats, totalBytes: this.total };
  }
}

/** Opens a stored weights file (the concatenation) whose layout comes from parseModelJson. */
export async function openTfjsWeights(source: string | ByteSource, entries: readonly TensorEntry[]): Promise<FileCheckpointReader | SourceCheckpointReader> {
  const expected = entries.reduce((end, e) => Math.max(end, e.byteOffset + e.byteLength), 0);
  const size = typeof source === 'string' ? (await stat(source)).size : source.size;
  if (size !== expected) {
    if (typeof source !== 'string') await source.close();
    throw new CoreInputError(TFJS_WEIGHTS_ERROR, `the weights manifest names ${expected} bytes, the weights file has ${size}`, { expectedBytes: expected, actualBytes: size }, 422);
  }
  return typeof source === 'string' ? new FileCheckpointReader(source, entries, 'tfjs-weights') : new SourceCheckpointReader(source, entries, 'tfjs-weights');
}

/** Writes tfjs weights (the raw concatenation) to a sink, tensor by tensor in the given order. */
export class TfjsWeightsWriter extends TensorStreamWriter {
  constructor(tensors: readonly TensorSpec[], sink: ByteSink, opts: { chunkBytes?: number } = {}) {
    for (const t of tensors) {
      if (t.dtype !== 'F32' && t.dtype !== 'I32' && t.dtype !== 'BOOL') {
        throw new CoreInputError('invalid-checkpoint', `tensor ${t.name} is ${t.dtype}; TensorFlow.js weights hold only float32, int32 and bool`, { tensor: t.name }, 422);
      }
    }
    super(layoutTensors(tensors), sink, undefined, opts);
  }
}
