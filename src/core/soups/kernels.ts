import { compiledOnce, get, I32, i32c, moduleBytes, set, uleb, V128, vec, type WasmMemory, wasmApi } from '../wasm-bytes.js';
/**
 * The merge's inner loops as a tiny WebAssembly SIMD module, assembled here from bytes (no build step,
 * no dependency). V8 does not vectorise `acc[i] += w * x[i]` over typed arrays: measured here at
 * ~1.7 ns per element in JS against ~0.2 ns for NumPy, which would make the merge compute-bound far
 * below disk speed. The same loops in plain JS (`jsKernels`) are the fallback and the tests' oracle.
 *
 * Every pointer is a byte offset into one memory; `n` counts elements. Accumulators are float64:
 * with m ≤ 16 candidates the sum's rounding error (≤ m·2⁻⁵³ relative) is far below half a float32
 * ulp, so the float32 result is the correctly rounded weighted mean in all but cancellation cases,
 * and a soup of identical models is that model bit for bit (float32 accumulation of three identical
 * values times 1/3 is not).
 *
 * - `accSet(acc, x, n, w)`: acc[i] = w·x[i]  (x float32, acc float64)
 * - `accAdd(acc, x, n, w)`: acc[i] = acc[i] + w·x[i]
 *   Both round n up to a multiple of 8: callers pad acc and x regions (reads past x are harmless).
 * - `impliedBits(bits, x, n)`: bit i of bits (LSB first) = x[i] ≠ 0 (NaN kept, ±0 pruned); n rounded
 *   up to 8, so whole bytes are written.
 * - `finish(out, acc, n)`: out[i] = float32(acc[i]), exactly n elements.
 * - `finishMasked(out, acc, n, bits)`: the same with pruned positions written as +0, exactly n.
 *   The 16-entry lane-mask table lives at address 0 (`TABLE_BYTES`).
 * - `mean(out, table, m, n)` / `meanMasked(out, table, m, n, bits)`: the fused form for float32
 *   inputs, out[i] = float32(w₀x₀[i] + w₁x₁[i] + …) with the sum kept in registers; `table` holds m
 *   entries of 16 bytes (i32 pointer to xⱼ, 4 bytes padding, f64 weight), `TABLE_ENTRY_BYTES`.
 *   Same operations in the same order as accSet + accAdd… + finish, so the results are identical.
 * - `meanDerived(out, table, m, n)`: `mean` with +0 wherever the first candidate is ±0 (its zero
 *   pattern is the shared mask), with no separate pass to build mask bits.
 */

export interface Kernels {
  accSet(acc: number, x: number, n: number, w: number): void;
  accAdd(acc: number, x: number, n: number, w: number): void;
  impliedBits(bits: number, x: number, n: number): void;
  finish(out: number, acc: number, n: number): void;
  finishMasked(out: number, acc: number, n: number, bits: number): void;
  mean(out: number, table: number, m: number, n: number): void;
  meanMasked(out: number, table: number, m: number, n: number, bits: number): void;
  meanDerived(out: number, table: number, m: number, n: number): void;
}

export const TABLE_ENTRY_BYTES = 16;

/** Bytes at address 0 reserved for the nibble → lane-mask table. */
export const TABLE_BYTES = 256;

