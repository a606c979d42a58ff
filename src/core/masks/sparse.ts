import { CoreInputError } from '../errors.js';
import type { PrunableRule } from '../pruning/prunable.js';
import { type CheckpointReader, DTYPE_BYTES, type DType, FLOAT_DTYPES, type TensorEntry } from '../tensors.js';
import { impliedMask } from './implied.js';
import { allocateMask, checkMaskFits, type Mask, popcount, shapeSize, type TensorMask } from './mask.js';

/**
 * Sparse export (`GET /models/{id}/sparse`): a whole model with its masked tensors stored as mask
 * bits plus only the kept values. Version 1, integers little-endian:
 *
 *   0   4 bytes  magic "SPSW"
 *   4   u32      version (1)
 *   8   u32      L, byte length of the index
 *   12  L bytes  index, UTF-8 JSON: {"tensors":[{"name","shape","dtype","sourceDtype","encoding",
 *                "offset","length","kept"}, …]} in checkpoint order
 *   then zero bytes up to the next multiple of 8: the data section starts there.
 *
 * Each tensor's segment starts at `offset` bytes into the data section (a multiple of 8), is
 * `length` bytes long and is zero-padded to a multiple of 8; segments follow each other in index
 * order and the file ends after the last padding. Encodings:
 *   - "sparse" (masked float tensor, dtype F32): the packed mask bits (`ceil(size / 8)` bytes,
 *     LSB-first, padding bits 0), zeros up to a multiple of 4, then `kept` float32 values: the
 *     values at the kept positions in row-major order. Values at pruned positions are dropped,
 *     so the export is the model with its mask applied.
 *   - "dense" (unmasked float tensor, dtype F32): `size` float32 values.
 *   - "raw" (integer / bool tensor): its bytes as stored, dtype as stored.
 * Float tensors are exported as float32 (F16/BF16 widen exactly; F64 narrows); `sourceDtype`
 * records the original. `kept` is null except for "sparse".
 */
export const SPARSE_MAGIC = 'SPSW';
export const SPARSE_VERSION = 1;
const MAX_INDEX_BYTES = 64 << 20;

type Encoding = 'sparse' | 'dense' | 'raw';

interface SparseIndexEntry {
  name: string;
  shape: number[];
  dtype: DType;
  sourceDtype: DType;
  encoding: Encoding;
  offset: number;
  length: number;
  kept: number | null;
}

const align = (n: number, a: number) => Math.ceil(n / a) * a;

function layout(tensors: readonly TensorEntry[], mask: Mask): { header: Uint8Array; entries: SparseIndexEntry[]; total: number } {
  checkMaskFits(mask, tensors);
  const masked = new Map<string, TensorMask>(mask.tensors.map((t) => [t.name, t]));
  let offset = 0;
  const entries = tensors.map((t): SparseIndexEntry => {
    const size = shapeSize(t.shape);
    const tm = masked.get(t.name);
    const float = FLOAT_DTYPES.has(t.dtype);
    if (tm && !float) throw new CoreInputError('mask-mismatch', `mask covers ${t.name}, a ${t.dtype} tensor`, { tensor: t.name, dtype: t.dtype }, 422);
    const encoding: Encoding = tm ? 'sparse' : float ? 'dense' : 'raw';
    const length = tm ? align(Math.ceil(size / 8), 4) + 4 * tm.kept : float ? 4 * size : size * DTYPE_BYTES[t.dtype];
    const e: SparseIndexEntry = { name: t.name, shape: [...t.shape], dtype: float ? 'F32' : t.dtype, sourceDtype: t.dtype, encoding, offset, length, kept: tm ? tm.kept : null };
    offset += align(length, 8);
    return e;
  });
  const index = new TextEncoder().encode(JSON.stringify({ tensors: entries }));
  const header = new Uint8Array(align(12 + index.length, 8));
  header.set(new TextEncoder().encode(SPARSE_MAGIC), 0);
  const view = new DataView(header.buffer);
  view.setUint32(4, SPARSE_VERSION, true);
  view.setUint32(8, index.length, true);
  header.set(index, 12);
  return { header, entries, total: header.length + offset };
}

export interface SparseSize {
  /** Bytes of the sparse export. */
  sparseBytes: number;
  /** Bytes of the same tensors stored densely as float32 (raw tensors as stored), no header. */
  denseBytes: number;
  /** sparseBytes / denseBytes. */
  ratio: number;
}

/** The exact size of the sparse export of a model with this mask, against its dense float32 size. */
export function sparseExportSize(tensors: readonly TensorEntry[], mask: Mask): SparseSize {
  const { total } = layout(tensors, mask);
  let dense = 0;
  for (const t of tensors) dense += FLOAT_DTYPES.has(t.dtype) ? 4 * shapeSize(t.shape) : shapeSize(t.shape) * DTYPE_BYTES[t.dtype];
  return { sparseBytes: total, denseBytes: dense, ratio: dense === 0 ? 0 : total / dense };
}

