import * as tf from '@tensorflow/tfjs';
import { add, bump, compiledOnce, f32load, f32store, funcCode, get, I32, i32c, i32load, ifElseV128, ifThen, moduleBytes, mul, set, shuffle, simd, tee, V128, vec, vload, vstore, vzero, whileBelow } from '../wasm-bytes.js';
import { gemmAvailable } from './gemm.js';
import { type HeapBackend, heapInstance, heapOffset } from './wasm-heap.js';

/**
 * Sparse-aware inference for dense layers on the wasm backend.
 *
 * A pruned `Dense` kernel W [K, N] is mostly zeros (90–98 % after this service's pruning), but
 * XNNPACK's fully connected layer multiplies every one of them. For such a kernel `_FusedMatMul`
 * (what a `Dense` layer runs in inference: y = act(x·W + bias)) is computed here as a sparse × dense
 * product instead, by a small hand-written WebAssembly SIMD module that works directly on the wasm
 * backend's heap (it imports the backend's own memory: no copies of activations):
 *
 * - x [B, K] is packed into panels of T = 4·V rows, transposed (4×4 SIMD transposes):
 *   panel[t][k][j] = x[t·T + j, k];
 * - W is kept per output column as a list of (k, w) pairs for its non-zeros, k ascending (CSC);
 * - for every panel and output n, V float32x4 accumulators start at bias[n] and add w · panel[t][k]
 *   for each non-zero, then ReLU (if fused) and store to an output panel, unpacked into y [B, N].
 *
 * Each output is bias + Σ w·x over the non-zeros in ascending k, one float32 rounding per multiply and
 * per add (`referenceSparseMatMul` is that loop in JS, bit for bit); XNNPACK sums the same products
 * (the zeros add nothing), so the two agree to float32 rounding; on every shape and sparsity measured
 * here (x86-64, tfjs 4.22) they were bit-identical, XNNPACK too starting at the bias and adding in
 * ascending k without FMA. The tests require only float32-rounding agreement. One difference:
 * an infinite input times a pruned (zero) weight is NaN in the dense product and skipped here.
 *
 * When it runs: only inside `withSparseMatMul` (evaluation sets it; training never does), for
 * float32 `_FusedMatMul` with linear or ReLU activation, rank-1 bias or none, no transposed x, and a
 * weight shared by the whole batch, whose fraction of zeros is at least the crossover against the
 * dense product in use ('auto': `SPARSE_MIN_SPARSITY` against the FMA kernel of gemm.ts,
 * `SPARSE_MIN_SPARSITY_XNNPACK` against XNNPACK) or always ('sparse'); 'dense' keeps the dense product. The per-weight decision and its CSC lists are cached
 * by the weight's data id (a weight tensor never changes in place; assigning a variable gives it a
 * new id), in JS memory that goes with the id.
 */

export type SparseMatMulMode = 'auto' | 'dense' | 'sparse';
export const SPARSE_MATMUL_MODES: readonly SparseMatMulMode[] = ['auto', 'dense', 'sparse'];

/**
 * Fraction of zeros from which 'auto' takes the sparse path where dense products run on the FMA
 * kernel (gemm.ts), and where they run on XNNPACK (measured crossovers: see the README's
 * Evaluation section and `bench/sparse-matmul.ts`).
 */
export const SPARSE_MIN_SPARSITY = 0.7;
export const SPARSE_MIN_SPARSITY_XNNPACK = 0.6;

/** Accumulator vectors per panel: T = 4·V batch rows at a time. */
const V = 8;
const T = 4 * V;

// ---- the module's bytes (same conventions as src/core/soups/kernels.ts) ----

const f32x4splat = simd(0x13);
const f32x4add = simd(0xe4);
const f32x4mul = simd(0xe6);
const f32x4pmax = simd(0xeb);

/**
 * spmm(yp, xp, tiles, panelBytes, n, pairs, colptr, bias, hasBias, relu):
 * for each of `tiles` x panels (panelBytes apart) and each of the n columns, V accumulators over the
 * column's pairs (i32 byte offset of row k in a panel, f32 weight), written to yp in panel order.
 */