const F64 = 0x7c;
// Instructions (core and SIMD opcodes from the WebAssembly 2.0 spec).
const add = [0x6a];
const and = [0x71];
const or = [0x72];
const shl = [0x74];
const shrU = [0x76];
const geU = [0x4f];
const mem = (offset: number) => [0, ...uleb(offset)]; // align hint 1: every access may be unaligned
const load8u = (o = 0) => [0x2d, ...mem(o)];
const store8 = (o = 0) => [0x3a, ...mem(o)];
const f32store = [0x38, ...mem(0)];
const f64load = [0x2b, ...mem(0)];
const i32load = [0x28, ...mem(0)];
const f32load = [0x2a, ...mem(0)];
const f64loadAt = (o: number) => [0x2b, ...mem(o)];
const f64promote = [0xbb];
const f64mul = [0xa2];
const f64addOp = [0xa0];
const f32ne = [0x5c];
const f32demote = [0xb6];
const f32zero = [0x43, 0, 0, 0, 0];
const select = [0x1b];
const simd = (op: number, ...imm: number[]) => [0xfd, ...uleb(op), ...imm];
const vload = (o = 0) => simd(0x00, ...mem(o));
const vstore = (o = 0) => simd(0x0b, ...mem(o));
const vzero = simd(0x0c, ...new Array(16).fill(0));
const load64zero = (o = 0) => simd(0x5d, ...mem(o));
const f64x2splat = simd(0x14);
const promoteLow = simd(0x5f);
const demoteZero = simd(0x5e);
const f64x2add = simd(0xf0);
const f64x2mul = simd(0xf2);
const vand = simd(0x4e);
const f32x4ne = simd(0x42);
const bitmask = simd(0xa4);
/** Lanes 0–1 of a and lanes 0–1 of b (two demoted pairs → four float32). */
const joinPairs = simd(0x0d, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);

/** `while (local[p] < local[end]) { body }` as block/loop. */
function whileBelow(p: number, end: number, body: number[]): number[] {
  return [0x02, 0x40, 0x03, 0x40, ...get(p), ...get(end), ...geU, 0x0d, 1, ...body, 0x0c, 0, 0x0b, 0x0b];
}
const bump = (p: number, by: number) => [...get(p), ...i32c(by), ...add, ...set(p)];
/** local[dst] = local[base] + ((local[n] rounded up or down to 8) << shift) */
function endOf(dst: number, base: number, n: number, shift: number, roundUp: boolean): number[] {
  return [...get(base), ...get(n), ...(roundUp ? [...i32c(7), ...add] : []), ...i32c(-8), ...and, ...i32c(shift), ...shl, ...add, ...set(dst)];
}

function accBody(addTo: boolean): number[] {
  // params: 0 acc, 1 x, 2 n, 3 w; locals: 4 end (i32), 5 wv (v128)
  const pair = (k: number) => [
    ...get(0),
    ...(addTo ? [...get(0), ...vload(16 * k)] : []),
    ...get(1), ...load64zero(8 * k), ...promoteLow, ...get(5), ...f64x2mul,
    ...(addTo ? f64x2add : []),
    ...vstore(16 * k),
  ];
  return [
    ...get(3), ...f64x2splat, ...set(5),
    ...endOf(4, 1, 2, 2, true),
    ...whileBelow(1, 4, [...pair(0), ...pair(1), ...pair(2), ...pair(3), ...bump(1, 32), ...bump(0, 64)]),
  ];
}

function impliedBody(): number[] {
  // params: 0 bits, 1 x, 2 n; locals: 3 end
  return [
    ...endOf(3, 1, 2, 2, true),
    ...whileBelow(1, 3, [
      ...get(0),
      ...get(1), ...vload(0), ...vzero, ...f32x4ne, ...bitmask,
      ...get(1), ...vload(16), ...vzero, ...f32x4ne, ...bitmask, ...i32c(4), ...shl, ...or,
      ...store8(),
      ...bump(0, 1), ...bump(1, 32),
    ]),
  ];
}

