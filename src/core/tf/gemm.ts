import { setFlagsFromString } from 'node:v8';
import type * as tf from '@tensorflow/tfjs';
import { compiledOnce, get, I32, i32c, moduleBytes, set, uleb, V128, vec } from '../wasm-bytes.js';
import { type HeapBackend, heapInstance, heapOffset } from './wasm-heap.js';

/**
 * A dense float32 matrix product C = act(A·B + bias) as a hand-written WebAssembly SIMD module that
 * uses fused multiply-add (`f32x4.relaxed_madd`, Relaxed SIMD), working on the wasm backend's heap.
 *
 * Why: on the wasm backend every training step of a dense model is mostly matrix products, and
 * XNNPACK's wasm build (what tfjs runs them on) is WebAssembly SIMD 1.0, which has no FMA: a
 * multiply and an add per lane, each rounded. Relaxed SIMD's `relaxed_madd` compiles to one
 * `vfmadd231ps` on an x86-64 with FMA3 (and `fmla` on arm64), twice the multiply-adds per cycle.
 * Node 20's V8 has Relaxed SIMD behind `--experimental-wasm-relaxed-simd` (it ships unflagged from
 * V8 11.4, Node 22); `enableRelaxedSimd()` turns that flag on for the process before anything is
 * compiled. Where it is off or unsupported, `gemmAvailable()` is false and the callers keep XNNPACK.
 *
 * Layout (all pointers are byte offsets into the backend's memory):
 * - A is packed into panels of MR rows, k-major: Ap[p][k][r] = A[p·MR + r, k] (rows past M zero);
 * - B is packed into panels of NR = 8 columns: Bp[q][k][c] = B[k, q·8 + c] (columns past N zero);
 *   both by `pack`, a 2-D strided copy, so a transposed operand costs nothing extra;
 * - for every B panel (kept in L1) and every A panel, MR × 2 float32x4 accumulators start at the
 *   bias (or 0) and take one FMA per (row, half) per k; then ReLU (`f32x4.max`, NaN kept) if fused,
 *   and a store straight into C, or through a scratch tile where the tile crosses C's edge.
 *
 * Each output is bias + Σ_k A[i,k]·B[k,j] accumulated in ascending k with fused multiply-adds
 * (one rounding per k instead of two), so it agrees with XNNPACK and with a float64 reference to
 * float32 rounding of a K-term sum, not bit for bit. `relaxed_madd` may also be unfused on hardware
 * without FMA; either way the order is the same.
 */

/** Rows of A per micro-tile. */
export const MR = 4;
/** Columns of B per micro-tile (two float32x4). */
export const NR = 8;

const tee = (i: number) => [0x22, ...uleb(i)];
const add = [0x6a];
const sub = [0x6b];
const mul = [0x6c];
const and = [0x71];
const geU = [0x4f];
const geS = [0x4e];
const mem = (offset: number) => [0, ...uleb(offset)];
const f32load = (o = 0) => [0x2a, ...mem(o)];
const f32store = (o = 0) => [0x38, ...mem(o)];
const simd = (op: number, ...imm: number[]) => [0xfd, ...uleb(op), ...imm];
const vload = (o = 0) => simd(0x00, ...mem(o));
const vsplat32 = (o = 0) => simd(0x09, ...mem(o));
const vstore = (o = 0) => simd(0x0b, ...mem(o));
const vzero = simd(0x0c, ...new Array(16).fill(0));
const f32x4add = simd(0xe4);
const f32x4mul = simd(0xe6);
const f32x4max = simd(0xe9);
const relaxedMadd = simd(0x105);
const ifThen = (cond: number[], body: number[]) => [...cond, 0x04, 0x40, ...body, 0x0b];
const ifElse = (cond: number[], then: number[], otherwise: number[]) => [...cond, 0x04, 0x40, ...then, 0x05, ...otherwise, 0x0b];
const ifElseV128 = (cond: number[], then: number[], otherwise: number[]) => [...cond, 0x04, V128, ...then, 0x05, ...otherwise, 0x0b];
/** while (p < end) body — unsigned, tested first. */
function whileBelow(p: number, end: number, body: number[]): number[] {
  return [0x02, 0x40, 0x03, 0x40, ...get(p), ...get(end), ...geU, 0x0d, 1, ...body, 0x0c, 0, 0x0b, 0x0b];
}
const bump = (p: number, by: number[]) => [...get(p), ...by, ...add, ...set(p)];

