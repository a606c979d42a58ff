import { Inflate } from 'fflate';
import { CoreInputError } from '../errors.js';

/**
 * Strict readers for NumPy's `.npy` and `.npz` (a zip of `.npy` files, as written by `np.savez` and
 * `np.savez_compressed`). The zip reader is our own, small one rather than fflate's `unzipSync`: that one
 * trusts the declared sizes, never checks CRCs, and keeps inflating past a lying size (a zip bomb costs
 * CPU in proportion to its expanded size). Here every entry is inflated in slices with a hard cap at its
 * declared size, then its size and CRC-32 are checked; sizes are checked against limits before any
 * allocation.
 */

const HOST_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export type NpyDType = 'bool' | 'uint8' | 'int8' | 'uint16' | 'int16' | 'uint32' | 'int32' | 'uint64' | 'int64' | 'float32' | 'float64';

export type NpyData =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | BigUint64Array
  | BigInt64Array
  | Float32Array
  | Float64Array;

export interface NpyArray {
  dtype: NpyDType;
  shape: number[];
  data: NpyData;
}

const DESCR: Record<string, { dtype: NpyDType; bytes: number }> = {
  b1: { dtype: 'bool', bytes: 1 },
  u1: { dtype: 'uint8', bytes: 1 },
  i1: { dtype: 'int8', bytes: 1 },
  u2: { dtype: 'uint16', bytes: 2 },
  i2: { dtype: 'int16', bytes: 2 },
  u4: { dtype: 'uint32', bytes: 4 },
  i4: { dtype: 'int32', bytes: 4 },
  u8: { dtype: 'uint64', bytes: 8 },
  i8: { dtype: 'int64', bytes: 8 },
  f4: { dtype: 'float32', bytes: 4 },
  f8: { dtype: 'float64', bytes: 8 },
};

const MAX_NDIM = 32;
const MAX_HEADER = 65_536;

function npyError(what: string, message: string, details: Record<string, unknown> = {}): CoreInputError {
  return new CoreInputError('invalid-npy', `${what}: ${message}`, { array: what, ...details });
}

/**
 * Parses the header dict, a Python literal such as
 * `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`. Only the three keys numpy writes are
 * accepted, each exactly once; no eval-like leniency.
 */
function parseHeaderDict(text: string, what: string): { descr: string; fortran: boolean; shape: number[] } {
  let i = 0;
  const fail = (m: string) => npyError(what, `bad header (${m}): ${JSON.stringify(text.slice(0, 120))}`);
  const ws = () => {
    while (i < text.length && (text[i] === ' ' || text[i] === '\t')) i++;
  };
  const expect = (ch: string) => {
    ws();
    if (text[i] !== ch) throw fail(`expected '${ch}' at ${i}`);
    i++;
  };
  const str = (): string => {
    ws();
    const q = text[i];
    if (q !== "'" && q !== '"') throw fail(`expected a string at ${i}`);
    const end = text.indexOf(q, i + 1);
    if (end < 0 || end - i > 64) throw fail('unterminated string');
    const s = text.slice(i + 1, end);
    i = end + 1;
    return s;
  };
  const out: { descr?: string; fortran?: boolean; shape?: number[] } = {};
  expect('{');
  for (;;) {
    ws();
    if (text[i] === '}') {
      i++;
      break;
    }
    const key = str();
    expect(':');
    ws();
    if (key === 'descr' && out.descr === undefined) {
      out.descr = str();
    } else if (key === 'fortran_order' && out.fortran === undefined) {
      if (text.startsWith('False', i)) {
        out.fortran = false;
        i += 5;
      } else if (text.startsWith('True', i)) {
        out.fortran = true;
        i += 4;
      } else throw fail('fortran_order must be True or False');
    } else if (key === 'shape' && out.shape === undefined) {
      expect('(');
      const dims: number[] = [];
      for (;;) {
        ws();
        if (text[i] === ')') {
          i++;
          break;
        }
        const m = /^[0-9]{1,16}/.exec(text.slice(i, i + 17));
        if (!m) throw fail(`expected a dimension at ${i}`);
        dims.push(Number(m[0]));
        if (dims.length > MAX_NDIM) throw fail(`more than ${MAX_NDIM} dimensions`);
        i += m[0].length;
        ws();
        if (text[i] === ',') i++;
        else if (text[i] !== ')') throw fail(`expected ',' or ')' at ${i}`);
      }
      // Python writes a 1-tuple as "(n,)"; "(n)" would be an int, not a tuple.
      out.shape = dims;
    } else {
      throw fail(`unexpected or repeated key '${key}'`);
    }
    ws();
    if (text[i] === ',') i++;
    else if (text[i] !== '}') throw fail(`expected ',' or '}' at ${i}`);
  }
  if (!/^[ \t]*\n?[ \t]*$/.test(text.slice(i))) throw fail('trailing characters after the dict');
  if (out.descr === undefined || out.fortran === undefined || out.shape === undefined) {
    throw fail('descr, fortran_order and shape are all required');
  }
  return { descr: out.descr, fortran: out.fortran, shape: out.shape };
}