function finishBody(masked: boolean): number[] {
  // params: 0 out, 1 acc, 2 n, (3 bits); locals: simdEnd, end, byte, k
  const simdEnd = masked ? 4 : 3;
  const end = simdEnd + 1;
  const byte = end + 1;
  const k = byte + 1;
  const quad = (o: number) => [...get(1), ...vload(o), ...demoteZero, ...get(1), ...vload(o + 16), ...demoteZero, ...joinPairs];
  const lanes = (nibble: number[]) => [...nibble, ...i32c(4), ...shl, ...vload(0), ...vand];
  const simdStep = masked
    ? [
        ...get(3), ...load8u(), ...set(byte),
        ...get(0), ...quad(0), ...lanes([...get(byte), ...i32c(15), ...and]), ...vstore(0),
        ...get(0), ...quad(32), ...lanes([...get(byte), ...i32c(4), ...shrU]), ...vstore(16),
        ...bump(3, 1),
      ]
    : [...get(0), ...quad(0), ...vstore(0), ...get(0), ...quad(32), ...vstore(16)];
  const value = [...get(1), ...f64load, ...f32demote];
  const tailStep = masked
    ? [...get(0), ...value, ...f32zero, ...get(byte), ...get(k), ...shrU, ...i32c(1), ...and, ...select, ...f32store, ...bump(k, 1)]
    : [...get(0), ...value, ...f32store];
  return [
    ...endOf(simdEnd, 0, 2, 2, false),
    ...get(0), ...get(2), ...i32c(2), ...shl, ...add, ...set(end),
    ...whileBelow(0, simdEnd, [...simdStep, ...bump(0, 32), ...bump(1, 64)]),
    ...(masked ? [...get(3), ...load8u(), ...set(byte), ...i32c(0), ...set(k)] : []),
    ...whileBelow(0, end, [...tailStep, ...bump(0, 4), ...bump(1, 8)]),
  ];
}

function meanBody(mask: 'none' | 'bits' | 'derive'): number[] {
  // params: 0 out, 1 table, 2 m, 3 n, (4 bits)
  const P = mask === 'bits' ? 5 : 4;
  const [simdEnd, end, off, tp, tend, xp, byte, k] = [P, P + 1, P + 2, P + 3, P + 4, P + 5, P + 6, P + 7];
  const x0 = byte; // 'derive' needs no byte: the first candidate's pointer instead
  const a = [P + 8, P + 9, P + 10, P + 11];
  const wv = P + 12;
  const sum = P + 13;
  const entry = (t: number) => [...get(t), ...i32load, ...get(off), ...add, ...set(xp), ...get(t), ...f64loadAt(8), ...f64x2splat, ...set(wv)];
  const term = (q: number) => [...get(xp), ...load64zero(8 * q), ...promoteLow, ...get(wv), ...f64x2mul];
  const quad = (p: number, q: number) => [...get(p), ...demoteZero, ...get(q), ...demoteZero, ...joinPairs];
  const lanes = (nibble: number[]) => [...nibble, ...i32c(4), ...shl, ...vload(0), ...vand];
  // Lanes where the first candidate is non-zero (NaN included): its zero pattern as a lane mask.
  const nonZero = (o: number) => [...get(x0), ...vload(o), ...vzero, ...f32x4ne, ...vand];
  const store =
    mask === 'bits'
      ? [
          ...get(4), ...load8u(), ...set(byte),
          ...get(0), ...quad(a[0], a[1]), ...lanes([...get(byte), ...i32c(15), ...and]), ...vstore(0),
          ...get(0), ...quad(a[2], a[3]), ...lanes([...get(byte), ...i32c(4), ...shrU]), ...vstore(16),
          ...bump(4, 1),
        ]
      : mask === 'derive'
        ? [...get(0), ...quad(a[0], a[1]), ...nonZero(0), ...vstore(0), ...get(0), ...quad(a[2], a[3]), ...nonZero(16), ...vstore(16)]
        : [...get(0), ...quad(a[0], a[1]), ...vstore(0), ...get(0), ...quad(a[2], a[3]), ...vstore(16)];
  const scalarX = (t: number) => [...get(t), ...i32load, ...get(off), ...add, ...f32load];
  const scalarTerm = (t: number) => [...scalarX(t), ...f64promote, ...get(t), ...f64loadAt(8), ...f64mul];
  const tailStore =
    mask === 'bits'
      ? [...get(0), ...get(sum), ...f32demote, ...f32zero, ...get(byte), ...get(k), ...shrU, ...i32c(1), ...and, ...select, ...f32store, ...bump(k, 1)]
      : mask === 'derive'
        ? [...get(0), ...get(sum), ...f32demote, ...f32zero, ...scalarX(1), ...f32zero, ...f32ne, ...select, ...f32store]
        : [...get(0), ...get(sum), ...f32demote, ...f32store];
  return [
    ...endOf(simdEnd, 0, 3, 2, false),
    ...get(0), ...get(3), ...i32c(2), ...shl, ...add, ...set(end),
    ...get(1), ...get(2), ...i32c(4), ...shl, ...add, ...set(tend),
    ...whileBelow(0, simdEnd, [
      // The first candidate initialises the sums (0 + w·x would turn a -0 product into +0).
      ...entry(1),
      ...(mask === 'derive' ? [...get(xp), ...set(x0)] : []),
      ...a.flatMap((r, q) => [...term(q), ...set(r)]),
      ...get(1), ...i32c(TABLE_ENTRY_BYTES), ...add, ...set(tp),
      ...whileBelow(tp, tend, [...entry(tp), ...a.flatMap((r, q) => [...get(r), ...term(q), ...f64x2add, ...set(r)]), ...bump(tp, TABLE_ENTRY_BYTES)]),
      ...store,
      ...bump(0, 32), ...bump(off, 32),
    ]),
    ...(mask === 'bits' ? [...get(4), ...load8u(), ...set(byte)] : []),
    ...whileBelow(0, end, [
      ...scalarTerm(1), ...set(sum),
      ...get(1), ...i32c(TABLE_ENTRY_BYTES), ...add, ...set(tp),
      ...whileBelow(tp, tend, [...get(sum), ...scalarTerm(tp), ...f64addOp, ...set(sum), ...bump(tp, TABLE_ENTRY_BYTES)]),
      ...tailStore,
      ...bump(0, 4), ...bump(off, 4),
    ]),
  ];
}

