import { add, bump, compiledOnce, funcCode, get, I32, i32c, moduleBytes, mul, set, simd, V128, vec, vload, vstore, whileBelow } from '../wasm-bytes.js';
import { wasmKernels } from './kernel-set.js';
import { type HeapBackend, heapInstance, heapOffset } from './wasm-heap.js';

/**
 * The gradient of 2×2 max pooling with stride 2 (the templates' pooling), NHWC, as WebAssembly SIMD
 * on the wasm backend's heap, four channels at a time: per window the first maximum in row-major
 * order (strict `>`, as on cpu and in wasm-kernels.ts' loop, so NaN in the first tap wins) gets the
 * output's gradient, the other three taps +0. The windows do not overlap, so every input inside one
 * is written exactly once; rows and columns outside every window (odd sizes) are zeroed by the caller.
 * The JavaScript loop in wasm-kernels.ts is the fallback (and the tests' reference).
 */

const f32x4gt = simd(0x44);
const vnot = simd(0x4d);
const vand = simd(0x4e);
const vandnot = simd(0x4f);
const vor = simd(0x50);
const bitselect = simd(0x52);

/** grad(dx, x, g, rowsOut, outW, C4, rowB): one image, its output rows in order (each two input rows down). */
function gradBody(): number[] {
  const [dx, x, g, rowsOut, outW, C4, rowB] = [0, 1, 2, 3, 4, 5, 6];
  const [row, p, q, win, v, pix] = [7, 8, 9, 10, 11, 12];
  const [a, b, c, d, best, m1, m2, m3, gv] = [13, 14, 15, 16, 17, 18, 19, 20, 21];
  const at = (base: number, dRow: boolean, dCol: boolean) => [...get(base), ...(dRow ? [...get(rowB), ...add] : []), ...(dCol ? [...get(pix), ...add] : [])];
  const vector = [
    ...at(p, false, false), ...vload(), ...set(a),
    ...at(p, false, true), ...vload(), ...set(b),
    ...at(p, true, false), ...vload(), ...set(c),
    ...at(p, true, true), ...vload(), ...set(d),
    ...get(g), ...vload(), ...set(gv),
    // m1 = b > a; best = m1 ? b : a; m2 = c > best; best = m2 ? c : best; m3 = d > best.
    ...get(b), ...get(a), ...f32x4gt, ...set(m1),
    ...get(b), ...get(a), ...get(m1), ...bitselect, ...set(best),
    ...get(c), ...get(best), ...f32x4gt, ...set(m2),
    ...get(c), ...get(best), ...get(m2), ...bitselect, ...set(best),
    ...get(d), ...get(best), ...f32x4gt, ...set(m3),
    // Winners: d where m3; c where m2 and not m3; b where m1 and neither; a where none.
    ...at(q, true, true), ...get(gv), ...get(m3), ...vand, ...vstore(),
    ...at(q, true, false), ...get(gv), ...get(m2), ...vand, ...get(m3), ...vandnot, ...vstore(),
    ...at(q, false, true), ...get(gv), ...get(m1), ...vand, ...get(m2), ...get(m3), ...vor, ...vandnot, ...vstore(),
    ...at(q, false, false), ...get(gv), ...get(m1), ...get(m2), ...vor, ...get(m3), ...vor, ...vnot, ...vand, ...vstore(),
    ...bump(p, i32c(16)), ...bump(q, i32c(16)), ...bump(g, i32c(16)),
    ...bump(v, i32c(1)),
  ];
  return [
    ...get(C4), ...i32c(16), ...mul, ...set(pix),
    ...i32c(0), ...set(row),
    ...whileBelow(row, rowsOut, [
      ...get(x), ...get(row), ...get(rowB), ...i32c(2), ...mul, ...mul, ...add, ...set(p),
      ...get(dx), ...get(row), ...get(rowB), ...i32c(2), ...mul, ...mul, ...add, ...set(q),
      ...i32c(0), ...set(win),
      ...whileBelow(win, outW, [
        ...i32c(0), ...set(v),
        ...whileBelow(v, C4, vector),
        // The window's second column was read through `pix`: skip it.
        ...bump(p, get(pix)), ...bump(q, get(pix)),
        ...bump(win, i32c(1)),
      ]),
      ...bump(row, i32c(1)),
    ]),
  ];
}


export function maxPoolGradModuleBytes(shared = false): Uint8Array<ArrayBuffer> {
  return moduleBytes([[0x60, ...vec(new Array(7).fill([I32])), ...vec([])]], [{ name: 'grad', type: 0, code: funcCode([[6, I32], [9, V128]], gradBody()) }], shared);
}

interface PoolExports {
  grad(dx: number, x: number, g: number, rowsOut: number, outW: number, c4: number, rowB: number): void;
}

const compiled = [false, true].map((shared) => compiledOnce(() => maxPoolGradModuleBytes(shared)));
const KEY = {};
const stats = { calls: 0 };
export const maxPoolGradInternals = {
  stats,
  resetStats(): void {
    stats.calls = 0;
  },
};

/**
 * dx for 2×2/2 valid max pooling of x [B, H, W, C] (C a multiple of 4), dy [B, H/2, W/2, C]
 * (floors), into `dx`, zeroed first only where odd sizes leave inputs no window reaches; false where
 * it does not apply (WASM_KERNELS=tfjs, channels not in fours, the module unavailable): nothing written.
 */
export function heapMaxPoolGrad2x2(backend: HeapBackend, dx: { dataId: object }, x: { dataId: object; shape: number[] }, dy: { dataId: object; shape: number[] }): boolean {
  const [, H, W, C] = x.shape;
  const [B, OH, OW] = dy.shape;
  if (C % 4 !== 0 || wasmKernels() !== 'sparsoup') return false;
  const inst = heapInstance<PoolExports>(backend, KEY, (shared) => compiled[shared ? 1 : 0]());
  if (!inst) return false;
  const off = (t: { dataId: object }) => heapOffset(backend, t as never);
  const [dxP, xP, gP] = [dx, x, dy].map(off);
  if (2 * OH !== H || 2 * OW !== W) new Float32Array(inst.memory.buffer, dxP, B * H * W * C).fill(0);
  const rowB = W * C * 4;
  // One call per image: an odd H leaves a row between images that no window reads.
  for (let b = 0; b < B; b++) inst.exports.grad(dxP + b * H * rowB, xP + b * H * rowB, gP + b * OH * OW * C * 4, OH, OW, C / 4, rowB);
  stats.calls++;
  return true;
}