export interface SparseExportOptions {
  /** The model's mask; when absent, the mask implied by its zeros under `rule`. */
  mask?: Mask;
  rule?: PrunableRule;
}

/**
 * Streams the sparse export of `reader` to `sink`, tensor by tensor (the header first, then one
 * chunk per tensor). Each chunk is a fresh buffer the sink may keep. Returns the bytes written.
 */
export async function writeSparse(reader: CheckpointReader, sink: (chunk: Uint8Array) => Promise<void>, options: SparseExportOptions = {}): Promise<number> {
  const mask = options.mask ?? (await impliedMask(reader, options.rule));
  const { header, entries, total } = layout(reader.tensors, mask);
  const masked = new Map<string, TensorMask>(mask.tensors.map((t) => [t.name, t]));
  await sink(header);
  let scratch = new Float32Array(0);
  for (const e of entries) {
    const chunk = new Uint8Array(align(e.length, 8));
    if (e.encoding === 'raw') {
      chunk.set(await reader.readRaw(e.name));
    } else {
      const size = shapeSize(e.shape);
      if (scratch.length < size) scratch = new Float32Array(size);
      const f = await reader.readFloat32(e.name, scratch);
      if (e.encoding === 'dense') {
        chunk.set(new Uint8Array(f.buffer, f.byteOffset, size * 4));
      } else {
        const tm = masked.get(e.name)!;
        chunk.set(tm.bits, 0);
        const values = new Float32Array(chunk.buffer, align(tm.bits.length, 4), tm.kept);
        const bits = tm.bits;
        let j = 0;
        for (let i = 0; i < size; i++) if ((bits[i >> 3] >> (i & 7)) & 1) values[j++] = f[i];
      }
    }
    await sink(chunk);
  }
  return total;
}

function malformed(message: string, details: Record<string, unknown> = {}): CoreInputError {
  return new CoreInputError('sparse-malformed', `malformed sparse export: ${message}`, details, 400);
}

const isCount = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
const DTYPES = new Set(Object.keys(DTYPE_BYTES));

/**
 * A parsed sparse export, readable as a dense checkpoint (float tensors as float32, laid out as if
 * one F32 file) with its mask. Parsing is strict: CoreInputError (400, `sparse-malformed`).
 */
export class SparseCheckpoint implements CheckpointReader {
  readonly tensors: TensorEntry[];
  readonly mask: Mask;
  private readonly byName = new Map<string, { entry: SparseIndexEntry; start: number; tm?: TensorMask }>();