function fn(locals: [number, number][], body: number[]): number[] {
  const code = [...vec(locals.map(([count, type]) => [...uleb(count), type])), ...body, 0x0b];
  return [...uleb(code.length), ...code];
}

/** The module's bytes: imports `env.memory`, exports the kernels. */
export function kernelModuleBytes(): Uint8Array<ArrayBuffer> {
  const types = [
    [0x60, ...vec([[I32], [I32], [I32], [F64]]), ...vec([])], // (acc, x, n, w)
    [0x60, ...vec([[I32], [I32], [I32]]), ...vec([])], // (p, q, n)
    [0x60, ...vec([[I32], [I32], [I32], [I32]]), ...vec([])], // (out, acc, n, bits) and (out, table, m, n)
    [0x60, ...vec([[I32], [I32], [I32], [I32], [I32]]), ...vec([])], // (out, table, m, n, bits)
  ];
  const meanLocals: [number, number][] = [[8, I32], [5, V128], [1, F64]];
  const funcs: { name: string; type: number; code: number[] }[] = [
    { name: 'accSet', type: 0, code: fn([[1, I32], [1, V128]], accBody(false)) },
    { name: 'accAdd', type: 0, code: fn([[1, I32], [1, V128]], accBody(true)) },
    { name: 'impliedBits', type: 1, code: fn([[1, I32]], impliedBody()) },
    { name: 'finish', type: 1, code: fn([[4, I32]], finishBody(false)) },
    { name: 'finishMasked', type: 2, code: fn([[4, I32]], finishBody(true)) },
    { name: 'mean', type: 2, code: fn(meanLocals, meanBody('none')) },
    { name: 'meanMasked', type: 3, code: fn(meanLocals, meanBody('bits')) },
    { name: 'meanDerived', type: 2, code: fn(meanLocals, meanBody('derive')) },
  ];
  return moduleBytes(types, funcs);
}

/** A memory for the kernels (the JS fallback's when WebAssembly is missing: a plain buffer). */
export function createMemory(bytes: number): WasmMemory {
  const pages = Math.ceil(bytes / 65536);
  return wasmApi ? new wasmApi.Memory({ initial: pages }) : { buffer: new ArrayBuffer(pages * 65536) };
}

/** The compiled module, or null where WebAssembly SIMD is unavailable (the JS kernels then run). */
const kernelModule = compiledOnce(kernelModuleBytes);

/** Writes the nibble → lane-mask table at address 0 (lane l all ones iff bit l of the nibble). */
export function writeLaneTable(memory: ArrayBuffer): void {
  const t = new Uint32Array(memory, 0, 64);
  for (let nib = 0; nib < 16; nib++) for (let l = 0; l < 4; l++) t[nib * 4 + l] = (nib >> l) & 1 ? 0xffffffff : 0;
}