function fn(locals: [number, number][], body: number[]): number[] {
  const code = [...vec(locals.map(([count, type]) => [...uleb(count), type])), ...body, 0x0b];
  return [...uleb(code.length), ...code];
}

/**
 * pack(dst, dRow, dEl, src, sRow, sEl, rows, count): for i < rows, j < count:
 * f32 at dst + i·dRow + j·dEl = f32 at src + i·sRow + j·sEl (strides in bytes).
 */
function packBody(): number[] {
  const [dst, dRow, dEl, src, sRow, sEl, rows, count] = [0, 1, 2, 3, 4, 5, 6, 7];
  const [i, d, s, end] = [8, 9, 10, 11];
  return [
    ...i32c(0), ...set(i),
    ...whileBelow(i, rows, [
      ...get(dst), ...get(i), ...get(dRow), ...mul, ...add, ...set(d),
      ...get(src), ...get(i), ...get(sRow), ...mul, ...add, ...set(s),
      ...get(d), ...get(count), ...get(dEl), ...mul, ...add, ...set(end),
      ...whileBelow(d, end, [...get(d), ...get(s), ...f32load(), ...f32store(), ...bump(d, get(dEl)), ...bump(s, get(sEl))]),
      ...bump(i, i32c(1)),
    ]),
  ];
}

/**
 * panel(dst, src, sRow, rows) with `vecs` float32x4 per row: rows × 4·vecs contiguous floats, src
 * advancing sRow bytes and dst 16·vecs (a whole panel of A or B from a matrix whose rows are its k).
 */
function panelBody(vecs: number): number[] {
  const [dst, src, sRow, rows] = [0, 1, 2, 3];
  const end = 4;
  return [
    ...get(dst), ...get(rows), ...i32c(16 * vecs), ...mul, ...add, ...set(end),
    ...whileBelow(dst, end, [
      ...Array.from({ length: vecs }, (_, v) => [...get(dst), ...get(src), ...vload(16 * v), ...vstore(16 * v)]).flat(),
      ...bump(dst, i32c(16 * vecs)), ...bump(src, get(sRow)),
    ]),
  ];
}

/**
 * gemm(c, ldc, ap, bp, M, N, K, bias, hasBias, relu, scratch): C[M, N] (row stride ldc bytes) from
 * packed A (ceil(M/MR) panels of MR·K floats) and packed B (ceil(N/8) panels of 8·K floats); bias
 * (if hasBias) holds ceil(N/8)·8 floats; scratch holds MR·8 floats. `fused` false builds the same
 * kernel with a separate multiply and add (WebAssembly SIMD 1.0), for comparison only.
 */