  constructor(private readonly bytes: Uint8Array) {
    if (bytes.length < 12) throw malformed('shorter than the 12-byte header');
    if (String.fromCharCode(bytes[0], bytes[1], bytes[2], bytes[3]) !== SPARSE_MAGIC) throw malformed('bad magic');
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const version = view.getUint32(4, true);
    if (version !== SPARSE_VERSION) throw malformed(`unsupported version ${version}`);
    const indexLength = view.getUint32(8, true);
    const dataStart = align(12 + indexLength, 8);
    if (indexLength > MAX_INDEX_BYTES || dataStart > bytes.length) throw malformed('index runs past the end');
    for (let i = 12 + indexLength; i < dataStart; i++) if (bytes[i] !== 0) throw malformed('non-zero header padding');
    let index: unknown;
    try {
      index = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(12, 12 + indexLength)));
    } catch {
      throw malformed('index is not UTF-8 JSON');
    }
    const list = (index as { tensors?: unknown } | null)?.tensors;
    if (typeof index !== 'object' || index === null || Array.isArray(index) || Object.keys(index as object).join() !== 'tensors' || !Array.isArray(list)) throw malformed('index must be {"tensors": [...]}');
    const dataLength = bytes.length - dataStart;
    const entries: SparseIndexEntry[] = [];
    let offset = 0;
    for (const [i, raw] of list.entries()) {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw malformed(`tensor #${i} is not an object`);
      if (Object.keys(raw).sort().join() !== 'dtype,encoding,kept,length,name,offset,shape,sourceDtype') throw malformed(`tensor #${i} has the wrong keys`);
      const e = raw as Record<string, unknown>;
      const name = e.name;
      if (typeof name !== 'string' || name.length === 0 || this.byName.has(name)) throw malformed(`tensor #${i}: bad or duplicate name`);
      if (!Array.isArray(e.shape) || e.shape.length > 32 || !e.shape.every(isCount)) throw malformed(`${name}: bad shape`);
      const size = (e.shape as number[]).reduce((a, b) => a * b, 1);
      if (!Number.isSafeInteger(size)) throw malformed(`${name}: shape too large`);
      if (typeof e.dtype !== 'string' || !DTYPES.has(e.dtype) || typeof e.sourceDtype !== 'string' || !DTYPES.has(e.sourceDtype)) throw malformed(`${name}: bad dtype`);
      const dtype = e.dtype as DType;
      const sourceDtype = e.sourceDtype as DType;
      const encoding = e.encoding;
      let length: number;
      if (encoding === 'sparse') {
        if (dtype !== 'F32' || !FLOAT_DTYPES.has(sourceDtype) || !isCount(e.kept) || e.kept > size) throw malformed(`${name}: bad sparse entry`);
        length = align(Math.ceil(size / 8), 4) + 4 * e.kept;
      } else if (encoding === 'dense') {
        if (dtype !== 'F32' || !FLOAT_DTYPES.has(sourceDtype) || e.kept !== null) throw malformed(`${name}: bad dense entry`);
        length = 4 * size;
      } else if (encoding === 'raw') {
        if (dtype !== sourceDtype || FLOAT_DTYPES.has(dtype) || e.kept !== null) throw malformed(`${name}: bad raw entry`);
        length = size * DTYPE_BYTES[dtype];
      } else throw malformed(`${name}: unknown encoding`);
      if (e.offset !== offset || e.length !== length) throw malformed(`${name}: offset/length should be ${offset}/${length}`);
      if (offset + align(length, 8) > dataLength) throw malformed(`${name}: runs past the end`);
      for (let p = dataStart + offset + length; p < dataStart + offset + align(length, 8); p++) if (bytes[p] !== 0) throw malformed(`${name}: non-zero padding`);
      const entry: SparseIndexEntry = { name, shape: e.shape as number[], dtype, sourceDtype, encoding, offset, length, kept: encoding === 'sparse' ? (e.kept as number) : null };
      entries.push(entry);
      this.byName.set(name, { entry, start: dataStart + offset });
      offset += align(length, 8);
    }
    if (offset !== dataLength) throw malformed(`${dataLength - offset} trailing byte(s)`);
    const sparse = entries.filter((e) => e.encoding === 'sparse');
    this.mask = allocateMask(sparse);
    for (const tm of this.mask.tensors) {
      const slot = this.byName.get(tm.name)!;
      const bits = bytes.subarray(slot.start, slot.start + tm.bits.length);
      if (tm.size & 7 && bits[bits.length - 1] >> (tm.size & 7) !== 0) throw malformed(`${tm.name}: padding bits are not zero`);
      for (let p = slot.start + tm.bits.length; p < slot.start + align(tm.bits.length, 4); p++) if (bytes[p] !== 0) throw malformed(`${tm.name}: non-zero padding`);
      tm.bits.set(bits);
      tm.kept = popcount(tm.bits);
      if (tm.kept !== slot.entry.kept) throw malformed(`${tm.name}: kept ${slot.entry.kept} but ${tm.kept} bits are set`);
      slot.tm = tm;
    }
    let fileOffset = 0;
    this.tensors = entries.map((e) => {
      const byteLength = shapeSize(e.shape) * DTYPE_BYTES[e.dtype];
      const t = { name: e.name, dtype: e.dtype, shape: [...e.shape], byteOffset: fileOffset, byteLength };
      fileOffset += byteLength;
      return t;
    });
  }

  private slot(name: string) {
    const s = this.byName.get(name);
    if (!s) throw new Error(`no tensor named ${name}`);
    return s;
  }

  async readFloat32(name: string, into?: Float32Array): Promise<Float32Array> {
    const { entry, start, tm } = this.slot(name);
    if (entry.encoding === 'raw') throw new Error(`${name} is a ${entry.dtype} tensor`);
    const size = shapeSize(entry.shape);
    const out = into && into.length >= size ? into.subarray(0, size) : new Float32Array(size);
    const outBytes = new Uint8Array(out.buffer, out.byteOffset, size * 4);
    if (entry.encoding === 'dense') {
      outBytes.set(this.bytes.subarray(start, start + size * 4));
      return out;
    }
    // Copy the kept values to the front, then spread them backwards to their positions (j ≤ i).
    const m = tm!;
    const from = start + Math.ceil(m.bits.length / 4) * 4;
    outBytes.set(this.bytes.subarray(from, from + m.kept * 4));
    const bits = m.bits;
    let j = m.kept;
    for (let i = size - 1; i >= 0; i--) out[i] = (bits[i >> 3] >> (i & 7)) & 1 ? out[--j] : 0;
    return out;
  }

  async readRaw(name: string, into?: Uint8Array): Promise<Uint8Array> {
    const { entry, start } = this.slot(name);
    if (entry.encoding !== 'raw') {
      const f = await this.readFloat32(name);
      return new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
    }
    const src = this.bytes.subarray(start, start + entry.length);
    const out = into && into.length >= src.length ? into.subarray(0, src.length) : new Uint8Array(src.length);
    out.set(src);
    return out;
  }

  async close(): Promise<void> {}
}

/** Parses a sparse export (strict; see SparseCheckpoint). */
export function parseSparse(bytes: Uint8Array): SparseCheckpoint {
  return new SparseCheckpoint(bytes);
}
