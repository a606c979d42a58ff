import { CoreInputError } from '../errors.js';

/**
 * Strict parser for the IDX format of MNIST (http://yann.lecun.com/exdb/mnist/): two zero bytes, a dtype
 * byte, the number of dimensions, then one big-endian uint32 per dimension, then the data, big-endian,
 * row-major. Nothing is allocated before the declared size has been checked against the bytes present,
 * so a forged header cannot make the parser reserve gigabytes.
 */

export type IdxDType = 'uint8' | 'int8' | 'int16' | 'int32' | 'float32' | 'float64';

const DTYPES = new Map<number, { name: IdxDType; bytes: number }>([
  [0x08, { name: 'uint8', bytes: 1 }],
  [0x09, { name: 'int8', bytes: 1 }],
  [0x0b, { name: 'int16', bytes: 2 }],
  [0x0c, { name: 'int32', bytes: 4 }],
  [0x0d, { name: 'float32', bytes: 4 }],
  [0x0e, { name: 'float64', bytes: 8 }],
]);

export interface IdxArray {
  dtype: IdxDType;
  dims: number[];
  /** uint8 data is a view of the input bytes (no copy); other dtypes are converted to host order. */
  data: Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;
}

/** More dimensions than this is not an image or label file. */
const MAX_DIMS = 8;

export function parseIdx(bytes: Uint8Array, what = 'IDX file'): IdxArray {
  const fail = (m: string, d: Record<string, unknown> = {}) => new CoreInputError('invalid-idx', `${what}: ${m}`, { file: what, ...d });
  if (bytes.length < 4) throw fail(`too short for a header (${bytes.length} bytes)`);
  if (bytes[0] !== 0 || bytes[1] !== 0) throw fail('bad magic number (the first two bytes must be 0)');
  const dt = DTYPES.get(bytes[2]);
  if (!dt) throw fail(`unknown dtype byte 0x${bytes[2].toString(16).padStart(2, '0')}`, { dtypeByte: bytes[2] });
  const ndims = bytes[3];
  if (ndims < 1 || ndims > MAX_DIMS) throw fail(`unsupported number of dimensions ${ndims} (1–${MAX_DIMS})`, { ndims });
  const header = 4 + 4 * ndims;
  if (bytes.length < header) throw fail(`truncated header: ${ndims} dimensions need ${header} bytes, got ${bytes.length}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims: number[] = [];
  const available = bytes.length - header;
  let count = 1;
  for (let i = 0; i < ndims; i++) {
    const d = view.getUint32(4 + 4 * i, false);
    if (d === 0) throw fail(`dimension ${i} is 0`, { dims: [...dims, d] });
    dims.push(d);
    count *= d;
    // Checked per dimension so the product stays exact (≤ bytes present < 2^53) and nothing huge is allocated.
    if (count * dt.bytes > available) {
      throw fail(`declared shape needs more data than the ${available} bytes present`, { dims, dtype: dt.name });
    }
  }
  const expected = count * dt.bytes;
  if (expected !== available) {
    throw fail(`length mismatch: shape [${dims.join(', ')}] of ${dt.name} needs ${expected} data bytes, got ${available}`, {
      dims,
      dtype: dt.name,
      expectedBytes: expected,
      actualBytes: available,
    });
  }
  const body = bytes.subarray(header);
  let data: IdxArray['data'];
  switch (dt.name) {
    case 'uint8':
      data = body;
      break;
    case 'int8':
      data = new Int8Array(body.buffer, body.byteOffset, count);
      break;
    case 'int16': {
      const a = new Int16Array(count);
      for (let i = 0; i < count; i++) a[i] = view.getInt16(header + 2 * i, false);
      data = a;
      break;
    }
    case 'int32': {
      const a = new Int32Array(count);
      for (let i = 0; i < count; i++) a[i] = view.getInt32(header + 4 * i, false);
      data = a;
      break;
    }
    case 'float32': {
      const a = new Float32Array(count);
      for (let i = 0; i < count; i++) a[i] = view.getFloat32(header + 4 * i, false);
      data = a;
      break;
    }
    case 'float64': {
      const a = new Float64Array(count);
      for (let i = 0; i < count; i++) a[i] = view.getFloat64(header + 8 * i, false);
      data = a;
      break;
    }
  }
  return { dtype: dt.name, dims, data };
}

/** Images: uint8, N×H×W (one channel) or N×H×W×C. Returns a view of the input, not a copy. */
export function parseIdxImages(bytes: Uint8Array, what = 'IDX images'): { x: Uint8Array; shape: [number, number, number, number] } {
  const a = parseIdx(bytes, what);
  if (a.dtype !== 'uint8') throw new CoreInputError('invalid-idx', `${what}: images must be uint8, got ${a.dtype}`, { dtype: a.dtype });
  if (a.dims.length !== 3 && a.dims.length !== 4) {
    throw new CoreInputError('invalid-idx', `${what}: images must be N×H×W or N×H×W×C, got shape [${a.dims.join(', ')}]`, {
      dims: a.dims,
    });
  }
  const [n, h, w, c = 1] = a.dims;
  return { x: a.data as Uint8Array, shape: [n, h, w, c] };
}

/** Labels: a 1-D integer array (uint8 as in MNIST, or int8/int16/int32), returned as numbers. */
export function parseIdxLabels(bytes: Uint8Array, what = 'IDX labels'): Uint8Array | Int8Array | Int16Array | Int32Array {
  const a = parseIdx(bytes, what);
  if (a.dims.length !== 1) {
    throw new CoreInputError('invalid-idx', `${what}: labels must be 1-D, got shape [${a.dims.join(', ')}]`, { dims: a.dims });
  }
  if (a.dtype === 'float32' || a.dtype === 'float64') {
    throw new CoreInputError('invalid-idx', `${what}: labels must be integers, got ${a.dtype}`, { dtype: a.dtype });
  }
  return a.data as Uint8Array | Int8Array | Int16Array | Int32Array;
}

/** Serialises an array as IDX (tests, fixtures, exports). */
export function encodeIdx(dtype: 'uint8' | 'int32' | 'float32', dims: number[], data: ArrayLike<number>): Uint8Array {
  const code = dtype === 'uint8' ? 0x08 : dtype === 'int32' ? 0x0c : 0x0d;
  const size = dtype === 'uint8' ? 1 : 4;
  const header = 4 + 4 * dims.length;
  const out = new Uint8Array(header + data.length * size);
  const v = new DataView(out.buffer);
  out[2] = code;
  out[3] = dims.length;
  for (let i = 0; i < dims.length; i++) v.setUint32(4 + 4 * i, dims[i], false);
  for (let i = 0; i < data.length; i++) {
    if (dtype === 'uint8') out[header + i] = data[i];
    else if (dtype === 'int32') v.setInt32(header + 4 * i, data[i], false);
    else v.setFloat32(header + 4 * i, data[i], false);
  }
  return out;
}