function gemmBody(fused: boolean): number[] {
  const [c, ldc, ap, bp, M, N, K, bias, hasBias, relu, scratch] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  const [j0, i0, a, b, bEnd, cp, rows, cols, bPanel, aPanel, r, t, rowEnd] = [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23];
  const acc = Array.from({ length: 2 * MR }, (_, i) => 24 + i);
  const [b0, b1, av] = [24 + 2 * MR, 25 + 2 * MR, 26 + 2 * MR];
  const madd = (x: number, y: number, z: number) => (fused ? [...get(x), ...get(y), ...get(z), ...relaxedMadd] : [...get(x), ...get(y), ...f32x4mul, ...get(z), ...f32x4add]);
  const init = (half: number) => ifElseV128(get(hasBias), [...get(bias), ...get(j0), ...i32c(4), ...mul, ...add, ...vload(16 * half)], vzero);
  const step = [
    ...get(b), ...vload(0), ...set(b0),
    ...get(b), ...vload(16), ...set(b1),
    ...Array.from({ length: MR }, (_, rr) => [
      ...get(a), ...vsplat32(4 * rr), ...set(av),
      ...madd(av, b0, acc[2 * rr]), ...set(acc[2 * rr]),
      ...madd(av, b1, acc[2 * rr + 1]), ...set(acc[2 * rr + 1]),
    ]).flat(),
    ...bump(a, i32c(4 * MR)),
    ...bump(b, i32c(4 * NR)),
  ];
  const fullStore = Array.from({ length: MR }, (_, rr) => [
    ...get(cp), ...get(acc[2 * rr]), ...vstore(0),
    ...get(cp), ...get(acc[2 * rr + 1]), ...vstore(16),
    ...bump(cp, get(ldc)),
  ]).flat();
  const edgeStore = [
    ...Array.from({ length: MR }, (_, rr) => [
      ...get(scratch), ...get(acc[2 * rr]), ...vstore(32 * rr),
      ...get(scratch), ...get(acc[2 * rr + 1]), ...vstore(32 * rr + 16),
    ]).flat(),
    // rows = min(MR, M − i0), cols = min(8, N − j0); copy the valid part of the tile.
    ...get(M), ...get(i0), ...sub, ...set(rows),
    ...ifThen([...get(rows), ...i32c(MR), ...geS], [...i32c(MR), ...set(rows)]),
    ...get(N), ...get(j0), ...sub, ...set(cols),
    ...ifThen([...get(cols), ...i32c(NR), ...geS], [...i32c(NR), ...set(cols)]),
    ...i32c(0), ...set(r),
    ...whileBelow(r, rows, [
      ...i32c(0), ...set(t),
      ...get(cols), ...i32c(4), ...mul, ...set(rowEnd),
      ...whileBelow(t, rowEnd, [
        ...get(cp), ...get(t), ...add,
        ...get(scratch), ...get(r), ...i32c(32), ...mul, ...add, ...get(t), ...add, ...f32load(),
        ...f32store(),
        ...bump(t, i32c(4)),
      ]),
      ...bump(cp, get(ldc)),
      ...bump(r, i32c(1)),
    ]),
  ];
  const tile = [
    ...init(0), ...tee(acc[0]), ...Array.from({ length: MR - 1 }, (_, rr) => tee(acc[2 * rr + 2])).flat(), 0x1a,
    ...init(1), ...tee(acc[1]), ...Array.from({ length: MR - 1 }, (_, rr) => tee(acc[2 * rr + 3])).flat(), 0x1a,
    ...get(aPanel), ...set(a),
    ...get(bPanel), ...set(b),
    ...get(bPanel), ...get(K), ...i32c(4 * NR), ...mul, ...add, ...set(bEnd),
    ...whileBelow(b, bEnd, step),
    ...ifThen(get(relu), acc.flatMap((x) => [...get(x), ...vzero, ...f32x4max, ...set(x)])),
    ...get(c), ...get(i0), ...get(ldc), ...mul, ...add, ...get(j0), ...i32c(4), ...mul, ...add, ...set(cp),
    ...ifElse(
      [...get(M), ...get(i0), ...sub, ...i32c(MR), ...geS, ...get(N), ...get(j0), ...sub, ...i32c(NR), ...geS, ...and],
      fullStore,
      edgeStore,
    ),
    ...bump(i0, i32c(MR)),
    ...bump(aPanel, [...get(K), ...i32c(4 * MR), ...mul]),
  ];
  return [
    ...i32c(0), ...set(j0),
    ...get(bp), ...set(bPanel),
    ...whileBelow(j0, N, [
      ...i32c(0), ...set(i0),
      ...get(ap), ...set(aPanel),
      ...whileBelow(i0, M, tile),
      ...bump(j0, i32c(NR)),
      ...bump(bPanel, [...get(K), ...i32c(4 * NR), ...mul]),
    ]),
  ];
}

export function gemmModuleBytes(fused = true, shared = false): Uint8Array<ArrayBuffer> {
  const types = [
    [0x60, ...vec(new Array(8).fill([I32])), ...vec([])],
    [0x60, ...vec(new Array(11).fill([I32])), ...vec([])],
    [0x60, ...vec(new Array(4).fill([I32])), ...vec([])],
  ];
  return moduleBytes(types, [
    { name: 'pack', type: 0, code: fn([[4, I32]], packBody()) },
    { name: 'gemm', type: 1, code: fn([[13, I32], [2 * MR + 3, V128]], gemmBody(fused)) },
    { name: 'panelA', type: 2, code: fn([[1, I32]], panelBody(MR / 4)) },
    { name: 'panelB', type: 2, code: fn([[1, I32]], panelBody(NR / 4)) },
  ], shared);
}