function spmmBody(): number[] {
  const [yp, xt, tiles, panelBytes, n, pairs, colptr, bias, hasBias, relu] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  const [tEnd, cp, cpEnd, p, end, off, bp] = [10, 11, 12, 13, 14, 15, 16];
  const acc = Array.from({ length: V }, (_, i) => 17 + i);
  const w = 17 + V;
  const init = ifElseV128(get(hasBias), [...get(bp), ...f32load(), ...f32x4splat], vzero);
  const step = [
    ...get(xt), ...get(p), ...i32load(), ...add, ...set(off),
    ...get(p), ...f32load(4), ...f32x4splat, ...set(w),
    ...acc.flatMap((a, i) => [...get(a), ...get(w), ...get(off), ...vload(16 * i), ...f32x4mul, ...f32x4add, ...set(a)]),
    ...bump(p, i32c(8)),
  ];
  const column = [
    ...init, ...tee(acc[0]), ...acc.slice(1).flatMap((a) => [...tee(a)]), 0x1a, // drop the last copy
    ...get(pairs), ...get(cp), ...i32load(), ...add, ...set(p),
    ...get(pairs), ...get(cp), ...i32load(4), ...add, ...set(end),
    ...whileBelow(p, end, step),
    ...ifThen(get(relu), acc.flatMap((a) => [...vzero, ...get(a), ...f32x4pmax, ...set(a)])),
    ...acc.flatMap((a, i) => [...get(yp), ...get(a), ...vstore(16 * i)]),
    ...bump(yp, i32c(16 * V)),
    ...bump(cp, i32c(4)),
    ...bump(bp, i32c(4)),
  ];
  return [
    ...get(xt), ...get(tiles), ...get(panelBytes), ...mul, ...add, ...set(tEnd),
    ...get(colptr), ...get(n), ...i32c(4), ...mul, ...add, ...set(cpEnd),
    ...whileBelow(xt, tEnd, [
      ...get(colptr), ...set(cp),
      ...get(bias), ...set(bp),
      ...whileBelow(cp, cpEnd, column),
      ...bump(xt, get(panelBytes)),
    ]),
  ];
}

/** strided(dst, dstStep, src, srcStep, count): count float32 copies, each pointer advancing by its step (bytes). */
function stridedBody(): number[] {
  const [dst, dstStep, src, srcStep, count] = [0, 1, 2, 3, 4];
  const end = 5;
  return [
    ...get(dst), ...get(count), ...get(dstStep), ...mul, ...add, ...set(end),
    ...whileBelow(dst, end, [...get(dst), ...get(src), ...f32load(), ...f32store(), ...bump(dst, get(dstStep)), ...bump(src, get(srcStep))]),
  ];
}

/**
 * transpose4(dst, dstStride, src, srcStride, quads, dstStep, srcStep): `quads` times, four vectors
 * read srcStride bytes apart are transposed as a 4×4 block and written dstStride bytes apart; then
 * src advances by srcStep and dst by dstStep. Packs four rows of x into a panel (and unpacks four
 * rows of y) at 16 floats per step instead of one.
 */
function transpose4Body(): number[] {
  const [dst, dstStride, src, srcStride, quads, dstStep, srcStep] = [0, 1, 2, 3, 4, 5, 6];
  const end = 7;
  const [a, b, c, d, t0, t1, t2, t3] = [8, 9, 10, 11, 12, 13, 14, 15];
  const at = (base: number, stride: number, i: number) => [...get(base), ...(i ? [...get(stride), ...i32c(i), ...mul, ...add] : [])];
  return [
    ...get(src), ...get(quads), ...get(srcStep), ...mul, ...add, ...set(end),
    ...whileBelow(src, end, [
      ...[a, b, c, d].flatMap((v, i) => [...at(src, srcStride, i), ...vload(), ...set(v)]),
      ...get(a), ...get(b), ...shuffle(0, 4, 1, 5), ...set(t0),
      ...get(a), ...get(b), ...shuffle(2, 6, 3, 7), ...set(t1),
      ...get(c), ...get(d), ...shuffle(0, 4, 1, 5), ...set(t2),
      ...get(c), ...get(d), ...shuffle(2, 6, 3, 7), ...set(t3),
      ...at(dst, dstStride, 0), ...get(t0), ...get(t2), ...shuffle(0, 1, 4, 5), ...vstore(),
      ...at(dst, dstStride, 1), ...get(t0), ...get(t2), ...shuffle(2, 3, 6, 7), ...vstore(),
      ...at(dst, dstStride, 2), ...get(t1), ...get(t3), ...shuffle(0, 1, 4, 5), ...vstore(),
      ...at(dst, dstStride, 3), ...get(t1), ...get(t3), ...shuffle(2, 3, 6, 7), ...vstore(),
      ...bump(src, get(srcStep)), ...bump(dst, get(dstStep)),
    ]),
  ];
}