/** Parses one `.npy` file. Multi-byte data is a view of `bytes` when aligned, else a copy. */
export function parseNpy(bytes: Uint8Array, what = 'npy'): NpyArray {
  if (!HOST_LE) throw new Error('npy reader assumes a little-endian host');
  if (bytes.length < 10) throw npyError(what, `too short for an npy header (${bytes.length} bytes)`);
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
  for (let k = 0; k < 6; k++) if (bytes[k] !== magic[k]) throw npyError(what, 'not an npy file (bad magic)');
  const major = bytes[6];
  if (major < 1 || major > 3 || bytes[7] !== 0) throw npyError(what, `unsupported npy version ${major}.${bytes[7]}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let start: number;
  let hlen: number;
  if (major === 1) {
    hlen = view.getUint16(8, true);
    start = 10;
  } else {
    if (bytes.length < 12) throw npyError(what, 'truncated header');
    hlen = view.getUint32(8, true);
    start = 12;
  }
  if (hlen > MAX_HEADER || start + hlen > bytes.length) throw npyError(what, `header length ${hlen} does not fit the file`);
  const text = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(bytes.subarray(start, start + hlen));
  const { descr, fortran, shape } = parseHeaderDict(text, what);
  const m = /^([<>|=]?)([a-z][0-9]+)$/.exec(descr);
  const t = m ? DESCR[m[2]] : undefined;
  if (!m || !t) throw npyError(what, `unsupported dtype '${descr}' (bool, integers, float32 or float64 only)`, { descr });
  if (m[1] === '>' && t.bytes > 1) throw npyError(what, `big-endian dtype '${descr}' is not supported; save little-endian`, { descr });
  if (fortran && shape.filter((d) => d > 1).length > 1) {
    throw npyError(what, 'Fortran-order arrays are not supported; save np.ascontiguousarray(a)', { shape });
  }
  const offset = start + hlen;
  const available = bytes.length - offset;
  let count = 1;
  for (const d of shape) {
    count *= d;
    if (count * t.bytes > available) {
      throw npyError(what, `shape (${shape.join(', ')}) of ${t.dtype} needs more than the ${available} data bytes present`, { shape });
    }
  }
  if (count * t.bytes !== available) {
    throw npyError(what, `length mismatch: shape (${shape.join(', ')}) of ${t.dtype} needs ${count * t.bytes} data bytes, got ${available}`, {
      shape,
      dtype: t.dtype,
    });
  }
  let body = bytes.subarray(offset);
  // Typed views need aligned offsets; copy when not (new Uint8Array, as Buffer#slice would not copy).
  if ((body.byteOffset & 7) !== 0 && t.bytes > 1) body = new Uint8Array(body);
  const { buffer, byteOffset } = body;
  let data: NpyData;
  switch (t.dtype) {
    case 'bool':
    case 'uint8':
      data = body;
      break;
    case 'int8':
      data = new Int8Array(buffer, byteOffset, count);
      break;
    case 'uint16':
      data = new Uint16Array(buffer, byteOffset, count);
      break;
    case 'int16':
      data = new Int16Array(buffer, byteOffset, count);
      break;
    case 'uint32':
      data = new Uint32Array(buffer, byteOffset, count);
      break;
    case 'int32':
      data = new Int32Array(buffer, byteOffset, count);
      break;
    case 'uint64':
      data = new BigUint64Array(buffer, byteOffset, count);
      break;
    case 'int64':
      data = new BigInt64Array(buffer, byteOffset, count);
      break;
    case 'float32':
      data = new Float32Array(buffer, byteOffset, count);
      break;
    case 'float64':
      data = new Float64Array(buffer, byteOffset, count);
      break;
  }
  return { dtype: t.dtype, shape, data };
}

/** Writes an `.npy` (version 1.0, little-endian, C order): tests and fixtures. */
export function encodeNpy(dtype: 'uint8' | 'int64' | 'int32' | 'float32' | 'float64', shape: number[], data: ArrayLike<number>): Uint8Array {
  const descr = { uint8: '|u1', int64: '<i8', int32: '<i4', float32: '<f4', float64: '<f8' }[dtype];
  const size = { uint8: 1, int64: 8, int32: 4, float32: 4, float64: 8 }[dtype];
  const tuple = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${tuple}, }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const out = new Uint8Array(10 + header.length + data.length * size);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
  new DataView(out.buffer).setUint16(8, header.length, true);
  for (let k = 0; k < header.length; k++) out[10 + k] = header.charCodeAt(k);
  const v = new DataView(out.buffer, 10 + header.length);
  for (let k = 0; k < data.length; k++) {
    if (dtype === 'uint8') v.setUint8(k, data[k]);
    else if (dtype === 'int64') v.setBigInt64(8 * k, BigInt(data[k]), true);
    else if (dtype === 'int32') v.setInt32(4 * k, data[k], true);
    else if (dtype === 'float32') v.setFloat32(4 * k, data[k], true);
    else v.setFloat64(8 * k, data[k], true);
  }
  return out;
}

// ---- zip ------------------------------------------------------------------------------------------

const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();

export function crc32(data: Uint8Array): number {
  let c = -1;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

export interface ZipLimits {
  /** Largest uncompressed size of one entry. */
  maxEntryBytes: number;
  /** Largest sum of the uncompressed sizes of the entries read. */
  maxTotalBytes: number;
  maxEntries: number;
}

interface ZipEntry {
  name: string;
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  localOffset: number;
}

function zipError(message: string, details: Record<string, unknown> = {}, status: 400 | 413 = 400): CoreInputError {
  return new CoreInputError(status === 413 ? 'upload-too-large' : 'invalid-npz', `npz: ${message}`, details, status);
}

function u64(v: DataView, at: number): number {
  const lo = v.getUint32(at, true);
  const hi = v.getUint32(at + 4, true);
  if (hi > 0x1fffff) throw zipError('a 64-bit size or offset is out of range');
  return hi * 0x1_0000_0000 + lo;
}

function listZip(bytes: Uint8Array, limits: ZipLimits): ZipEntry[] {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const len = bytes.length;
  if (len < 22) throw zipError(`too short to be a zip archive (${len} bytes)`);
  // The end-of-central-directory record sits in the last 22 + 65535 bytes (its comment is ≤ 64 KiB).
  let eocd = -1;
  for (let p = len - 22; p >= Math.max(0, len - 22 - 65535); p--) {
    if (v.getUint32(p, true) === 0x06054b50 && p + 22 + v.getUint16(p + 20, true) === len) {
      eocd = p;
      break;
    }
  }
  if (eocd < 0) throw zipError('not a zip archive (no end-of-central-directory record)');
  let count = v.getUint16(eocd + 10, true);
  let cdSize = v.getUint32(eocd + 12, true);
  let cdOffset = v.getUint32(eocd + 16, true);
  if (v.getUint16(eocd + 4, true) !== 0 || v.getUint16(eocd + 6, true) !== 0 || v.getUint16(eocd + 8, true) !== count) {
    throw zipError('multi-disk archives are not supported');
  }
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    // zip64: the locator sits just before the classic record and points at the zip64 record.
    if (eocd < 20 || v.getUint32(eocd - 20, true) !== 0x07064b50) throw zipError('zip64 locator missing');
    const z = u64(v, eocd - 12);
    if (z + 56 > eocd || v.getUint32(z, true) !== 0x06064b50) throw zipError('zip64 end record missing');
    count = u64(v, z + 32);
    cdSize = u64(v, z + 40);
    cdOffset = u64(v, z + 48);
  }
  if (count > limits.maxEntries) throw zipError(`too many entries (${count}, at most ${limits.maxEntries})`, { entries: count }, 413);
  if (cdOffset + cdSize > len) throw zipError('central directory lies outside the file');
  const entries: ZipEntry[] = [];
  const names = new Set<string>();
  let p = cdOffset;
  const cdEnd = cdOffset + cdSize;
  for (let k = 0; k < count; k++) {
    if (p + 46 > cdEnd || v.getUint32(p, true) !== 0x02014b50) throw zipError(`central directory entry ${k} is malformed`);
    const flags = v.getUint16(p + 8, true);
    const method = v.getUint16(p + 10, true);
    const crc = v.getUint32(p + 16, true);
    let compressedSize = v.getUint32(p + 20, true);
    let size = v.getUint32(p + 24, true);
    const nameLen = v.getUint16(p + 28, true);
    const extraLen = v.getUint16(p + 30, true);
    const commentLen = v.getUint16(p + 32, true);
    let localOffset = v.getUint32(p + 42, true);
    const next = p + 46 + nameLen + extraLen + commentLen;
    if (next > cdEnd) throw zipError(`central directory entry ${k} overruns the directory`);
    const name = new TextDecoder('utf-8', { fatal: false }).decode(bytes.subarray(p + 46, p + 46 + nameLen));
    if (flags & 1) throw zipError(`entry '${name}' is encrypted`);
    if (method !== 0 && method !== 8) throw zipError(`entry '${name}' uses compression method ${method} (stored or deflate only)`);
    // zip64 extra field (id 1): the 64-bit values present are those whose 32-bit field is 0xffffffff, in this order.
    if (size === 0xffffffff || compressedSize === 0xffffffff || localOffset === 0xffffffff) {
      let e = p + 46 + nameLen;
      const eEnd = e + extraLen;
      let found = false;
      while (e + 4 <= eEnd) {
        const id = v.getUint16(e, true);
        const sz = v.getUint16(e + 2, true);
        if (e + 4 + sz > eEnd) break;
        if (id === 1) {
          let q = e + 4;
          const need = (size === 0xffffffff ? 8 : 0) + (compressedSize === 0xffffffff ? 8 : 0) + (localOffset === 0xffffffff ? 8 : 0);
          if (sz < need) throw zipError(`entry '${name}' has a short zip64 field`);
          if (size === 0xffffffff) {
            size = u64(v, q);
            q += 8;
          }
          if (compressedSize === 0xffffffff) {
            compressedSize = u64(v, q);
            q += 8;
          }
          if (localOffset === 0xffffffff) localOffset = u64(v, q);
          found = true;
          break;
        }
        e += 4 + sz;
      }
      if (!found) throw zipError(`entry '${name}' lacks its zip64 field`);
    }
    if (names.has(name)) throw zipError(`duplicate entry '${name}'`);
    names.add(name);
    entries.push({ name, method, crc, compressedSize, size, localOffset });
    p = next;
  }
  return entries;
}

function readEntry(bytes: Uint8Array, e: ZipEntry, limits: ZipLimits): Uint8Array {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const lo = e.localOffset;
  if (lo + 30 > bytes.length || v.getUint32(lo, true) !== 0x04034b50) throw zipError(`entry '${e.name}': bad local header`);
  const start = lo + 30 + v.getUint16(lo + 26, true) + v.getUint16(lo + 28, true);
  const end = start + e.compressedSize;
  if (end > bytes.length) throw zipError(`entry '${e.name}': data runs past the end of the file`);
  if (e.size > limits.maxEntryBytes) {
    throw zipError(`entry '${e.name}' is ${e.size} bytes uncompressed (at most ${limits.maxEntryBytes})`, { entry: e.name, size: e.size }, 413);
  }
  const src = bytes.subarray(start, end);
  let out: Uint8Array;
  if (e.method === 0) {
    if (e.compressedSize !== e.size) throw zipError(`entry '${e.name}': stored sizes disagree`);
    out = src;
  } else {
    out = new Uint8Array(e.size);
    let pos = 0;
    let done = false;
    let overflow = false;
    const inflater = new Inflate((chunk, final) => {
      if (pos + chunk.length > out.length) overflow = true;
      else out.set(chunk, pos);
      pos += chunk.length;
      if (final) done = true;
    });
    // Slices of 64 KiB bound the work done before an oversized stream is noticed (deflate expands ≤ 1032×).
    const SLICE = 65_536;
    try {
      for (let s = 0; s < src.length && !overflow && !done; s += SLICE) {
        const last = s + SLICE >= src.length;
        inflater.push(src.subarray(s, Math.min(src.length, s + SLICE)), last);
      }
    } catch (err) {
      throw zipError(`entry '${e.name}': corrupt deflate data (${(err as Error).message})`);
    }
    if (overflow || pos !== e.size) throw zipError(`entry '${e.name}': inflated to ${overflow ? 'more than' : pos} bytes, declared ${e.size}`);
  }
  if (crc32(out) !== e.crc) throw zipError(`entry '${e.name}': CRC-32 mismatch (corrupt archive)`);
  return out;
}

/**
 * Reads the `.npy` arrays of an `.npz` whose names (without `.npy`) are in `wanted`; other entries are
 * listed in `ignored` and never inflated. Declared sizes are checked against `limits` first.
 */
export function parseNpz(bytes: Uint8Array, wanted: readonly string[], limits: ZipLimits): { arrays: Map<string, NpyArray>; ignored: string[] } {
  const entries = listZip(bytes, limits);
  const arrays = new Map<string, NpyArray>();
  const ignored: string[] = [];
  const chosen = entries.filter((e) => {
    const key = e.name.endsWith('.npy') ? e.name.slice(0, -4) : '';
    if (wanted.includes(key)) return true;
    ignored.push(e.name);
    return false;
  });
  const total = chosen.reduce((s, e) => s + e.size, 0);
  if (total > limits.maxTotalBytes) {
    throw zipError(`arrays total ${total} bytes uncompressed (at most ${limits.maxTotalBytes})`, { size: total }, 413);
  }
  for (const e of chosen) {
    const key = e.name.slice(0, -4);
    arrays.set(key, parseNpy(readEntry(bytes, e, limits), e.name));
  }
  return { arrays, ignored };
}
