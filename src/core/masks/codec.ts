import { CoreInputError } from '../errors.js';
import { allocateMask, type Mask, popcount } from './mask.js';

/**
 * Binary mask file (artifact store), version 1, all integers little-endian:
 *
 *   0   4 bytes  magic "SPMK"
 *   4   u32      version (1)
 *   8   u32      L, byte length of the index
 *   12  L bytes  index, UTF-8 JSON: {"tensors":[{"name","shape","offset","length","kept"}, …]}
 *   12+L         bits: each tensor's packed bits (`ceil(size / 8)` bytes, LSB-first, padding
 *                bits 0) at `offset` bytes from the start of this section, back to back in index
 *                order; the file ends after the last tensor.
 *
 * The parser is strict: anything else (unknown keys, gaps, trailing bytes, non-zero padding bits,
 * a `kept` that is not the popcount) is a CoreInputError (400, `mask-malformed`).
 */
export const MASK_MAGIC = 'SPMK';
export const MASK_VERSION = 1;
const MAX_INDEX_BYTES = 64 << 20;
const MAX_RANK = 32;
const MAX_NAME = 4096;

interface IndexEntry {
  name: string;
  shape: number[];
  offset: number;
  length: number;
  kept: number;
}

export function serializeMask(mask: Mask): Uint8Array {
  let offset = 0;
  const tensors: IndexEntry[] = mask.tensors.map((t) => {
    const e = { name: t.name, shape: [...t.shape], offset, length: t.bits.length, kept: t.kept };
    offset += t.bits.length;
    return e;
  });
  const index = new TextEncoder().encode(JSON.stringify({ tensors }));
  const out = new Uint8Array(12 + index.length + offset);
  out.set(new TextEncoder().encode(MASK_MAGIC), 0);
  const view = new DataView(out.buffer);
  view.setUint32(4, MASK_VERSION, true);
  view.setUint32(8, index.length, true);
  out.set(index, 12);
  const base = 12 + index.length;
  for (const [i, t] of mask.tensors.entries()) out.set(t.bits, base + tensors[i].offset);
  return out;
}

function malformed(message: string, details: Record<string, unknown> = {}): CoreInputError {
  return new CoreInputError('mask-malformed', `malformed mask file: ${message}`, details, 400);
}

function isCount(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

export function parseMask(bytes: Uint8Array): Mask {
  if (bytes.length < 12) throw malformed(`${bytes.length} bytes, shorter than the 12-byte header`);
  if (String.fromCharCode(bytes[0], bytes[1], bytes[2], bytes[3]) !== MASK_MAGIC) throw malformed('bad magic (not a sparsoup mask)');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(4, true);
  if (version !== MASK_VERSION) throw malformed(`unsupported version ${version}`, { version });
  const indexLength = view.getUint32(8, true);
  if (indexLength > MAX_INDEX_BYTES || 12 + indexLength > bytes.length) throw malformed(`index length ${indexLength} exceeds the file`);
  let index: unknown;
  try {
    index = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(12, 12 + indexLength)));
  } catch {
    throw malformed('index is not UTF-8 JSON');
  }
  if (typeof index !== 'object' || index === null || Array.isArray(index) || Object.keys(index).join() !== 'tensors') throw malformed('index must be {"tensors": [...]}');
  const list = (index as { tensors: unknown }).tensors;
  if (!Array.isArray(list)) throw malformed('index.tensors must be an array');
  const dataLength = bytes.length - 12 - indexLength;
  const names = new Set<string>();
  const entries: IndexEntry[] = [];
  let offset = 0;
  for (const [i, raw] of list.entries()) {
    const where = `tensor #${i}`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw malformed(`${where} is not an object`);
    const keys = Object.keys(raw).sort().join();
    if (keys !== 'kept,length,name,offset,shape') throw malformed(`${where} must have exactly name, shape, offset, length, kept`);
    const e = raw as Record<string, unknown>;
    if (typeof e.name !== 'string' || e.name.length === 0 || e.name.length > MAX_NAME) throw malformed(`${where} has a bad name`);
    if (names.has(e.name)) throw malformed(`duplicate tensor ${e.name}`, { tensor: e.name });
    names.add(e.name);
    if (!Array.isArray(e.shape) || e.shape.length > MAX_RANK || !e.shape.every(isCount)) throw malformed(`${e.name}: bad shape`, { tensor: e.name });
    let size = 1;
    for (const d of e.shape as number[]) size *= d;
    if (!Number.isSafeInteger(size)) throw malformed(`${e.name}: shape too large`, { tensor: e.name });
    if (!isCount(e.offset) || e.offset !== offset) throw malformed(`${e.name}: offset ${String(e.offset)} should be ${offset}`, { tensor: e.name });
    const length = Math.ceil(size / 8);
    if (!isCount(e.length) || e.length !== length) throw malformed(`${e.name}: length ${String(e.length)} should be ${length}`, { tensor: e.name });
    if (offset + length > dataLength) throw malformed(`${e.name}: bits run past the end of the file`, { tensor: e.name });
    if (!isCount(e.kept) || e.kept > size) throw malformed(`${e.name}: bad kept count`, { tensor: e.name });
    entries.push({ name: e.name, shape: e.shape as number[], offset, length, kept: e.kept });
    offset += length;
  }
  if (offset !== dataLength) throw malformed(`${dataLength - offset} trailing byte(s) after the last tensor`);
  const base = 12 + indexLength;
  const mask = allocateMask(entries);
  mask.tensors.forEach((t, i) => {
    const e = entries[i];
    const src = bytes.subarray(base + e.offset, base + e.offset + e.length);
    if (t.size & 7 && src[src.length - 1] >> (t.size & 7) !== 0) throw malformed(`${t.name}: padding bits are not zero`, { tensor: t.name });
    t.bits.set(src);
    const kept = popcount(t.bits);
    if (kept !== e.kept) throw malformed(`${t.name}: kept ${e.kept} but ${kept} bits are set`, { tensor: t.name });
    t.kept = kept;
  });
  return mask;
}