export function sparseModuleBytes(shared = false): Uint8Array<ArrayBuffer> {
  const types = [
    [0x60, ...vec(new Array(10).fill([I32])), ...vec([])],
    [0x60, ...vec(new Array(5).fill([I32])), ...vec([])],
    [0x60, ...vec(new Array(7).fill([I32])), ...vec([])],
  ];
  const funcs = [
    { name: 'spmm', type: 0, code: funcCode([[7, I32], [V + 1, V128]], spmmBody()) },
    { name: 'strided', type: 1, code: funcCode([[1, I32]], stridedBody()) },
    { name: 'transpose4', type: 2, code: funcCode([[1, I32], [8, V128]], transpose4Body()) },
  ];
  return moduleBytes(types, funcs, shared);
}

// ---- the weight's column lists ----

/** Column lists of a [K, N] (or, transposed, [N, K]) float32 weight, in the kernel's layout. */
export interface SparseColumns {
  k: number;
  n: number;
  nnz: number;
  sparsity: number;
  /** nnz pairs: int32 byte offset of row k in a panel (k·T·4), float32 weight; column-major, k ascending. */
  pairs: ArrayBuffer;
  /** n + 1 byte offsets into pairs (8 per pair). */
  colptr: Int32Array;
}

export function sparseColumns(w: Float32Array, k: number, n: number, transposed = false): SparseColumns {
  const count = new Int32Array(n + 1);
  let nnz = 0;
  for (let r = 0; r < k; r++) {
    for (let c = 0; c < n; c++) {
      if (w[transposed ? c * k + r : r * n + c] !== 0) {
        count[c + 1]++;
        nnz++;
      }
    }
  }
  for (let c = 0; c < n; c++) count[c + 1] += count[c];
  const pairs = new ArrayBuffer(nnz * 8);
  const off = new Int32Array(pairs);
  const val = new Float32Array(pairs);
  const at = count.slice(0, n);
  // Row-major walk: each column's pairs come out in ascending k.
  for (let r = 0; r < k; r++) {
    for (let c = 0; c < n; c++) {
      const v = w[transposed ? c * k + r : r * n + c];
      if (v !== 0) {
        const q = at[c]++;
        off[2 * q] = r * T * 4;
        val[2 * q + 1] = v;
      }
    }
  }
  const colptr = new Int32Array(n + 1);
  for (let c = 0; c <= n; c++) colptr[c] = count[c] * 8;
  return { k, n, nnz, sparsity: k * n ? 1 - nnz / (k * n) : 0, pairs, colptr };
}

/**
 * The sparse product in plain JS with the kernel's arithmetic (float32 rounding after every multiply
 * and add, bias first, non-zeros in ascending k): the tests' oracle. x [rows, K] → y [rows, N].
 */
export function referenceSparseMatMul(x: Float32Array, rows: number, cols: SparseColumns, bias: Float32Array | null, relu: boolean): Float32Array {
  const { k: K, n: N } = cols;
  const off = new Int32Array(cols.pairs);
  const val = new Float32Array(cols.pairs);
  const y = new Float32Array(rows * N);
  const f = Math.fround;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < N; c++) {
      let s = bias ? bias[c] : 0;
      for (let q = cols.colptr[c] / 8; q < cols.colptr[c + 1] / 8; q++) s = f(s + f(val[2 * q + 1] * x[r * K + off[2 * q] / (T * 4)]));
      // pmax(0, s): 0 < s ? s : 0 (NaN → 0, −0 → +0), as the kernel's f32x4.pmax.
      // biome-ignore lint/complexity/useMathMinMax: pmax semantics (NaN → 0, −0 → +0), which Math.max does not have
      y[r * N + c] = relu ? (0 < s ? s : 0) : s;
    }
  }
  return y;
}