export function wasmKernels(memory: WasmMemory): Kernels | null {
  const mod = kernelModule();
  if (!mod || !wasmApi || !(memory instanceof wasmApi.Memory)) return null;
  const e = new wasmApi.Instance(mod, { env: { memory } }).exports as unknown as Kernels;
  return { accSet: e.accSet, accAdd: e.accAdd, impliedBits: e.impliedBits, finish: e.finish, finishMasked: e.finishMasked, mean: e.mean, meanMasked: e.meanMasked, meanDerived: e.meanDerived };
}

/**
 * The same kernels in plain JS over the same memory (same arithmetic: double products and sums,
 * one rounding to float32 at the end), for hosts without WebAssembly SIMD and as the tests' oracle.
 * `buffer()` is called on every use because growing a memory detaches its old ArrayBuffer.
 */
export function jsKernels(buffer: () => ArrayBuffer): Kernels {
  const f32 = (p: number, n: number) => new Float32Array(buffer(), p, n);
  const f64 = (p: number, n: number) => new Float64Array(buffer(), p, n);
  const round8 = (n: number) => (n + 7) & ~7;
  return {
    accSet(acc, x, n, w) {
      const a = f64(acc, round8(n));
      const v = f32(x, round8(n));
      for (let i = 0; i < a.length; i++) a[i] = w * v[i];
    },
    accAdd(acc, x, n, w) {
      const a = f64(acc, round8(n));
      const v = f32(x, round8(n));
      for (let i = 0; i < a.length; i++) a[i] = a[i] + w * v[i];
    },
    impliedBits(bits, x, n) {
      const v = f32(x, round8(n));
      const b = new Uint8Array(buffer(), bits, round8(n) >> 3);
      for (let j = 0; j < b.length; j++) {
        let byte = 0;
        for (let k = 0; k < 8; k++) if (!(v[j * 8 + k] === 0)) byte |= 1 << k;
        b[j] = byte;
      }
    },
    finish(out, acc, n) {
      const o = f32(out, n);
      const a = f64(acc, n);
      for (let i = 0; i < n; i++) o[i] = a[i];
    },
    finishMasked(out, acc, n, bits) {
      const o = f32(out, n);
      const a = f64(acc, n);
      const b = new Uint8Array(buffer(), bits, (n + 7) >> 3);
      for (let i = 0; i < n; i++) o[i] = (b[i >> 3] >> (i & 7)) & 1 ? a[i] : 0;
    },
    mean(out, table, m, n) {
      meanJs(buffer(), out, table, m, n, -1);
    },
    meanMasked(out, table, m, n, bits) {
      meanJs(buffer(), out, table, m, n, bits);
    },
    meanDerived(out, table, m, n) {
      meanJs(buffer(), out, table, m, n, -2);
    },
  };
}

function meanJs(buf: ArrayBuffer, out: number, table: number, m: number, n: number, bits: number): void {
  const t = new DataView(buf, table, m * TABLE_ENTRY_BYTES);
  const xs = Array.from({ length: m }, (_, j) => new Float32Array(buf, t.getInt32(j * TABLE_ENTRY_BYTES, true), n));
  const ws = Array.from({ length: m }, (_, j) => t.getFloat64(j * TABLE_ENTRY_BYTES + 8, true));
  const o = new Float32Array(buf, out, n);
  // bits ≥ 0: mask bits there; -2: the first candidate's zeros; -1: no mask.
  const b = bits >= 0 ? new Uint8Array(buf, bits, (n + 7) >> 3) : null;
  const x0 = xs[0];
  for (let i = 0; i < n; i++) {
    let s = ws[0] * x0[i];
    for (let j = 1; j < m; j++) s = s + ws[j] * xs[j][i];
    const pruned = b ? ((b[i >> 3] >> (i & 7)) & 1) === 0 : bits === -2 && x0[i] === 0;
    o[i] = pruned ? 0 : s;
  }
}
