import { DTYPE_BYTES, type DType, FLOAT_DTYPES } from '../tensors.js';

/**
 * Exact float conversions between the checkpoint dtypes and float32.
 *
 * Everything works on bit patterns (Uint32Array views, integer arithmetic), never through a JS
 * number, so NaN payloads (signalling NaNs included) survive a F16/BF16 → F32 → F16/BF16 round trip.
 */

// The typed-array views below assume a little-endian host, which is what every platform Node
// ships prebuilt binaries for except s390x. Fail loudly rather than corrupt checkpoints there.
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error('sparsoup checkpoint code needs a little-endian host');
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** Bits of the float32 nearest to `x` (Math.fround rounds ties to even). */
export function float32Bits(x: number): number {
  f32Scratch[0] = x;
  return u32Scratch[0];
}

export function float32FromBits(bits: number): number {
  u32Scratch[0] = bits;
  return f32Scratch[0];
}

/** IEEE half bits → float32 bits. Exact: every half is a float32. */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  // Subnormal m·2^-24: shift the leading one into the implicit bit position (bit 10).
  let k = 0;
  while ((mant & 0x400) === 0) {
    mant <<= 1;
    k++;
  }
  return (sign | ((113 - k) << 23) | ((mant & 0x3ff) << 13)) >>> 0;
}

/** float32 bits → IEEE half bits, round to nearest, ties to even; overflow → ±Inf; NaN stays NaN. */
export function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) {
    if (mant === 0) return sign | 0x7c00;
    // Keep the top payload bits; a payload living only in the low 13 bits must still be a NaN.
    const m = mant >>> 13;
    return sign | 0x7c00 | (m === 0 ? 0x200 : m);
  }
  const e = exp - 112; // half biased exponent
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Result is subnormal (or zero): m = (1.mant)·2^(e-14) in units of 2^-24.
    if (e < -10) return sign; // below half the smallest subnormal
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (half & 1) === 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (and reaches Inf at the top).
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) === 1)) half++;
  return sign | half;
}

/** bfloat16 bits → float32 bits (bfloat16 is the top half of a float32). */
export function bf16BitsToF32Bits(h: number): number {
  return (h << 16) >>> 0;
}

/** float32 bits → bfloat16 bits, round to nearest, ties to even; NaN stays NaN. */
export function f32BitsToBf16Bits(x: number): number {
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) {
    const h = x >>> 16;
    return (h & 0x7f) === 0 ? h | 0x40 : h;
  }
  // No wrap-around: the largest non-NaN pattern plus 0x8000 stays below 2^32.
  return ((x >>> 0) + 0x7fff + ((x >>> 16) & 1)) >>> 16;
}

export function f16ToF32(h: number): number {
  return float32FromBits(f16BitsToF32Bits(h));
}

export function f32ToF16(x: number): number {
  return f32BitsToF16Bits(float32Bits(x));
}

export function bf16ToF32(h: number): number {
  return float32FromBits(bf16BitsToF32Bits(h));
}

export function f32ToBf16(x: number): number {
  return f32BitsToBf16Bits(float32Bits(x));
}

/** float64 → float32, round to nearest, ties to even (what Math.fround does). */
export function f64ToF32(x: number): number {
  return Math.fround(x);
}

let f16Table: Uint32Array | undefined;
/** All 65536 half patterns as float32 bits: decoding is one table load per element. */
function halfTable(): Uint32Array {
  if (!f16Table) {
    f16Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToF32Bits(h);
  }
  return f16Table;
}

function elementCount(dtype: DType, byteLength: number): number {
  const size = DTYPE_BYTES[dtype];
  if (size === undefined) throw new TypeError(`unknown dtype ${String(dtype)}`);
  if (byteLength % size !== 0) throw new RangeError(`${byteLength} bytes is not a whole number of ${dtype} elements`);
  return byteLength / size;
}

function outputArray(n: number, out?: Float32Array): Float32Array {
  return out && out.length >= n ? out.subarray(0, n) : new Float32Array(n);
}

/**
 * Decodes little-endian `bytes` of `dtype` into float32. `bytes` may start at any byte offset.
 * `out` is reused when it is large enough (the result is then a view of it).
 * Integer and bool dtypes are converted by value (64-bit integers beyond 2^24 lose precision).
 */