export interface GemmExports {
  pack(dst: number, dRow: number, dEl: number, src: number, sRow: number, sEl: number, rows: number, count: number): void;
  panelA(dst: number, src: number, sRow: number, rows: number): void;
  panelB(dst: number, src: number, sRow: number, rows: number): void;
  gemm(c: number, ldc: number, ap: number, bp: number, m: number, n: number, k: number, bias: number, hasBias: number, relu: number, scratch: number): void;
}

/**
 * Turns on Relaxed SIMD for this process (a V8 flag: process-wide, read when a module is compiled);
 * false where V8 refuses. Harmless where it is already on or shipped.
 */
export function enableRelaxedSimd(): boolean {
  try {
    setFlagsFromString('--experimental-wasm-relaxed-simd');
    return true;
  } catch {
    return false;
  }
}

const compiled = [false, true].map((shared) =>
  compiledOnce(() => {
    enableRelaxedSimd();
    return gemmModuleBytes(true, shared);
  }),
);
/** The FMA module for a plain or a shared memory; null where Relaxed SIMD is unavailable. */
export const gemmModule = (shared = false) => compiled[shared ? 1 : 0]();
/** The same kernel with a separate multiply and add (WebAssembly SIMD 1.0): for the bench only. */
export const gemmModuleUnfused = compiledOnce(() => gemmModuleBytes(false));

// ---- on the wasm backend's heap ----

/** WASM_GEMM: 'auto' runs dense products on this kernel where Relaxed SIMD is available, 'xnnpack' never. */
export type WasmGemmMode = 'auto' | 'xnnpack';
export const WASM_GEMM_MODES: readonly WasmGemmMode[] = ['auto', 'xnnpack'];
let threadMode: WasmGemmMode = 'auto';

export function setWasmGemm(m: WasmGemmMode): void {
  if (!WASM_GEMM_MODES.includes(m)) throw new Error(`WASM_GEMM must be one of ${WASM_GEMM_MODES.join(', ')}, got ${m}`);
  threadMode = m;
}
export function wasmGemmMode(): WasmGemmMode {
  return threadMode;
}

/** Whether this thread's dense products run here: the mode is 'auto' and the FMA module compiles. */
export function gemmAvailable(): boolean {
  return threadMode === 'auto' && gemmModule(false) !== null;
}

const stats = { calls: 0, macs: 0 };
/** For tests and benches: products computed here since the last reset, and their multiply-adds. */
export const gemmInternals = {
  stats,
  resetStats(): void {
    stats.calls = 0;
    stats.macs = 0;
  },
};

type Info = tf.TensorInfo;
const KEY = {};
const sizeOf = (shape: number[]) => shape.reduce((p, d) => p * d, 1);

/**
 * out = act(a·b + bias) on the heap, with tfjs's BatchMatMul conventions: a [...batch, M, K] (or
 * [...batch, K, M] with transposeA), b [...batch, K, N] (or [..., N, K]), the batch dims equal or
 * one side's all 1 (broadcast); bias null or of N floats; act linear or ReLU. Null where the inputs
 * are outside that (another dtype, other broadcasting) or the module is unavailable: the caller
 * runs the backend's own kernel.
 */
