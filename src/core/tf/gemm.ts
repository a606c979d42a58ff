import { setFlagsFromString } from 'node:v8';
import type * as tf from '@tensorflow/tfjs';
import { add, and, bump, compiledOnce, divU, eq, f32load, f32store, funcCode, geS, get, I32, i32c, i32load, ifElse, ifElseV128, ifThen, ltU, moduleBytes, mul, select, set, shuffle, simd, sub, tee, V128, vec, vload, vsplat32, vstore, vzero, type WasmMemory, wasmApi, whileBelow } from '../wasm-bytes.js';
import { KernelHelper } from './kernel-helper.js';
import { wasmKernels } from './kernel-set.js';
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
 * compiled. Where it is off or unsupported (or WASM_KERNELS=tfjs), `gemmAvailable()` is false and the
 * callers keep XNNPACK.
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

const f32x4add = simd(0xe4);
const f32x4mul = simd(0xe6);
const f32x4max = simd(0xe9);
const relaxedMadd = simd(0x105);

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
 * (if hasBias = 1) holds ceil(N/8)·8 floats; hasBias = 2 adds to C instead (C += A·B, for a product
 * split along K; M and N whole tiles); scratch holds MR·8 floats. `fused` false builds the same
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
  const cpOfTile = [...get(c), ...get(i0), ...get(ldc), ...mul, ...add, ...get(j0), ...i32c(4), ...mul, ...add, ...set(cp)];
  const tile = [
    ...ifElse(
      [...get(hasBias), ...i32c(2), ...eq],
      // Accumulate: start from C's tile (whole tiles only: the caller checks M % MR = N % 8 = 0).
      [
        ...cpOfTile,
        ...Array.from({ length: MR }, (_, rr) => [
          ...get(cp), ...vload(0), ...set(acc[2 * rr]),
          ...get(cp), ...vload(16), ...set(acc[2 * rr + 1]),
          ...bump(cp, get(ldc)),
        ]).flat(),
      ],
      [
        ...init(0), ...tee(acc[0]), ...Array.from({ length: MR - 1 }, (_, rr) => tee(acc[2 * rr + 2])).flat(), 0x1a,
        ...init(1), ...tee(acc[1]), ...Array.from({ length: MR - 1 }, (_, rr) => tee(acc[2 * rr + 3])).flat(), 0x1a,
      ],
    ),
    ...get(aPanel), ...set(a),
    ...get(bPanel), ...set(b),
    ...get(bPanel), ...get(K), ...i32c(4 * NR), ...mul, ...add, ...set(bEnd),
    ...whileBelow(b, bEnd, step),
    ...ifThen(get(relu), acc.flatMap((x) => [...get(x), ...vzero, ...f32x4max, ...set(x)])),
    ...cpOfTile,
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

/**
 * im2col4(dst, x, zero, m0, panels, M, H, W, C4, OH, OW, KH, KW, top, left): `panels` packed A
 * panels of a stride-1 convolution's patch matrix, for output rows m0, m0 + 1, …: row m is output
 * position (b, oy, ox) of an NHWC x [B, H, W, 4·C4], column k = (kh·KW + kw)·C + c holds
 * x[b, oy + kh − top, ox + kw − left, c], or 0 outside the image (read from `zero`, C floats of 0);
 * rows past M are 0. Panel layout as `gemm` reads it: Ap[p][k][r]; four channels of four rows at a
 * time, moved by one 4×4 transpose.
 */
function im2col4Body(): number[] {
  const [dst, x, zero, m0, panels, M, H, W, C4, OH, OW, KH, KW, top, left] = Array.from({ length: 15 }, (_, i) => i);
  const [p, m, b, rem, oy, kh, kw, q, pix, rowB, imgB, area, iy, ix] = Array.from({ length: 14 }, (_, i) => 15 + i);
  const iy0 = [29, 30, 31, 32];
  const ix0 = [33, 34, 35, 36];
  const base = [37, 38, 39, 40];
  const ptr = [41, 42, 43, 44];
  const [va, vb, vc, vd, t0, t1, t2, t3] = [45, 46, 47, 48, 49, 50, 51, 52];
  const coords = [0, 1, 2, 3].flatMap((r) => [
    ...get(m0), ...get(p), ...i32c(4), ...mul, ...add, ...i32c(r), ...add, ...set(m),
    ...ifElse(
      [...get(m), ...get(M), ...ltU],
      [
        ...get(m), ...get(area), ...divU, ...set(b),
        ...get(m), ...get(b), ...get(area), ...mul, ...sub, ...set(rem),
        ...get(rem), ...get(OW), ...divU, ...set(oy),
        ...get(oy), ...get(top), ...sub, ...set(iy0[r]),
        ...get(rem), ...get(oy), ...get(OW), ...mul, ...sub, ...get(left), ...sub, ...set(ix0[r]),
        ...get(x), ...get(b), ...get(imgB), ...mul, ...add, ...set(base[r]),
      ],
      // Past the last row: a row index no tap can bring inside the image.
      [...i32c(-(1 << 30)), ...set(iy0[r]), ...i32c(0), ...set(ix0[r]), ...get(x), ...set(base[r])],
    ),
  ]);
  const pointers = [0, 1, 2, 3].flatMap((r) => [
    ...get(iy0[r]), ...get(kh), ...add, ...set(iy),
    ...get(ix0[r]), ...get(kw), ...add, ...set(ix),
    ...get(base[r]), ...get(iy), ...get(rowB), ...mul, ...add, ...get(ix), ...get(pix), ...mul, ...add,
    ...get(zero),
    ...get(iy), ...get(H), ...ltU, ...get(ix), ...get(W), ...ltU, ...and,
    ...select, ...set(ptr[r]),
  ]);
  const quad = [
    ...[va, vb, vc, vd].flatMap((v, r) => [...get(ptr[r]), ...vload(), ...set(v)]),
    ...get(va), ...get(vb), ...shuffle(0, 4, 1, 5), ...set(t0),
    ...get(va), ...get(vb), ...shuffle(2, 6, 3, 7), ...set(t1),
    ...get(vc), ...get(vd), ...shuffle(0, 4, 1, 5), ...set(t2),
    ...get(vc), ...get(vd), ...shuffle(2, 6, 3, 7), ...set(t3),
    ...get(dst), ...get(t0), ...get(t2), ...shuffle(0, 1, 4, 5), ...vstore(0),
    ...get(dst), ...get(t0), ...get(t2), ...shuffle(2, 3, 6, 7), ...vstore(16),
    ...get(dst), ...get(t1), ...get(t3), ...shuffle(0, 1, 4, 5), ...vstore(32),
    ...get(dst), ...get(t1), ...get(t3), ...shuffle(2, 3, 6, 7), ...vstore(48),
    ...bump(dst, i32c(64)),
    ...ptr.flatMap((pp) => bump(pp, i32c(16))),
    ...bump(q, i32c(1)),
  ];
  return [
    ...get(C4), ...i32c(16), ...mul, ...set(pix),
    ...get(W), ...get(pix), ...mul, ...set(rowB),
    ...get(H), ...get(rowB), ...mul, ...set(imgB),
    ...get(OH), ...get(OW), ...mul, ...set(area),
    ...i32c(0), ...set(p),
    ...whileBelow(p, panels, [
      ...coords,
      ...i32c(0), ...set(kh),
      ...whileBelow(kh, KH, [
        ...i32c(0), ...set(kw),
        ...whileBelow(kw, KW, [
          ...pointers,
          ...i32c(0), ...set(q),
          ...whileBelow(q, C4, quad),
          ...bump(kw, i32c(1)),
        ]),
        ...bump(kh, i32c(1)),
      ]),
      ...bump(p, i32c(1)),
    ]),
  ];
}

/**
 * patchQuads(dst, table, count, zero, H, W, pixB, rowB, kh, kw, ci0B): one A panel of a filter
 * gradient (rows: four channels ci0.. of tap (kh, kw); k: output positions): for each of `count`
 * positions, whose (iy0, ix0, image base) the table holds as three i32, the four floats at
 * x[iy0 + kh, ix0 + kw, ci0..ci0+3] (or zeros outside the image) as one vector.
 */
function patchQuadsBody(): number[] {
  const [dst, table, count, zero, H, W, pixB, rowB, kh, kw, ci0B] = Array.from({ length: 11 }, (_, i) => i);
  const [end, iy, ix] = [11, 12, 13];
  return [
    ...get(table), ...get(count), ...i32c(12), ...mul, ...add, ...set(end),
    ...whileBelow(table, end, [
      ...get(table), ...i32load(0), ...get(kh), ...add, ...set(iy),
      ...get(table), ...i32load(4), ...get(kw), ...add, ...set(ix),
      ...get(dst),
      ...get(table), ...i32load(8), ...get(iy), ...get(rowB), ...mul, ...add, ...get(ix), ...get(pixB), ...mul, ...add, ...get(ci0B), ...add,
      ...get(zero),
      ...get(iy), ...get(H), ...ltU, ...get(ix), ...get(W), ...ltU, ...and,
      ...select, ...vload(), ...vstore(),
      ...bump(dst, i32c(16)),
      ...bump(table, i32c(12)),
    ]),
  ];
}

export function gemmModuleBytes(fused = true, shared = false): Uint8Array<ArrayBuffer> {
  const types = [
    [0x60, ...vec(new Array(8).fill([I32])), ...vec([])],
    [0x60, ...vec(new Array(11).fill([I32])), ...vec([])],
    [0x60, ...vec(new Array(4).fill([I32])), ...vec([])],
    [0x60, ...vec(new Array(15).fill([I32])), ...vec([])],
  ];
  return moduleBytes(types, [
    { name: 'pack', type: 0, code: funcCode([[4, I32]], packBody()) },
    { name: 'gemm', type: 1, code: funcCode([[13, I32], [2 * MR + 3, V128]], gemmBody(fused)) },
    { name: 'panelA', type: 2, code: funcCode([[1, I32]], panelBody(MR / 4)) },
    { name: 'panelB', type: 2, code: funcCode([[1, I32]], panelBody(NR / 4)) },
    { name: 'im2col4', type: 3, code: funcCode([[30, I32], [8, V128]], im2col4Body()) },
    { name: 'patchQuads', type: 1, code: funcCode([[3, I32]], patchQuadsBody()) },
  ], shared);
}

export interface GemmExports {
  pack(dst: number, dRow: number, dEl: number, src: number, sRow: number, sEl: number, rows: number, count: number): void;
  panelA(dst: number, src: number, sRow: number, rows: number): void;
  panelB(dst: number, src: number, sRow: number, rows: number): void;
  patchQuads(dst: number, table: number, count: number, zero: number, h: number, w: number, pixB: number, rowB: number, kh: number, kw: number, ci0B: number): void;
  im2col4(dst: number, x: number, zero: number, m0: number, panels: number, m: number, h: number, w: number, c4: number, oh: number, ow: number, kh: number, kw: number, top: number, left: number): void;
  gemm(c: number, ldc: number, ap: number, bp: number, m: number, n: number, k: number, bias: number, hasBias: number, relu: number, scratch: number): void;
}

/** A one-function module that uses Relaxed SIMD: relaxed_madd of three zero vectors. */
const relaxedProbe = () => moduleBytes([[0x60, ...vec([]), ...vec([[V128]])]], [{ name: 'f', type: 0, code: funcCode([], [...vzero, ...vzero, ...vzero, ...relaxedMadd]) }]);

/** Whether this V8 compiles Relaxed SIMD as things stand. */
export function relaxedSimdAvailable(): boolean {
  return wasmApi?.validate(relaxedProbe()) ?? false;
}

/**
 * Turns Relaxed SIMD on for this process if V8 has it but not by default (Node 20's V8 11.3: a flag,
 * process-wide, read when a module is compiled); nothing where it already validates (V8 ≥ 11.4,
 * Node ≥ 22, which would warn of an unknown flag). True where it is available afterwards.
 */
export function enableRelaxedSimd(): boolean {
  if (relaxedSimdAvailable()) return true;
  try {
    setFlagsFromString('--experimental-wasm-relaxed-simd');
  } catch {
    return false;
  }
  return relaxedSimdAvailable();
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

/** Whether this thread's dense products run here: WASM_KERNELS is 'sparsoup' and the FMA module compiles. */
export function gemmAvailable(): boolean {
  return wasmKernels() === 'sparsoup' && gemmModule(false) !== null;
}

const stats = { calls: 0, macs: 0, split: 0 };
/** For tests and benches: products computed here since the last reset, and their multiply-adds. */
export const gemmInternals = {
  stats,
  resetStats(): void {
    stats.calls = 0;
    stats.macs = 0;
    stats.split = 0;
  },
  /** Whether products split with a helper thread where they can (the threaded build); for A/B benches. */
  setSplit(on: boolean): void {
    splitEnabled = on;
  },
};

type Info = tf.TensorInfo;
const KEY = {};
const sizeOf = (shape: number[]) => shape.reduce((p, d) => p * d, 1);

/** Bp[q][k][c] = B[k, q·8 + c] for every panel q; B[k, n] at k·N + n, or at n·K + k when transposed. */
function packB(e: GemmExports, bpP: number, bBase: number, K: number, N: number, transposeB: boolean): void {
  for (let q = 0; q < Math.ceil(N / NR); q++) {
    const cols = Math.min(NR, N - q * NR);
    const dst = bpP + q * NR * K * 4;
    if (transposeB) e.pack(dst, 4, NR * 4, bBase + q * NR * K * 4, K * 4, 4, cols, K);
    else if (cols === NR) e.panelB(dst, bBase + q * NR * 4, N * 4, K);
    else e.pack(dst, NR * 4, 4, bBase + q * NR * 4, N * 4, 4, K, cols);
  }
}

/**
 * The scratch buffer holds the calling thread's edge tile, the helper's, then the bias padded to
 * whole panels; writes the bias and returns its offset.
 */
function padBias(backend: HeapBackend, heap: ArrayBuffer, scratchP: number, bias: Info | null, N: number): number {
  const biasP = scratchP + 2 * MR * NR * 4;
  if (bias) {
    const padded = new Float32Array(heap, biasP, Math.ceil(N / NR) * NR);
    padded.fill(0);
    padded.set(new Float32Array(heap, heapOffset(backend, bias), N));
  }
  return biasP;
}
const scratchFloats = (bias: Info | null, N: number) => 2 * MR * NR + (bias ? Math.ceil(N / NR) * NR : 0);
/** The helper's edge tile in the scratch buffer. */
const helperScratch = (scratchP: number) => scratchP + MR * NR * 4;

/** A call as the helper takes it: a function of the module and its i32 arguments. */
type Call = [string, ...number[]];
/** The same calls on this thread's instance. */
function runHere(e: GemmExports, calls: readonly Call[]): void {
  const fns = e as unknown as Record<string, (...args: number[]) => void>;
  for (const [name, ...args] of calls) fns[name](...args);
}

/**
 * Multiply-adds from which a product is split with the helper thread: measured (bench:imp) to pay
 * for convolutions (cnn-bn's conv2: 462 M) but to lose on lenet-300-100's products (≤ 30 M).
 */
const SPLIT_MIN_MACS = 1 << 26;
const GEMM_FUNCS = ['pack', 'gemm', 'panelA', 'panelB', 'im2col4', 'patchQuads'] as const;
const helpers = new WeakMap<object, KernelHelper | null>();
let splitEnabled = true;

/**
 * The helper thread of this backend, started on first use: only on the threaded build (its heap is
 * a shared memory, `WASM_THREADS` ≥ 2) and only for work of at least `macs` ≥ SPLIT_MIN_MACS.
 */
function helperFor(backend: HeapBackend, memory: WasmMemory, macs: number): KernelHelper | null {
  if (!splitEnabled || macs < SPLIT_MIN_MACS || typeof SharedArrayBuffer === 'undefined' || !(memory.buffer instanceof SharedArrayBuffer)) return null;
  let h = helpers.get(backend);
  if (h === undefined) {
    const mod = gemmModule(true);
    h = mod ? KernelHelper.start(memory, mod, GEMM_FUNCS) : null;
    helpers.set(backend, h);
  }
  if (h) stats.split++;
  return h;
}

/**
 * out = act(a·b + bias) on the heap, with tfjs's BatchMatMul conventions: a [...batch, M, K] (or
 * [...batch, K, M] with transposeA), b [...batch, K, N] (or [..., N, K]), the batch dims equal or
 * one side's all 1 (broadcast); bias null or of N floats; act linear or ReLU. Null where the inputs
 * are outside that (another dtype, other broadcasting) or the module is unavailable: the caller
 * runs the backend's own kernel.
 */
export function heapMatMul(backend: HeapBackend, a: Info, b: Info, transposeA: boolean, transposeB: boolean, bias: Info | null, relu: boolean): Info | null {
  if (wasmKernels() !== 'sparsoup' || a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || a.shape.length !== b.shape.length) return null;
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
  const scratch = backend.makeOutput([scratchFloats(bias, N)], 'float32');
  // Offsets and views only after the last allocation (an allocation may grow the heap).
  const [aP, bP, outP, apP, bpP, scratchP] = [a, b, out, ap, bp, scratch].map((t) => heapOffset(backend, t));
  const heap = inst.memory.buffer;
  const biasP = padBias(backend, heap, scratchP, bias, N);
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
    if (t === 0 || bCount !== 1) packB(e, bpP, bBase, K, N, transposeB);
    const c = outP + t * M * N * 4;
    const h = aPanels >= 2 ? helperFor(backend, inst.memory, M * N * K) : null;
    if (h) {
      // The helper takes the second half of A's panels: output rows from `rows0` on.
      const rows0 = Math.ceil(aPanels / 2) * MR;
      h.post([['gemm', c + rows0 * N * 4, N * 4, apP + rows0 * K * 4, bpP, M - rows0, N, K, biasP, bias ? 1 : 0, relu ? 1 : 0, helperScratch(scratchP)]]);
      e.gemm(c, N * 4, apP, bpP, rows0, N, K, biasP, bias ? 1 : 0, relu ? 1 : 0, scratchP);
      h.wait();
    } else e.gemm(c, N * 4, apP, bpP, M, N, K, biasP, bias ? 1 : 0, relu ? 1 : 0, scratchP);
  }
  for (const x of [ap, bp, scratch]) backend.disposeData(x.dataId);
  stats.calls++;
  stats.macs += batches * M * N * K;
  return out;
}

/** Bytes of packed patches per chunk (512 rows at K = 288): they stay in L2 while `gemm` reads them. */
const CONV_CHUNK_BYTES = 1 << 19;

export interface ConvGeometry {
  outHeight: number;
  outWidth: number;
  top: number;
  left: number;
}

/**
 * A stride-1, dilation-1 NHWC convolution out = act(conv(x, filter) + bias) on the heap: the patch
 * matrix packed chunk by chunk straight into `gemm`'s panels (`im2col4`), times the filter as B
 * [KH·KW·C, Co]. Null where it does not apply (input channels not a multiple of 4, not float32, the
 * module unavailable, WASM_KERNELS=tfjs): the caller runs the backend's convolution. Fewer than 8
 * output channels pad B's panel with zero columns (8× the work for 1 channel, the input gradient of
 * a first layer on grey images), and still measured faster than XNNPACK there (bench:profile: that
 * gradient ~11 ms on this kernel against ~20 ms on XNNPACK at batch 128).
 */
export function heapConv2D(backend: HeapBackend, x: Info, filter: Info, bias: Info | null, relu: boolean, g: ConvGeometry): Info | null {
  if (wasmKernels() !== 'sparsoup' || x.dtype !== 'float32' || filter.dtype !== 'float32' || x.shape.length !== 4 || filter.shape.length !== 4) return null;
  const [B, H, W, C] = x.shape;
  const [KH, KW, CI, CO] = filter.shape;
  if (CI !== C || C % 4 !== 0 || C === 0) return null;
  if (bias && (bias.dtype !== 'float32' || sizeOf(bias.shape) !== CO || bias.shape.length > 1)) return null;
  const inst = heapInstance<GemmExports>(backend, KEY, gemmModule);
  if (!inst) return null;
  const M = B * g.outHeight * g.outWidth;
  const K = KH * KW * C;
  const N = CO;
  const out = backend.makeOutput([B, g.outHeight, g.outWidth, CO], 'float32');
  if (M === 0 || N === 0) return out;
  const chunkPanels = Math.max(1, Math.floor(CONV_CHUNK_BYTES / (MR * K * 4)));
  const chunkRows = chunkPanels * MR;
  const chunks = Math.ceil(M / chunkRows);
  // Odd chunks to the helper (two calls a chunk), each thread with its own panel buffer.
  const h = chunks >= 2 && chunks <= 1000 ? helperFor(backend, inst.memory, M * N * K) : null;
  const apFloats = Math.max(1, Math.min(chunkPanels, Math.ceil(M / MR)) * MR * K);
  const ap = backend.makeOutput([h ? 2 * apFloats : apFloats], 'float32');
  const bp = backend.makeOutput([Math.max(1, Math.ceil(N / NR) * NR * K)], 'float32');
  const zero = backend.makeOutput([C], 'float32');
  const scratch = backend.makeOutput([scratchFloats(bias, N)], 'float32');
  const [xP, fP, outP, apP, bpP, zeroP, scratchP] = [x, filter, out, ap, bp, zero, scratch].map((t) => heapOffset(backend, t));
  const heap = inst.memory.buffer;
  new Float32Array(heap, zeroP, C).fill(0);
  const biasP = padBias(backend, heap, scratchP, bias, N);
  if (N % NR) new Float32Array(heap, bpP + (Math.ceil(N / NR) - 1) * NR * K * 4, NR * K).fill(0);
  const e = inst.exports;
  packB(e, bpP, fP, K, N, false);
  const chunk = (i: number, a: number, s: number) => {
    const m0 = i * chunkRows;
    const rows = Math.min(chunkRows, M - m0);
    return [
      ['im2col4', a, xP, zeroP, m0, Math.ceil(rows / MR), M, H, W, C / 4, g.outHeight, g.outWidth, KH, KW, g.top, g.left],
      ['gemm', outP + m0 * N * 4, N * 4, a, bpP, rows, N, K, biasP, bias ? 1 : 0, relu ? 1 : 0, s],
    ] as Call[];
  };
  if (h) {
    const theirs: Call[] = [];
    for (let i = 1; i < chunks; i += 2) theirs.push(...chunk(i, apP + apFloats * 4, helperScratch(scratchP)));
    h.post(theirs);
    for (let i = 0; i < chunks; i += 2) runHere(e, chunk(i, apP, scratchP));
    h.wait();
  } else {
    for (let i = 0; i < chunks; i++) runHere(e, chunk(i, apP, scratchP));
  }
  for (const t of [ap, bp, zero, scratch]) backend.disposeData(t.dataId);
  stats.calls++;
  stats.macs += M * N * K;
  return out;
}

/** Output positions per block of a filter gradient (the product's K): A and B blocks stay in L2. */
const FILTER_BLOCK = 512;

/**
 * The filter gradient of a stride-1, dilation-1 NHWC convolution, dW[kh, kw, ci, co] =
 * Σ_positions x[b, oy + kh − top, ox + kw − left, ci] · dy[b, oy, ox, co], as a product of the
 * transposed patch matrix and dy split along the positions: per block, the patch rows four channels
 * at a time (`patchQuads`) and dy's rows (`panelB`), then `gemm` adding into dW. Null where it does
 * not apply (channels not a multiple of 4, output channels not a multiple of 8, …).
 */
export function heapConv2DBackpropFilter(backend: HeapBackend, x: Info, dy: Info, filterShape: number[], g: ConvGeometry): Info | null {
  if (wasmKernels() !== 'sparsoup' || x.dtype !== 'float32' || dy.dtype !== 'float32' || x.shape.length !== 4 || dy.shape.length !== 4) return null;
  const [B, H, W, C] = x.shape;
  const [KH, KW, CI, CO] = filterShape;
  if (CI !== C || C % 4 !== 0 || CO % NR !== 0 || C === 0 || CO === 0) return null;
  if (dy.shape[0] !== B || dy.shape[1] !== g.outHeight || dy.shape[2] !== g.outWidth || dy.shape[3] !== CO) return null;
  const inst = heapInstance<GemmExports>(backend, KEY, gemmModule);
  if (!inst) return null;
  const K = KH * KW * C; // rows of dW
  const P = B * g.outHeight * g.outWidth; // positions: the product's K
  const out = backend.makeOutput([KH, KW, C, CO], 'float32');
  const block = Math.min(FILTER_BLOCK, Math.max(1, P));
  const ap = backend.makeOutput([K * block], 'float32');
  const bp = backend.makeOutput([CO * block], 'float32');
  const table = backend.makeOutput([3 * block], 'int32');
  const zero = backend.makeOutput([4], 'float32');
  const scratch = backend.makeOutput([2 * MR * NR], 'float32');
  const [xP, dyP, outP, apP, bpP, tableP, zeroP, scratchP] = [x, dy, out, ap, bp, table, zero, scratch].map((t) => heapOffset(backend, t));
  // The helper takes the second half of dW's rows (A's panels) in every block.
  const panels = K / MR;
  const h = panels >= 2 && panels <= 1000 ? helperFor(backend, inst.memory, K * CO * P) : null;
  const mine = h ? Math.ceil(panels / 2) : panels;
  const heap = inst.memory.buffer;
  new Float32Array(heap, zeroP, 4).fill(0);
  if (P === 0) new Float32Array(heap, outP, K * CO).fill(0);
  const e = inst.exports;
  const pix = C * 4;
  const rowB = W * pix;
  const imgB = H * rowB;
  const area = g.outHeight * g.outWidth;
  const t = new Int32Array(heap, tableP, 3 * block);
  for (let m0 = 0; m0 < P; m0 += block) {
    const count = Math.min(block, P - m0);
    for (let i = 0; i < count; i++) {
      const m = m0 + i;
      const b = Math.floor(m / area);
      const rem = m - b * area;
      const oy = Math.floor(rem / g.outWidth);
      t[3 * i] = oy - g.top;
      t[3 * i + 1] = rem - oy * g.outWidth - g.left;
      t[3 * i + 2] = xP + b * imgB;
    }
    const quads = (p: number): Call => {
      const k0 = p * MR;
      const tap = Math.floor(k0 / C);
      return ['patchQuads', apP + p * count * MR * 4, tableP, count, zeroP, H, W, pix, rowB, Math.floor(tap / KW), tap % KW, (k0 % C) * 4];
    };
    for (let q = 0; q < CO / NR; q++) e.panelB(bpP + q * count * NR * 4, dyP + (m0 * CO + q * NR) * 4, CO * 4, count);
    const mode = m0 === 0 ? 0 : 2;
    if (h) {
      const theirs: Call[] = [];
      for (let p = mine; p < panels; p++) theirs.push(quads(p));
      theirs.push(['gemm', outP + mine * MR * CO * 4, CO * 4, apP + mine * count * MR * 4, bpP, K - mine * MR, CO, count, 0, mode, 0, helperScratch(scratchP)]);
      h.post(theirs);
    }
    for (let p = 0; p < mine; p++) runHere(e, [quads(p)]);
    e.gemm(outP, CO * 4, apP, bpP, mine * MR, CO, count, 0, mode, 0, scratchP);
    h?.wait();
  }
  for (const x2 of [ap, bp, table, zero, scratch]) backend.disposeData(x2.dataId);
  stats.calls++;
  stats.macs += K * CO * P;
  return out;
}
