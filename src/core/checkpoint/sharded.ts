import { CoreInputError } from '../errors.js';
import type { TensorEntry } from '../tensors.js';
import { scanJsonKeys } from './json-scan.js';
import { safetensorsLayout } from './safetensors.js';

/**
 * Hugging Face sharded safetensors: `model.safetensors.index.json` =
 * `{ "metadata": { "total_size": … }, "weight_map": { tensor: shard file } }` beside the shard files
 * (`model-00001-of-00003.safetensors` …), each a complete safetensors file. The service stores the
 * model as one safetensors file (so pruning and soups stream it as any other) and keeps the layout:
 * which tensors lie in which shard, in which order; the shards are rebuilt from it on download.
 */

export const SAFETENSORS_INDEX = 'model.safetensors.index.json';
const INDEX_ERROR = 'invalid-safetensors-index';
const MAX_INDEX_BYTES = 64 * 1024 * 1024;

/** One file of a sharded model: its name and its tensors in file order. */
export interface ModelShard {
  name: string;
  tensors: string[];
}

export interface SafetensorsIndex {
  /** Tensor → shard file, in the index's order. */
  weightMap: Map<string, string>;
  /** Shard files in order of first mention. */
  shards: string[];
  metadata: Record<string, unknown>;
}

const bad = (message: string, details: Record<string, unknown> = {}) => new CoreInputError(INDEX_ERROR, message, details);

/** A shard's file name: one path segment, so it can neither leave the folder nor name a sub-folder. */
export function checkShardName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0 || name.length > 255) throw bad(`shard name ${JSON.stringify(name)} is not a file name of 1 to 255 characters`, { shard: name });
  if (name.includes('/') || name.includes('\\')) throw bad(`shard name ${JSON.stringify(name)} has a path separator`, { shard: name });
  if (name.includes('\0') || name === '.' || name === '..') throw bad(`shard name ${JSON.stringify(name)} is not a file name`, { shard: name });
  if (name === SAFETENSORS_INDEX) throw bad(`shard name ${JSON.stringify(name)} is the index's own name`, { shard: name });
  return name;
}

export function parseSafetensorsIndex(bytes: Uint8Array): SafetensorsIndex {
  if (bytes.byteLength > MAX_INDEX_BYTES) throw new CoreInputError(INDEX_ERROR, `${SAFETENSORS_INDEX} is larger than ${MAX_INDEX_BYTES} bytes`, {}, 413);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw bad(`${SAFETENSORS_INDEX} is not valid UTF-8`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw bad(`${SAFETENSORS_INDEX} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw bad(`${SAFETENSORS_INDEX} is not a JSON object`);
  const scan = scanJsonKeys(text);
  if (scan.maxDepth > 64) throw bad(`${SAFETENSORS_INDEX} nests ${scan.maxDepth} levels deep`);
  // JSON.parse keeps the last of two equal keys: a tensor mapped twice would silently lose one shard.
  if (scan.duplicate) throw bad(`${SAFETENSORS_INDEX} has the key ${JSON.stringify(scan.duplicate.key)} twice${scan.duplicate.path.length ? ` in ${scan.duplicate.path.join('.')}` : ''}: a tensor lies in exactly one shard`, { key: scan.duplicate.key });
  const { weight_map: map, metadata } = json as Record<string, unknown>;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) throw bad(`${SAFETENSORS_INDEX} has no weight_map object`);
  if (metadata !== undefined && (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata))) throw bad(`${SAFETENSORS_INDEX}: metadata is not an object`);
  const weightMap = new Map<string, string>();
  const shards: string[] = [];
  for (const [tensor, shard] of Object.entries(map)) {
    if (tensor.length === 0) throw bad('weight_map names an empty tensor name');
    const name = checkShardName(shard);
    weightMap.set(tensor, name);
    if (!shards.includes(name)) shards.push(name);
  }
  if (weightMap.size === 0) throw bad(`${SAFETENSORS_INDEX}: weight_map is empty`);
  return { weightMap, shards, metadata: (metadata as Record<string, unknown>) ?? {} };
}

/** Refuses a shard whose tensors are not exactly the ones the index puts in it. */
export function checkShardAgainstIndex(index: SafetensorsIndex, shard: string, entries: readonly Pick<TensorEntry, 'name'>[]): void {
  for (const e of entries) {
    const where = index.weightMap.get(e.name);
    if (where === undefined) throw bad(`shard "${shard}" holds tensor ${e.name}, which the index does not name`, { shard, tensor: e.name });
    if (where !== shard) throw bad(`shard "${shard}" holds tensor ${e.name}, which the index puts in "${where}"`, { shard, tensor: e.name, indexShard: where });
  }
  const names = new Set(entries.map((e) => e.name));
  const missing = [...index.weightMap].filter(([t, s]) => s === shard && !names.has(t)).map(([t]) => t);
  if (missing.length) throw bad(`shard "${shard}" lacks ${missing.length === 1 ? 'tensor' : 'tensors'} ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', …' : ''}, which the index puts in it`, { shard, missing });
}

/** The index file the service serves: the same tensor-to-shard assignment, total_size of the tensor data. */
export function encodeSafetensorsIndex(shards: readonly ModelShard[], tensors: readonly Pick<TensorEntry, 'name' | 'byteLength'>[], metadata: Record<string, string> = {}): Uint8Array {
  const bytes = new Map(tensors.map((t) => [t.name, t.byteLength]));
  const weight_map: Record<string, string> = {};
  let total = 0;
  for (const s of shards) {
    for (const t of s.tensors) {
      weight_map[t] = s.name;
      total += bytes.get(t) ?? 0;
    }
  }
  return new TextEncoder().encode(`${JSON.stringify({ metadata: { ...metadata, total_size: total }, weight_map }, null, 2)}\n`);
}

/** A shard rebuilt from the stored model: its header, and the byte range of each tensor in the stored file, in order. */
export function shardFile(shard: ModelShard, entries: readonly TensorEntry[], metadata: Record<string, string> = {}): { header: Uint8Array; ranges: { start: number; end: number }[]; sizeBytes: number } {
  const byName = new Map(entries.map((e) => [e.name, e]));
  const own = shard.tensors.map((t) => {
    const e = byName.get(t);
    if (!e) throw new Error(`shard ${shard.name} names tensor ${t}, which the model lacks`);
    return e;
  });
  const { header } = safetensorsLayout(own.map(({ name, dtype, shape }) => ({ name, dtype, shape })), metadata);
  const ranges = own.map((e) => ({ start: e.byteOffset, end: e.byteOffset + e.byteLength }));
  return { header, ranges, sizeBytes: header.byteLength + own.reduce((n, e) => n + e.byteLength, 0) };
}