// ---- the kernel ----

type Info = tf.TensorInfo;
type Kernel = (args: { inputs: Record<string, Info | null | undefined>; backend: HeapBackend; attrs: Record<string, unknown> }) => Info;
interface SparseExports {
  spmm(yp: number, xp: number, tiles: number, panelBytes: number, n: number, pairs: number, colptr: number, bias: number, hasBias: number, relu: number): void;
  strided(dst: number, dstStep: number, src: number, srcStep: number, count: number): void;
  transpose4(dst: number, dstStride: number, src: number, srcStride: number, quads: number, dstStep: number, srcStep: number): void;
}

const sparseModule = compiledOnce(sparseModuleBytes);
const sharedSparseModule = compiledOnce(() => sparseModuleBytes(true));
const KEY = {};
const instanceFor = (backend: HeapBackend) => heapInstance<SparseExports>(backend, KEY, (shared) => (shared ? sharedSparseModule() : sparseModule()));

let mode: SparseMatMulMode | 'off' = 'off';
let minSparsityOverride: number | null = null;
const minSparsity = () => minSparsityOverride ?? (gemmAvailable() ? SPARSE_MIN_SPARSITY : SPARSE_MIN_SPARSITY_XNNPACK);
const columnsCache = new WeakMap<object, { k: number; n: number; transposed: boolean; sparsity: number; cols: SparseColumns | null }>();
const stats = { sparse: 0, dense: 0 };

let threadDefault: SparseMatMulMode = 'auto';

/** The mode evaluations in this thread use unless they name one (EVAL_SPARSE). */
export function defaultSparseMatMul(): SparseMatMulMode {
  return threadDefault;
}
export function setDefaultSparseMatMul(m: SparseMatMulMode): void {
  if (!SPARSE_MATMUL_MODES.includes(m)) throw new Error(`sparse matmul mode must be one of ${SPARSE_MATMUL_MODES.join(', ')}, got ${m}`);
  threadDefault = m;
}

/** Runs `fn` with the sparse path in `m` (evaluation's scope); nesting restores the outer mode. */
export function withSparseMatMul<R>(m: SparseMatMulMode, fn: () => R): R {
  const outer = mode;
  mode = m;
  try {
    return fn();
  } finally {
    mode = outer;
  }
}

/** For tests and benches: counts of `_FusedMatMul` calls that took each path, and the crossover. */
export const sparseMatMulInternals = {
  stats,
  resetStats(): void {
    stats.sparse = 0;
    stats.dense = 0;
  },
  /** A fixed crossover for tests and benches; null restores the one of the dense product in use. */
  setMinSparsity(s: number | null): void {
    minSparsityOverride = s;
  },
  /** The crossover 'auto' uses now in this thread. */
  get minSparsity(): number {
    return minSparsity();
  },
  available(): boolean {
    return sparseModule() !== null;
  },
};