export function heapMatMul(backend: HeapBackend, a: Info, b: Info, transposeA: boolean, transposeB: boolean, bias: Info | null, relu: boolean): Info | null {
  if (threadMode !== 'auto' || a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || a.shape.length !== b.shape.length) return null;
  const r = a.shape.length;
  const M = transposeA ? a.shape[r - 1] : a.shape[r - 2];
  const K = transposeA ? a.shape[r - 2] : a.shape[r - 1];
  const N = transposeB ? b.shape[r - 2] : b.shape[r - 1];
  if ((transposeB ? b.shape[r - 1] : b.shape[r - 2]) !== K) return null;
  const aBatch = a.shape.slice(0, r - 2);
  const bBatch = b.shape.slice(0, r - 2);
  const aCount = sizeOf(aBatch);
  const bCount = sizeOf(bBatch);
  const same = aBatch.every((d, i) => d === bBatch[i]);
  if (!same && aCount !== 1 && bCount !== 1) return null;
  if (bias && (bias.dtype !== 'float32' || sizeOf(bias.shape) !== N || bias.shape.length > 1)) return null;
  const inst = heapInstance<GemmExports>(backend, KEY, gemmModule);
  if (!inst) return null;
  const batchShape = same || bCount === 1 ? aBatch : bBatch;
  const batches = Math.max(aCount, bCount);
  const out = backend.makeOutput([...batchShape, M, N], 'float32');
  if (M === 0 || N === 0 || batches === 0) return out;
  const aPanels = Math.ceil(M / MR);
  const bPanels = Math.ceil(N / NR);
  const ap = backend.makeOutput([Math.max(1, aPanels * MR * K)], 'float32');
  const bp = backend.makeOutput([Math.max(1, bPanels * NR * K)], 'float32');
  const scratch = backend.makeOutput([bias ? Math.max(MR * NR, bPanels * NR) + MR * NR : MR * NR], 'float32');
  // Offsets and views only after the last allocation (an allocation may grow the heap).
  const [aP, bP, outP, apP, bpP, scratchP] = [a, b, out, ap, bp, scratch].map((t) => heapOffset(backend, t));
  const heap = inst.memory.buffer;
  // The padded bias after the scratch tile; the panels' padding rows and columns zero.
  const biasP = scratchP + MR * NR * 4;
  if (bias) {
    const padded = new Float32Array(heap, biasP, bPanels * NR);
    padded.fill(0);
    padded.set(new Float32Array(heap, heapOffset(backend, bias), N));
  }
  if (M % MR) new Float32Array(heap, apP + (aPanels - 1) * MR * K * 4, MR * K).fill(0);
  if (N % NR) new Float32Array(heap, bpP + (bPanels - 1) * NR * K * 4, NR * K).fill(0);
  const e = inst.exports;
  for (let t = 0; t < batches; t++) {
    const aBase = aP + (aCount === 1 ? 0 : t) * M * K * 4;
    const bBase = bP + (bCount === 1 ? 0 : t) * K * N * 4;
    for (let p = 0; p < aPanels; p++) {
      const rows = Math.min(MR, M - p * MR);
      const dst = apP + p * MR * K * 4;
      // Ap[p][k][r] = A[p·MR + r, k]; A[i, k] at i·K + k, or at k·M + i when transposed.
      if (!transposeA) e.pack(dst, 4, MR * 4, aBase + p * MR * K * 4, K * 4, 4, rows, K);
      else if (rows === MR) e.panelA(dst, aBase + p * MR * 4, M * 4, K);
      else e.pack(dst, MR * 4, 4, aBase + p * MR * 4, M * 4, 4, K, rows);
    }
    if (t === 0 || bCount !== 1) {
      for (let q = 0; q < bPanels; q++) {
        const cols = Math.min(NR, N - q * NR);
        const dst = bpP + q * NR * K * 4;
        // Bp[q][k][c] = B[k, q·8 + c]; B[k, n] at k·N + n, or at n·K + k when transposed.
        if (transposeB) e.pack(dst, 4, NR * 4, bBase + q * NR * K * 4, K * 4, 4, cols, K);
        else if (cols === NR) e.panelB(dst, bBase + q * NR * 4, N * 4, K);
        else e.pack(dst, NR * 4, 4, bBase + q * NR * 4, N * 4, 4, K, cols);
      }
    }
    e.gemm(outP + t * M * N * 4, N * 4, apP, bpP, M, N, K, biasP, bias ? 1 : 0, relu ? 1 : 0, scratchP);
  }
  for (const x of [ap, bp, scratch]) backend.disposeData(x.dataId);
  stats.calls++;
  stats.macs += batches * M * N * K;
  return out;
}
