import { type FileHandle, open } from 'node:fs/promises';
import { CoreInputError } from '../errors.js';
import { DTYPE_BYTES, type DType, type TensorEntry, type TensorStats } from '../tensors.js';
import type { ByteSource } from './byte-source.js';
import { FileCheckpointReader, SourceCheckpointReader } from './file-reader.js';
import { scanJsonKeys } from './json-scan.js';
import { TensorStatsAccumulator } from './stats.js';
import { type ByteSink, layoutTensors, shapeSize, type TensorSpec, TensorStreamWriter } from './tensor-writer.js';

/**
 * safetensors (https://github.com/huggingface/safetensors): an 8-byte little-endian u64 header
 * length N, N bytes of JSON `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__":
 * {string: string}}` (possibly padded with trailing spaces), then the tensor bytes; offsets are
 * relative to the end of the header and must cover the data exactly.
 */

/** The problem type of every refusal of a safetensors file. */
export const SAFETENSORS_ERROR = 'invalid-safetensors';
/** The reference implementation's limit on the JSON header. */
export const DEFAULT_MAX_HEADER_BYTES = 100 * 1024 * 1024;
const METADATA_KEY = '__metadata__';
const ENTRY_FIELDS = new Set(['dtype', 'shape', 'data_offsets']);
/** header → tensor entry → shape list: no valid header nests deeper (error messages stringify values). */
const MAX_HEADER_DEPTH = 3;

export interface SafetensorsHeader {
  /** N, the JSON header's length in bytes (padding included). */
  headerLength: number;
  /** 8 + N: where tensor data starts. */
  dataStart: number;
  /** Bytes of tensor data after the header. */
  dataBytes: number;
  /** Tensors in file-offset order, with absolute offsets. */
  entries: TensorEntry[];
  metadata: Record<string, string>;
}

export interface ParseHeaderOptions {
  /** The whole file's size, when known: the data must then end exactly at the end of the file. */
  fileSize?: number;
  maxHeaderBytes?: number;
}

function bad(message: string, details: Record<string, unknown> = {}, status: 400 | 413 | 422 = 400): CoreInputError {
  return new CoreInputError(SAFETENSORS_ERROR, message, details, status);
}