export function decodeFloat32(dtype: DType, bytes: Uint8Array, out?: Float32Array): Float32Array {
  const n = elementCount(dtype, bytes.byteLength);
  const res = outputArray(n, out);
  const bits = new Uint32Array(res.buffer, res.byteOffset, n);
  const aligned = (a: number) => (bytes.byteOffset & (a - 1)) === 0;
  switch (dtype) {
    case 'F32':
      new Uint8Array(res.buffer, res.byteOffset, n * 4).set(bytes);
      break;
    case 'F16': {
      const table = halfTable();
      if (aligned(2)) {
        const src = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
        for (let i = 0; i < n; i++) bits[i] = table[src[i]];
      } else {
        for (let i = 0, p = 0; i < n; i++, p += 2) bits[i] = table[bytes[p] | (bytes[p + 1] << 8)];
      }
      break;
    }
    case 'BF16':
      if (aligned(2)) {
        const src = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
        for (let i = 0; i < n; i++) bits[i] = src[i] << 16;
      } else {
        for (let i = 0, p = 0; i < n; i++, p += 2) bits[i] = (bytes[p] << 16) | (bytes[p + 1] << 24);
      }
      break;
    case 'F64':
      if (aligned(8)) {
        const src = new Float64Array(bytes.buffer, bytes.byteOffset, n);
        for (let i = 0; i < n; i++) res[i] = src[i];
      } else {
        const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        for (let i = 0; i < n; i++) res[i] = view.getFloat64(i * 8, true);
      }
      break;
    case 'U8':
    case 'BOOL':
      for (let i = 0; i < n; i++) res[i] = bytes[i];
      break;
    case 'I8': {
      const src = new Int8Array(bytes.buffer, bytes.byteOffset, n);
      for (let i = 0; i < n; i++) res[i] = src[i];
      break;
    }
    default: {
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      const size = DTYPE_BYTES[dtype];
      const get: (o: number) => number =
        dtype === 'I16' ? (o) => view.getInt16(o, true)
        : dtype === 'U16' ? (o) => view.getUint16(o, true)
        : dtype === 'I32' ? (o) => view.getInt32(o, true)
        : dtype === 'U32' ? (o) => view.getUint32(o, true)
        : dtype === 'I64' ? (o) => Number(view.getBigInt64(o, true))
        : (o) => Number(view.getBigUint64(o, true));
      for (let i = 0; i < n; i++) res[i] = get(i * size);
    }
  }
  return res;
}

/**
 * Encodes float32 `data` as little-endian `dtype` bytes (F32, F16, BF16 or F64; rounding to
 * nearest, ties to even). `out` is reused when it is large enough (the result is then a view of it).
 */
export function encodeFromFloat32(dtype: DType, data: Float32Array, out?: Uint8Array): Uint8Array {
  if (!FLOAT_DTYPES.has(dtype)) throw new TypeError(`cannot encode float32 values as ${dtype}: only float dtypes`);
  const n = data.length;
  const byteLength = n * DTYPE_BYTES[dtype];
  const res = out && out.byteLength >= byteLength ? out.subarray(0, byteLength) : new Uint8Array(byteLength);
  const src = new Uint32Array(data.buffer, data.byteOffset, n);
  switch (dtype) {
    case 'F32':
      res.set(new Uint8Array(data.buffer, data.byteOffset, byteLength));
      break;
    case 'F16':
    case 'BF16': {
      const conv = dtype === 'F16' ? f32BitsToF16Bits : f32BitsToBf16Bits;
      if ((res.byteOffset & 1) === 0) {
        const dst = new Uint16Array(res.buffer, res.byteOffset, n);
        for (let i = 0; i < n; i++) dst[i] = conv(src[i]);
      } else {
        for (let i = 0, p = 0; i < n; i++, p += 2) {
          const h = conv(src[i]);
          res[p] = h & 0xff;
          res[p + 1] = h >>> 8;
        }
      }
      break;
    }
    case 'F64': {
      const view = new DataView(res.buffer, res.byteOffset, byteLength);
      for (let i = 0; i < n; i++) view.setFloat64(i * 8, data[i], true);
      break;
    }
  }
  return res;
}