/** Wraps the backend's `_FusedMatMul`: the sparse product where it applies, the original otherwise. */
export function sparseFusedMatMul(original: Kernel): Kernel {
  return (args) => {
    if (mode === 'off' || mode === 'dense') return original(args);
    const { a, b, bias, preluActivationWeights } = args.inputs;
    const { transposeA, transposeB, activation } = args.attrs as { transposeA: boolean; transposeB: boolean; activation?: string };
    const act = activation ?? 'linear';
    if (
      !a || !b || preluActivationWeights || transposeA || (act !== 'linear' && act !== 'relu') ||
      a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length !== 3 || b.shape.length !== 3 || b.shape[0] !== 1
    ) return original(args);
    const { backend } = args;
    const K = a.shape[2];
    const N = transposeB ? b.shape[1] : b.shape[2];
    if ((transposeB ? b.shape[2] : b.shape[1]) !== K) return original(args);
    if (bias && (bias.dtype !== 'float32' || bias.shape.length !== 1 || bias.shape[0] !== N)) return original(args);
    const inst = instanceFor(backend);
    if (!inst) return original(args);
    // Per weight: its fraction of zeros (one counting pass), then its column lists once it is taken sparse.
    let entry = columnsCache.get(b.dataId);
    if (!entry || entry.k !== K || entry.n !== N || entry.transposed !== transposeB) {
      const w = backend.typedArrayFromHeap(b) as Float32Array;
      let zeros = 0;
      for (let i = 0; i < w.length; i++) if (w[i] === 0) zeros++;
      entry = { k: K, n: N, transposed: transposeB, sparsity: w.length ? zeros / w.length : 0, cols: null };
      columnsCache.set(b.dataId, entry);
    }
    if (mode === 'auto' && entry.sparsity < minSparsity()) {
      stats.dense++;
      return original(args);
    }
    entry.cols ??= sparseColumns(backend.typedArrayFromHeap(b) as Float32Array, K, N, transposeB);
    const cols = entry.cols;
    stats.sparse++;
    const rows = a.shape[0] * a.shape[1];
    const tiles = Math.ceil(rows / T);
    const out = backend.makeOutput([a.shape[0], a.shape[1], N], 'float32');
    if (rows === 0 || N === 0) return out;
    const xp = backend.makeOutput([tiles * K * T], 'float32');
    const yp = backend.makeOutput([tiles * N * T], 'float32');
    const pairs = backend.makeOutput([Math.max(1, cols.nnz * 2)], 'int32');
    const colptr = backend.makeOutput([N + 1], 'int32');
    // Offsets and views only after the last allocation (an allocation may grow the heap).
    const heap = inst.memory.buffer;
    const [aP, outP, xpP, ypP, pairsP, colptrP] = [a, out, xp, yp, pairs, colptr].map((t) => heapOffset(backend, t));
    new Uint8Array(heap, pairsP, cols.nnz * 8).set(new Uint8Array(cols.pairs));
    new Int32Array(heap, colptrP, N + 1).set(cols.colptr);
    const e = inst.exports;
    const panel = K * T * 4;
    // Lanes past the last row: zeros (their outputs are never read; zeros keep them cheap).
    if (rows % T) new Float32Array(heap, xpP + (tiles - 1) * panel, K * T).fill(0);
    // x → panels: 4×4 transposes for whole groups of four rows and four columns, single floats for the rest.
    const kq = K >> 2;
    const nq = N >> 2;
    const rq = rows & ~3;
    const xAt = (r: number) => xpP + Math.floor(r / T) * panel + (r % T) * 4;
    for (let r = 0; r < rq; r += 4) {
      if (kq) e.transpose4(xAt(r), T * 4, aP + r * K * 4, K * 4, kq, 16 * T, 16);
      if (K & 3) for (let i = 0; i < 4; i++) e.strided(xAt(r + i) + 4 * kq * T * 4, T * 4, aP + ((r + i) * K + 4 * kq) * 4, 4, K & 3);
    }
    for (let r = rq; r < rows; r++) e.strided(xAt(r), T * 4, aP + r * K * 4, 4, K);
    e.spmm(ypP, xpP, tiles, panel, N, pairsP, colptrP, bias ? heapOffset(backend, bias) : 0, bias ? 1 : 0, act === 'relu' ? 1 : 0);
    // Output panels → y, the same way back.
    const yAt = (r: number) => ypP + (Math.floor(r / T) * N * T + (r % T)) * 4;
    for (let r = 0; r < rq; r += 4) {
      if (nq) e.transpose4(outP + r * N * 4, N * 4, yAt(r), T * 4, nq, 16, 16 * T);
      if (N & 3) for (let i = 0; i < 4; i++) e.strided(outP + ((r + i) * N + 4 * nq) * 4, 4, yAt(r + i) + 4 * nq * T * 4, T * 4, N & 3);
    }
    for (let r = rq; r < rows; r++) e.strided(outP + r * N * 4, 4, yAt(r), T * 4, N);
    for (const t of [xp, yp, pairs, colptr]) backend.disposeData(t.dataId);
    return out;
  };
}