/** Validates the 8-byte length prefix (little-endian u64) against the limit and the file size. */
export function readHeaderLength(prefix: Uint8Array, opts: ParseHeaderOptions = {}): number {
  if (prefix.byteLength < 8) throw bad(`the file is ${prefix.byteLength} bytes long, too short for the 8-byte header length`);
  const max = opts.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const n = view.getUint32(0, true) + view.getUint32(4, true) * 2 ** 32; // exact up to 2^53, larger is refused anyway
  if (n > max) {
    // A lying length prefix is invalid input, not a large body (413): the body may be a few bytes. Beyond
    // 2^53 a JSON number is no longer exact, so the length goes out as the exact decimal string.
    const exact = view.getBigUint64(0, true);
    const headerLength = exact <= BigInt(Number.MAX_SAFE_INTEGER) ? n : exact.toString();
    throw bad(`the header length ${exact} exceeds the limit of ${max} bytes: not a safetensors file, or a corrupt one`, { headerLength, limit: max });
  }
  if (n < 2) throw bad(`the header length ${n} is too small for a JSON object`, { headerLength: n });
  if (opts.fileSize !== undefined && 8 + n > opts.fileSize) {
    throw bad(`the header length ${n} runs past the end of the ${opts.fileSize}-byte file`, { headerLength: n, fileSize: opts.fileSize });
  }
  return n;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses and validates the N header bytes (without the 8-byte prefix). */
export function parseHeaderJson(header: Uint8Array, opts: ParseHeaderOptions = {}): SafetensorsHeader {
  const headerLength = header.byteLength;
  if (header[0] !== 0x7b) throw bad("the header does not start with '{'");
  let text: string;
  try {
    text = utf8.decode(header);
  } catch {
    throw bad('the header is not valid UTF-8');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw bad(`the header is not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(parsed)) throw bad('the header is not a JSON object');
  const scan = scanJsonKeys(text);
  if (scan.maxDepth > MAX_HEADER_DEPTH) {
    throw bad(`the header nests ${scan.maxDepth} levels deep; a safetensors header has at most ${MAX_HEADER_DEPTH} (header, tensor entry, shape)`, { depth: scan.maxDepth });
  }
  if (scan.duplicate) {
    const { key, path } = scan.duplicate;
    if (path.length === 0 && key === METADATA_KEY) throw bad('__metadata__ appears twice in the header');
    if (path.length === 0) throw bad(`tensor ${key} is listed twice in the header`, { tensor: key });
    if (path[0] === METADATA_KEY) throw bad(`metadata key ${key} appears twice`, { metadataKey: key });
    throw bad(`tensor ${path[0]} has the field ${key} twice`, { tensor: path[0] });
  }

  let metadata: Record<string, string> = {};
  const found: { entry: TensorEntry; begin: number; end: number; order: number }[] = [];
  for (const name of scan.topLevelKeys) {
    const value = parsed[name];
    if (name === METADATA_KEY) {
      if (value === null) continue; // the reference writer's "no metadata"
      if (!isObject(value)) throw bad('__metadata__ is not an object of strings');
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== 'string') throw bad(`__metadata__ value for key ${k} is not a string`, { metadataKey: k });
      }
      metadata = Object.fromEntries(Object.entries(value as Record<string, string>));
      continue;
    }
    const details = { tensor: name };
    if (!isObject(value)) throw bad(`tensor ${name}: its entry is not an object`, details);
    for (const field of Object.keys(value)) {
      if (!ENTRY_FIELDS.has(field)) throw bad(`tensor ${name} has an unknown field ${field}`, details);
    }
    const { dtype, shape, data_offsets: offsets } = value;
    if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_BYTES, dtype)) {
      throw bad(`tensor ${name} has unknown dtype ${JSON.stringify(dtype)}`, details);
    }
    const size = shapeSize(shape);
    if (size === undefined) throw bad(`tensor ${name}: shape ${JSON.stringify(shape)} is not a list of non-negative integers with a safe product`, details);
    if (
      !Array.isArray(offsets) || offsets.length !== 2
      || !offsets.every((o) => typeof o === 'number' && Number.isSafeInteger(o) && o >= 0)
      || offsets[0] > offsets[1]
    ) {
      throw bad(`tensor ${name}: data_offsets ${JSON.stringify(offsets)} is not [begin, end] with 0 <= begin <= end`, details);
    }
    const [begin, end] = offsets as [number, number];
    const byteLength = size * DTYPE_BYTES[dtype as DType];
    if (!Number.isSafeInteger(byteLength) || byteLength !== end - begin) {
      throw bad(`tensor ${name}: shape ${JSON.stringify(shape)} of ${dtype} needs ${byteLength} bytes, but data_offsets [${begin}, ${end}] cover ${end - begin}`, details);
    }
    const entry = { name, dtype: dtype as DType, shape: shape as number[], byteOffset: 8 + headerLength + begin, byteLength };
    if (!Number.isSafeInteger(entry.byteOffset + byteLength)) throw bad(`tensor ${name}: data_offsets are too large`, details);
    found.push({ entry, begin, end, order: found.length });
  }

  // Sorted by position (ties: zero-length tensors, kept in document order), the tensors must tile
  // the data: each starts where the previous one ended.
  found.sort((a, b) => a.begin - b.begin || a.end - b.end || a.order - b.order);
  let expected = 0;
  let previous: (typeof found)[number] | undefined;
  for (const f of found) {
    const details = { tensor: f.entry.name };
    if (f.begin < expected) {
      throw bad(`tensor ${f.entry.name} (data_offsets [${f.begin}, ${f.end}]) overlaps tensor ${previous!.entry.name} ([${previous!.begin}, ${previous!.end}])`, { ...details, overlaps: previous!.entry.name });
    }
    if (f.begin > expected) {
      throw bad(`there is a gap of ${f.begin - expected} bytes before tensor ${f.entry.name} (data_offsets [${f.begin}, ${f.end}]): the data before it ends at ${expected}`, details);
    }
    expected = f.end;
    previous = f;
  }
  const dataStart = 8 + headerLength;
  if (opts.fileSize !== undefined) {
    const actual = opts.fileSize - dataStart;
    if (actual < expected) throw bad(`the file is truncated: the header describes ${expected} bytes of tensor data, the file has ${actual}`, { expectedBytes: expected, actualBytes: actual });
    if (actual > expected) throw bad(`the file has ${actual - expected} bytes after the last tensor`, { expectedBytes: expected, actualBytes: actual });
  }
  return { headerLength, dataStart, dataBytes: expected, entries: found.map((f) => f.entry), metadata };
}

/**
 * Parses the header at the start of `bytes` (which must hold at least 8 + N bytes; the rest of the
 * file may be absent). With `fileSize`, also checks that the data ends exactly at the end of the file.
 */
export function parseSafetensorsHeader(bytes: Uint8Array, opts: ParseHeaderOptions = {}): SafetensorsHeader {
  const n = readHeaderLength(bytes, opts);
  if (bytes.byteLength < 8 + n) throw bad(`the header is truncated: its length says ${n} bytes, only ${bytes.byteLength - 8} are present`, { headerLength: n });
  return parseHeaderJson(bytes.subarray(8, 8 + n), opts);
}

export interface SafetensorsIngestResult extends SafetensorsHeader {
  stats: TensorStats[];
  /** Bytes of the whole upload (header included). */
  totalBytes: number;
}

/**
 * Push parser for a safetensors upload arriving in chunks. Refuses a bad header as soon as it is
 * complete, a body longer than the header describes as soon as the excess arrives, and computes
 * per-tensor statistics without keeping tensor data. Every refusal is a CoreInputError; after one,
 * every later call throws the same error.
 */
export class SafetensorsIngest {
  private readonly maxHeaderBytes: number;
  private readonly prefix = new Uint8Array(8);
  private prefixLength = 0;
  private headerLength = -1;
  private headerPieces: Uint8Array[] = [];
  private headerReceived = 0;
  private parsed?: SafetensorsHeader;
  private acc?: TensorStatsAccumulator;
  private total = 0;
  private error?: unknown;
  private finished = false;

  constructor(opts: { maxHeaderBytes?: number } = {}) {
    this.maxHeaderBytes = opts.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
  }

  /** The validated header, once it has arrived. */
  get header(): SafetensorsHeader | undefined {
    return this.parsed;
  }

  get bytesReceived(): number {
    return this.total;
  }

  push(chunk: Uint8Array): void {
    this.guard();
    try {
      this.consume(chunk);
    } catch (err) {
      // Sticky: a half-consumed chunk leaves the state unusable. Internal errors stay what they are.
      this.error = err;
      throw err;
    }
  }

  private guard(): void {
    if (this.error !== undefined) throw this.error;
    if (this.finished) throw new Error('safetensors ingest already finished');
  }

  private consume(chunk: Uint8Array): void {
    this.total += chunk.byteLength;
    let off = 0;
    if (this.prefixLength < 8) {
      const take = Math.min(8 - this.prefixLength, chunk.byteLength);
      this.prefix.set(chunk.subarray(0, take), this.prefixLength);
      this.prefixLength += take;
      off = take;
      if (this.prefixLength < 8) return;
      this.headerLength = readHeaderLength(this.prefix, { maxHeaderBytes: this.maxHeaderBytes });
    }
    if (!this.parsed) {
      // Collect what arrived, never a buffer sized by the (untrusted) length.
      const take = Math.min(this.headerLength - this.headerReceived, chunk.byteLength - off);
      if (take > 0) this.headerPieces.push(chunk.slice(off, off + take));
      this.headerReceived += take;
      off += take;
      if (this.headerReceived < this.headerLength) return;
      const header = concat(this.headerPieces, this.headerLength);
      this.headerPieces = [];
      this.parsed = parseHeaderJson(header);
      this.acc = new TensorStatsAccumulator(this.parsed.entries);
    }
    const rest = chunk.byteLength - off;
    if (rest === 0) return;
    const acc = this.acc!;
    if (acc.receivedBytes + rest > acc.expectedBytes) {
      throw bad(`the upload is longer than its header describes (${this.parsed.dataStart + this.parsed.dataBytes} bytes in all)`, { expectedBytes: this.parsed.dataStart + this.parsed.dataBytes });
    }
    acc.consume(off === 0 ? chunk : chunk.subarray(off));
  }

  /** Refuses an upload shorter than its header describes; returns header, stats and size. */
  finish(): SafetensorsIngestResult {
    this.guard();
    const fail = (e: CoreInputError) => {
      this.error = e;
      return e;
    };
    if (this.prefixLength < 8) throw fail(bad(`the upload ended after ${this.total} bytes, inside the 8-byte header length`, { actualBytes: this.total }));
    if (!this.parsed) throw fail(bad(`the upload ended inside the header: ${this.headerReceived} of its ${this.headerLength} bytes arrived`, { headerLength: this.headerLength, actualBytes: this.total }));
    const acc = this.acc!;
    if (!acc.complete) {
      const expected = this.parsed.dataStart + this.parsed.dataBytes;
      const incomplete = this.parsed.entries.find((e) => e.byteOffset + e.byteLength > this.total);
      throw fail(bad(`the upload is shorter than its header describes: ${this.total} of ${expected} bytes arrived${incomplete ? ` (tensor ${incomplete.name} is incomplete)` : ''}`, { expectedBytes: expected, actualBytes: this.total, tensor: incomplete?.name }));
    }
    this.finished = true;
    return { ...this.parsed, stats: acc.stats, totalBytes: this.total };
  }
}

function concat(pieces: Uint8Array[], length: number): Uint8Array {
  if (pieces.length === 1) return pieces[0];
  const out = new Uint8Array(length);
  let o = 0;
  for (const p of pieces) {
    out.set(p, o);
    o += p.byteLength;
  }
  return out;
}

/** A safetensors file opened for reading: its tensors and metadata. */
export class SafetensorsReader extends FileCheckpointReader {
  constructor(
    path: string,
    readonly header: SafetensorsHeader,
    handle?: FileHandle,
  ) {
    super(path, header.entries, 'safetensors', handle);
  }

  get metadata(): Record<string, string> {
    return this.header.metadata;
  }
}

async function readExactly(fh: FileHandle, length: number, position: number): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) throw bad('the file ended while reading its header');
    done += bytesRead;
  }
  return buf;
}

/** A safetensors checkpoint read through ranges of a `ByteSource` (an object in a bucket). */
export class SafetensorsSourceReader extends SourceCheckpointReader {
  constructor(
    source: ByteSource,
    readonly header: SafetensorsHeader,
  ) {
    super(source, header.entries, 'safetensors');
  }

  get metadata(): Record<string, string> {
    return this.header.metadata;
  }
}

/** The first range read of a ranged source: most headers fit, so opening costs one request. */
const HEADER_PROBE_BYTES = 64 * 1024;

/**
 * Opens and validates a safetensors file (a path) or source (ranges: the header first, then one
 * range per tensor); reads tensors one at a time afterwards.
 */
export async function openSafetensors(path: string, opts?: { maxHeaderBytes?: number }): Promise<SafetensorsReader>;
export async function openSafetensors(source: string | ByteSource, opts?: { maxHeaderBytes?: number }): Promise<SafetensorsReader | SafetensorsSourceReader>;
export async function openSafetensors(source: string | ByteSource, opts: { maxHeaderBytes?: number } = {}): Promise<SafetensorsReader | SafetensorsSourceReader> {
  if (typeof source !== 'string') {
    try {
      const fileSize = source.size;
      const probe = new Uint8Array(Math.min(fileSize, HEADER_PROBE_BYTES));
      await source.readAt(probe, 0);
      const n = readHeaderLength(probe.subarray(0, Math.min(8, probe.byteLength)), { fileSize, maxHeaderBytes: opts.maxHeaderBytes });
      let headerBytes: Uint8Array;
      if (8 + n <= probe.byteLength) headerBytes = probe.subarray(8, 8 + n);
      else {
        headerBytes = new Uint8Array(n);
        headerBytes.set(probe.subarray(8));
        await source.readAt(headerBytes.subarray(probe.byteLength - 8), probe.byteLength);
      }
      return new SafetensorsSourceReader(source, parseHeaderJson(headerBytes, { fileSize }));
    } catch (err) {
      await source.close();
      throw err;
    }
  }
  const path = source;
  const fh = await open(path, 'r');
  try {
    const fileSize = (await fh.stat()).size;
    const prefix = await readExactly(fh, Math.min(8, fileSize), 0);
    const n = readHeaderLength(prefix, { fileSize, maxHeaderBytes: opts.maxHeaderBytes });
    const header = parseHeaderJson(await readExactly(fh, n, 8), { fileSize });
    return new SafetensorsReader(path, header, fh);
  } catch (err) {
    await fh.close();
    throw err;
  }
}

/**
 * The header the reference implementation writes: compact JSON, `__metadata__` first (omitted when
 * empty), tensors in data order with fields dtype, shape, data_offsets, space-padded so that the
 * data starts on an 8-byte boundary. Built by hand, not with JSON.stringify of an object, which
 * would move integer-like tensor names ("0") to the front.
 */
export function safetensorsLayout(
  tensors: readonly TensorSpec[],
  metadata: Record<string, string> = {},
): { header: Uint8Array; headerLength: number; entries: TensorEntry[] } {
  const relative = layoutTensors(tensors, 0, [METADATA_KEY]);
  const parts: string[] = [];
  const meta = Object.entries(metadata);
  for (const [k, v] of meta) {
    if (typeof v !== 'string') throw new CoreInputError('invalid-checkpoint', `metadata value for key ${k} is not a string`, { metadataKey: k }, 422);
  }
  if (meta.length > 0) parts.push(`"${METADATA_KEY}":{${meta.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`);
  for (const e of relative) {
    parts.push(`${JSON.stringify(e.name)}:{"dtype":"${e.dtype}","shape":[${e.shape.join(',')}],"data_offsets":[${e.byteOffset},${e.byteOffset + e.byteLength}]}`);
  }
  const json = new TextEncoder().encode(`{${parts.join(',')}}`);
  const headerLength = Math.ceil(json.byteLength / 8) * 8;
  const bytes = new Uint8Array(8 + headerLength).fill(0x20, 8 + json.byteLength);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(headerLength), true);
  bytes.set(json, 8);
  const entries = relative.map((e) => ({ ...e, byteOffset: e.byteOffset + 8 + headerLength }));
  return { header: bytes, headerLength, entries };
}

/** The 8-byte length plus the JSON header for these tensors, as `safetensorsLayout` lays them out. */
export function encodeSafetensorsHeader(tensors: readonly TensorSpec[], metadata: Record<string, string> = {}): Uint8Array {
  return safetensorsLayout(tensors, metadata).header;
}

/**
 * Streams a safetensors file to a sink: the header first, then `writeTensor` for each tensor in
 * the given order (float32 input is encoded into the tensor's dtype; a Uint8Array is raw bytes).
 */
export class SafetensorsWriter {
  readonly entries: readonly TensorEntry[];
  readonly headerLength: number;
  private readonly stream: TensorStreamWriter;

  constructor(tensors: readonly TensorSpec[], metadata: Record<string, string> | undefined, sink: ByteSink, opts: { chunkBytes?: number } = {}) {
    const { header, headerLength, entries } = safetensorsLayout(tensors, metadata);
    this.entries = entries;
    this.headerLength = headerLength;
    this.stream = new TensorStreamWriter(entries, sink, header, opts);
  }

  get totalBytes(): number {
    return this.stream.totalBytes;
  }

  writeTensor(name: string, data: Float32Array | Uint8Array): Promise<void> {
    return this.stream.writeTensor(name, data);
  }

  finish(): Promise<{ bytesWritten: number }> {
    return this.stream.finish();
  }
}
