import * as tf from '@tensorflow/tfjs';
import { type ConvGeometry, heapConv2D, heapConv2DBackpropFilter, heapMatMul } from './gemm.js';
import { heapMaxPoolGrad2x2 } from './max-pool-grad.js';
import { sparseFusedMatMul } from './sparse-matmul.js';
import type { HeapBackend } from './wasm-heap.js';

/**
 * Kernel fixes for the wasm backend (measured on this project's machines; see the README's benchmarks):
 * - `Conv2DBackpropFilter` is missing on wasm (tfjs issue 8474): without it no CNN trains. It is
 *   rebuilt from the fast XNNPACK Conv2D over transposed operands.
 * - `BatchMatMul` and `_FusedMatMul` (linear or ReLU) run on a fused multiply-add kernel where
 *   Relaxed SIMD is available (src/core/tf/gemm.ts: ~2× XNNPACK's wasm build, which has no FMA),
 *   transposed operands included; so do stride-1 convolutions with channels in fours (`Conv2D`,
 *   `FusedConv2D`, the stride-1 `Conv2DBackpropInput` below, and `Conv2DBackpropFilter` with output
 *   channels in eights), their patch matrices packed straight into the kernel's panels. Elsewhere: `BatchMatMul` with a transposed operand bypasses
 *   XNNPACK (~12× slower), so an explicit transpose followed by the plain matmul is used instead.
 * - `MaxPoolGrad` on wasm drops the gradient of windows whose maximum is negative (it starts the
 *   running max at 0, not −∞); pooling after ReLU never sees that, pooling elsewhere does. A plain
 *   loop over the heap replaces it (first maximum wins, as on cpu).
 * - `Tile`, and `Sum`/`Mean` over leading axes (what batch-norm's gradient and moments do on NHWC:
 *   reduce over N,H,W) are slow on wasm (Tile indexes per element; Sum/Mean transpose first):
 *   Tile becomes block copies, the reductions a row loop with float64 accumulators.
 * - `Identity` copies on wasm; the engine clones every input it saves for the gradient, so each
 *   training step copied every activation once more. Like the cpu backend, it now shares the
 *   (immutable) buffer by reference count.
 * - `Conv2DBackpropInput` on wasm is a naive loop: for stride 1 it is rebuilt as a Conv2D of `dy`
 *   with the flipped, in/out-swapped filter (strided ones keep the native kernel).
 * - `_FusedMatMul` (a Dense layer's inference) takes a sparse × dense path for pruned kernels, but
 *   only inside evaluation's `withSparseMatMul` scope (src/core/tf/sparse-matmul.ts).
 *
 * Every kernel works on `TensorInfo`s and calls the wasm backend's own kernel functions directly
 * (not tf ops), so nothing lands on the gradient tape and intermediates are freed with
 * `backend.disposeData`.
 */

type Info = tf.TensorInfo;
interface WasmBackend {
  disposeData(dataId: object): boolean;
  incRef(dataId: object): void;
  makeOutput(shape: number[], dtype: tf.DataType): Info;
  /** A view on the wasm heap: valid only until the next allocation (the heap may grow). */
  typedArrayFromHeap(info: Info): Float32Array | Int32Array | Uint8Array;
}
type KernelArgs = { inputs: Record<string, Info>; backend: WasmBackend; attrs: Record<string, unknown> };
type Kernel = (args: KernelArgs) => Info;

const original = new Map<string, Kernel>();

function kernel(name: string): Kernel {
  const own = original.get(name);
  if (own) return own;
  const config = tf.getKernel(name, 'wasm');
  if (!config) throw new Error(`the wasm backend has no ${name} kernel`);
  return config.kernelFunc as unknown as Kernel;
}

function call(name: string, backend: WasmBackend, inputs: Record<string, Info>, attrs: Record<string, unknown> = {}): Info {
  return kernel(name)({ inputs, backend, attrs });
}

function free(backend: WasmBackend, ...infos: Info[]): void {
  for (const t of infos) backend.disposeData(t.dataId);
}

function transpose(backend: WasmBackend, x: Info, perm: number[]): Info {
  return call('Transpose', backend, { x }, { perm });
}

type ConvPad = 'valid' | 'same' | number | [[number, number], [number, number], [number, number], [number, number]];

function convInfo(xShape: number[], filterShape: number[], attrs: Record<string, unknown>) {
  const dataFormat = (attrs.dataFormat as 'NHWC' | 'NCHW' | undefined) ?? 'NHWC';
  if (dataFormat !== 'NHWC') throw new Error(`wasm conv gradient supports NHWC only, got ${dataFormat}`);
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs.strides as [number, number] | number,
    1,
    attrs.pad as ConvPad,
    attrs.dimRoundingMode as 'floor' | 'round' | 'ceil' | undefined,
    false,
    'channelsLast',
  );
}

/**
 * dW[kh,kw,ci,co] = Σ_{b,oh,ow} x[b, oh·s+kh−top, ow·s+kw−left, ci] · dy[b,oh,ow,co]
 * is a convolution of x (channels ↔ batch swapped: [Ci,H,W,B]) with dy as the filter
 * ([OH,OW,B,Co]), dilated by the forward stride. Output [Ci,KH',KW',Co] is cropped to KH×KW.
 */
const conv2DBackpropFilterConv: Kernel = ({ inputs, backend, attrs }) => {
  const { x, dy } = inputs;
  const filterShape = attrs.filterShape as number[];
  const info = convInfo(x.shape, filterShape, attrs);
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw, inHeight, inWidth } = info;
  const { top, left } = info.padInfo;
  const { outHeight: oh, outWidth: ow } = info;
  // Pad the far side only as much as the last filter tap reaches; never negative (valid padding
  // can leave trailing rows unused, which the crop below handles).
  const bottom = Math.max(0, kh - inHeight - top + (oh - 1) * sh);
  const right = Math.max(0, kw - inWidth - left + (ow - 1) * sw);
  const xT = transpose(backend, x, [3, 1, 2, 0]);
  const dyT = transpose(backend, dy, [1, 2, 0, 3]);
  const conv = call(
    'Conv2D',
    backend,
    { x: xT, filter: dyT },
    {
      strides: [1, 1],
      dilations: [sh, sw],
      pad: [
        [0, 0],
        [top, bottom],
        [left, right],
        [0, 0],
      ],
      dataFormat: 'NHWC',
    },
  );
  free(backend, xT, dyT);
  let cropped = conv;
  if (conv.shape[1] !== kh || conv.shape[2] !== kw) {
    cropped = call('Slice', backend, { x: conv }, { begin: [0, 0, 0, 0], size: [conv.shape[0], kh, kw, conv.shape[3]] });
    free(backend, conv);
  }
  const out = transpose(backend, cropped, [1, 2, 0, 3]);
  free(backend, cropped);
  return out;
};

/**
 * The same gradient as one matmul: dW[(kh,kw,ci), co] = P[(kh,kw,ci), m] · dy[m, co] over the
 * M = B·OH·OW output positions, with the patch matrix P built row by row from the heap. For few
 * input channels (the first layer) XNNPACK's convolution above has a tiny output and a huge
 * filter and runs far below its speed; this is several times faster there.
 */
const conv2DBackpropFilterIm2col: Kernel = ({ inputs, backend, attrs }) => {
  const { x, dy } = inputs;
  const filterShape = attrs.filterShape as number[];
  const info = convInfo(x.shape, filterShape, attrs);
  const { batchSize, filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw, inHeight, inWidth, inChannels: ci } = info;
  const { outHeight: oh, outWidth: ow, outChannels: co } = info;
  const { top, left } = info.padInfo;
  const m = batchSize * oh * ow;
  const rows = kh * kw * ci;
  // Channel-major x ([Ci, B, H, W]): every patch row is then a run of contiguous reads (a plain
  // copy at stride 1) instead of reads `ci` floats apart.
  const xc = ci === 1 ? x : transpose(backend, x, [3, 0, 1, 2]);
  const patches = backend.makeOutput([1, rows, m], 'float32');
  const src = backend.typedArrayFromHeap(xc) as Float32Array;
  const p = backend.typedArrayFromHeap(patches) as Float32Array;
  const plane = inHeight * inWidth;
  for (let fy = 0; fy < kh; fy++) {
    for (let fx = 0; fx < kw; fx++) {
      // Output columns whose tap ix = xx·sw + fx − left lands inside the image: [x0, x1).
      const x0 = Math.min(ow, Math.max(0, Math.ceil((left - fx) / sw)));
      const x1 = Math.max(x0, Math.min(ow, Math.floor((inWidth - 1 + left - fx) / sw) + 1));
      for (let c = 0; c < ci; c++) {
        let o = ((fy * kw + fx) * ci + c) * m;
        for (let b = 0; b < batchSize; b++) {
          const xb = (c * batchSize + b) * plane;
          for (let y = 0; y < oh; y++, o += ow) {
            const iy = y * sh + fy - top;
            if (iy < 0 || iy >= inHeight) {
              p.fill(0, o, o + ow);
              continue;
            }
            if (x0 > 0) p.fill(0, o, o + x0);
            if (x1 < ow) p.fill(0, o + x1, o + ow);
            const row = xb + iy * inWidth + fx - left;
            if (sw === 1) p.set(src.subarray(row + x0, row + x1), o + x0);
            else for (let xx = x0; xx < x1; xx++) p[o + xx] = src[row + xx * sw];
          }
        }
      }
    }
  }
  if (xc !== x) free(backend, xc);
  const dy3 = { dataId: dy.dataId, shape: [1, m, co], dtype: dy.dtype };
  const out =
    heapMatMul(backend as unknown as HeapBackend, patches, dy3, false, false, null, false) ??
    call('BatchMatMul', backend, { a: patches, b: dy3 }, { transposeA: false, transposeB: false });
  free(backend, patches);
  return { ...out, shape: [kh, kw, ci, co] };
};

/**
 * The FMA kernel's blocked product of patches and dy where it applies (stride 1, channels a multiple
 * of 4, output channels of 8); else the patch matrix for few input channels, the transposed
 * convolution otherwise (measured crossover).
 */
const conv2DBackpropFilter: Kernel = (args) => {
  const { x, dy } = args.inputs;
  const filterShape = args.attrs.filterShape as number[];
  const g = stride1Geometry(x.shape, filterShape, args.attrs);
  const fma = g ? heapConv2DBackpropFilter(args.backend as unknown as HeapBackend, x, dy, filterShape, g) : null;
  if (fma) return fma;
  const ci = x.shape[3];
  return ci <= IM2COL_MAX_CHANNELS ? conv2DBackpropFilterIm2col(args) : conv2DBackpropFilterConv(args);
};

let IM2COL_MAX_CHANNELS = 4;
let useSimdPoolGrad = true;

/** For tests and benchmarks: both filter-gradient paths, and the switch between them. */
export const internals = {
  conv2DBackpropFilterConv,
  conv2DBackpropFilterIm2col,
  /** The 2×2 pooling gradient on the SIMD kernel (max-pool-grad.ts) or the JS loop (its reference). */
  setSimdPoolGrad(on: boolean): void {
    useSimdPoolGrad = on;
  },
  setIm2colMaxChannels(n: number): void {
    IM2COL_MAX_CHANNELS = n;
  },
};

function swapLast(rank: number): number[] {
  const perm = Array.from({ length: rank }, (_, i) => i);
  perm[rank - 2] = rank - 1;
  perm[rank - 1] = rank - 2;
  return perm;
}

const batchMatMul: Kernel = ({ inputs, backend, attrs }) => {
  let { a, b } = inputs;
  const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
  const fma = heapMatMul(backend as unknown as HeapBackend, a, b, transposeA, transposeB, null, false);
  if (fma) return fma;
  if (!transposeA && !transposeB) return call('BatchMatMul', backend, inputs, attrs);
  const temps: Info[] = [];
  if (transposeA) {
    a = transpose(backend, a, swapLast(a.shape.length));
    temps.push(a);
  }
  if (transposeB) {
    b = transpose(backend, b, swapLast(b.shape.length));
    temps.push(b);
  }
  const out = call('BatchMatMul', backend, { a, b }, { ...attrs, transposeA: false, transposeB: false });
  free(backend, ...temps);
  return out;
};

/**
 * dx as a stride-1 convolution with W'[kh,kw,co,ci] = W[KH−1−kh, KW−1−kw, ci, co]:
 * - stride 1: of dy itself, padded (KH−1−top, KH−1−bottom) by the convolution;
 * - stride s: of dy spread onto a zero buffer [B, H+KH−1, W+KW−1, Co] (row KH−1−top + oh·s), then
 *   'valid'. It multiplies s² times more zeros than needed but runs on XNNPACK, still ~2× faster
 *   than the naive native kernel.
 * Paddings beyond KH−1 (explicit only) keep the native kernel.
 */
const conv2DBackpropInput: Kernel = ({ inputs, backend, attrs }) => {
  const { dy, filter } = inputs;
  const inputShape = attrs.inputShape as number[];
  const info = convInfo(inputShape, filter.shape, attrs);
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw } = info;
  const { top, bottom, left, right } = info.padInfo;
  const strided = sh !== 1 || sw !== 1;
  if (top > kh - 1 || left > kw - 1 || (!strided && (bottom > kh - 1 || right > kw - 1))) {
    return call('Conv2DBackpropInput', backend, inputs, attrs);
  }
  const flipped = call('Reverse', backend, { x: filter }, { dims: [0, 1] });
  const swapped = transpose(backend, flipped, [0, 1, 3, 2]);
  free(backend, flipped);
  let x = dy;
  let pad: ConvPad = [
    [0, 0],
    [kh - 1 - top, kh - 1 - bottom],
    [kw - 1 - left, kw - 1 - right],
    [0, 0],
  ];
  if (strided) {
    const { batchSize: b, inHeight: h, inWidth: w, outHeight: oh, outWidth: ow, outChannels: co } = info;
    const hp = h + kh - 1;
    const wp = w + kw - 1;
    x = backend.makeOutput([b, hp, wp, co], 'float32');
    const src = backend.typedArrayFromHeap(dy) as Float32Array;
    const dst = backend.typedArrayFromHeap(x) as Float32Array;
    dst.fill(0);
    for (let n = 0; n < b; n++) {
      for (let y = 0; y < oh; y++) {
        const r = kh - 1 - top + y * sh;
        if (r >= hp) break; // rows past the buffer only feed outputs past H
        for (let xx = 0; xx < ow; xx++) {
          const c = kw - 1 - left + xx * sw;
          if (c >= wp) break;
          const from = ((n * oh + y) * ow + xx) * co;
          dst.set(src.subarray(from, from + co), ((n * hp + r) * wp + c) * co);
        }
      }
    }
    pad = 'valid';
  }
  const out = conv2D({ inputs: { x, filter: swapped }, backend, attrs: { strides: [1, 1], dilations: [1, 1], pad, dataFormat: 'NHWC' } });
  free(backend, swapped);
  if (x !== dy) free(backend, x);
  return out;
};

/** The templates' 2×2/2 valid pooling: four fixed taps, no window bookkeeping (~3× the general loop). */
function maxPoolGrad2x2(
  x: Float32Array,
  g: Float32Array,
  dx: Float32Array,
  batch: number,
  inHeight: number,
  inWidth: number,
  c: number,
  outHeight: number,
  outWidth: number,
): void {
  const rowStride = inWidth * c;
  let gi = 0;
  for (let b = 0; b < batch; b++) {
    for (let oh = 0; oh < outHeight; oh++) {
      let p00 = b * inHeight * rowStride + 2 * oh * rowStride;
      for (let ow = 0; ow < outWidth; ow++, p00 += 2 * c) {
        const p01 = p00 + c;
        const p10 = p00 + rowStride;
        const p11 = p10 + c;
        for (let ch = 0; ch < c; ch++, gi++) {
          // Row-major window order with strict '>' keeps the first maximum, as on cpu.
          let at = p00 + ch;
          let best = x[at];
          if (x[p01 + ch] > best) {
            at = p01 + ch;
            best = x[at];
          }
          if (x[p10 + ch] > best) {
            at = p10 + ch;
            best = x[at];
          }
          if (x[p11 + ch] > best) at = p11 + ch;
          dx[at] += g[gi];
        }
      }
    }
  }
}

const maxPoolGrad: Kernel = ({ inputs, backend, attrs }) => {
  const { dy, input } = inputs;
  const info = tf.backend_util.computePool2DInfo(
    input.shape as [number, number, number, number],
    attrs.filterSize as [number, number] | number,
    attrs.strides as [number, number] | number,
    1,
    attrs.pad as ConvPad,
    attrs.dimRoundingMode as 'floor' | 'round' | 'ceil' | undefined,
  );
  const { batchSize, inHeight, inWidth, inChannels: c, outHeight, outWidth, strideHeight, strideWidth } = info;
  const { effectiveFilterHeight: fh, effectiveFilterWidth: fw } = info;
  const { top, left } = info.padInfo;
  const out = backend.makeOutput(input.shape, 'float32');
  // Views taken after the allocation: makeOutput may grow (and so detach) the heap.
  const x = backend.typedArrayFromHeap(input);
  const g = backend.typedArrayFromHeap(dy);
  const dx = backend.typedArrayFromHeap(out) as Float32Array;
  const twoByTwo = fh === 2 && fw === 2 && strideHeight === 2 && strideWidth === 2 && top === 0 && left === 0 && outHeight * 2 <= inHeight && outWidth * 2 <= inWidth;
  if (twoByTwo && useSimdPoolGrad && heapMaxPoolGrad2x2(backend as unknown as HeapBackend, out, input, dy)) return out;
  dx.fill(0);
  if (twoByTwo) {
    maxPoolGrad2x2(x as Float32Array, g as Float32Array, dx, batchSize, inHeight, inWidth, c, outHeight, outWidth);
    return out;
  }
  // Channels innermost: every window is read as contiguous rows of `c` floats.
  const best = new Float32Array(c);
  const at = new Int32Array(c);
  for (let b = 0; b < batchSize; b++) {
    const xb = b * inHeight * inWidth * c;
    for (let oh = 0; oh < outHeight; oh++) {
      const h0 = oh * strideHeight - top;
      const hStart = Math.max(0, h0);
      const hEnd = Math.min(inHeight, h0 + fh);
      for (let ow = 0; ow < outWidth; ow++) {
        const w0 = ow * strideWidth - left;
        const wStart = Math.max(0, w0);
        const wEnd = Math.min(inWidth, w0 + fw);
        best.fill(Number.NEGATIVE_INFINITY);
        at.fill(-1);
        for (let h = hStart; h < hEnd; h++) {
          for (let w = wStart; w < wEnd; w++) {
            const base = xb + (h * inWidth + w) * c;
            for (let ch = 0; ch < c; ch++) {
              // Strictly greater: the first maximum in row-major window order wins, as on cpu.
              if (x[base + ch] > best[ch]) {
                best[ch] = x[base + ch];
                at[ch] = base + ch;
              }
            }
          }
        }
        const gBase = ((b * outHeight + oh) * outWidth + ow) * c;
        for (let ch = 0; ch < c; ch++) if (at[ch] >= 0) dx[at[ch]] += g[gBase + ch];
      }
    }
  }
  return out;
};

/** Tile by block copies: lay out one inner block, then double it with copyWithin. */
const tile: Kernel = ({ inputs, backend, attrs }) => {
  const { x } = inputs;
  if (x.dtype === 'string' || x.dtype === 'complex64') return call('Tile', backend, inputs, attrs);
  const reps = attrs.reps as number[];
  const rank = x.shape.length;
  const outShape = x.shape.map((d, i) => d * reps[i]);
  const out = backend.makeOutput(outShape, x.dtype);
  if (outShape.some((d) => d === 0)) return out;
  const src = backend.typedArrayFromHeap(x);
  const dst = backend.typedArrayFromHeap(out);
  const inStrides = tf.util.computeStrides(x.shape);
  const outStrides = tf.util.computeStrides(outShape);
  const inStride = (d: number) => (d === rank - 1 ? 1 : inStrides[d]);
  const outStride = (d: number) => (d === rank - 1 ? 1 : outStrides[d]);
  // Fills the output block of dimension `d` whose first element is at outOffset.
  const fill = (d: number, inOffset: number, outOffset: number) => {
    const block = x.shape[d] * outStride(d);
    if (d === rank - 1) dst.set(src.subarray(inOffset, inOffset + x.shape[d]), outOffset);
    else for (let i = 0; i < x.shape[d]; i++) fill(d + 1, inOffset + i * inStride(d), outOffset + i * outStride(d));
    const total = block * reps[d];
    for (let filled = block; filled < total; filled *= 2) {
      dst.copyWithin(outOffset + filled, outOffset, outOffset + Math.min(filled, total - filled));
    }
  };
  if (rank === 0) dst.set(src);
  else fill(0, 0, 0);
  return out;
};

/** Sum or mean over the leading axes [0..k) of a float32 tensor, else the native kernel. */
function leadingReduction(name: 'Sum' | 'Mean'): Kernel {
  return ({ inputs, backend, attrs }) => {
    const { x } = inputs;
    const axes = tf.util.parseAxisParam(attrs.axis as number | number[], x.shape).sort((a, b) => a - b);
    const leading = axes.length > 0 && axes.length < x.shape.length && axes.every((a, i) => a === i);
    if (!leading || x.dtype !== 'float32') return call(name, backend, inputs, attrs);
    const rows = x.shape.slice(0, axes.length).reduce((a, b) => a * b, 1);
    const cols = x.shape.slice(axes.length).reduce((a, b) => a * b, 1);
    const outShape = attrs.keepDims ? x.shape.map((d, i) => (i < axes.length ? 1 : d)) : x.shape.slice(axes.length);
    const out = backend.makeOutput(outShape, 'float32');
    const src = backend.typedArrayFromHeap(x) as Float32Array;
    const dst = backend.typedArrayFromHeap(out) as Float32Array;
    const acc = new Float64Array(cols);
    // Four rows per pass: pairwise float32 adds into a float64 accumulator, ~2× a plain loop.
    let r = 0;
    let o = 0;
    for (; r + 4 <= rows; r += 4, o += 4 * cols) {
      for (let c = 0; c < cols; c++) acc[c] += src[o + c] + src[o + cols + c] + (src[o + 2 * cols + c] + src[o + 3 * cols + c]);
    }
    for (; r < rows; r++, o += cols) for (let c = 0; c < cols; c++) acc[c] += src[o + c];
    const scale = name === 'Mean' ? 1 / rows : 1;
    for (let c = 0; c < cols; c++) dst[c] = acc[c] * scale;
    return out;
  };
}

/** A Dense layer's y = act(x·W + bias): the FMA kernel for linear and ReLU, the native kernel otherwise. */
function fusedMatMul(args: { inputs: Record<string, Info | null | undefined>; backend: HeapBackend; attrs: Record<string, unknown> }): Info {
  const { a, b, bias, preluActivationWeights } = args.inputs;
  const { transposeA, transposeB, activation } = args.attrs as { transposeA: boolean; transposeB: boolean; activation?: string };
  const act = activation ?? 'linear';
  const fma =
    a && b && !preluActivationWeights && (act === 'linear' || act === 'relu')
      ? heapMatMul(args.backend, a, b, transposeA, transposeB, bias ?? null, act === 'relu')
      : null;
  return fma ?? call('_FusedMatMul', args.backend as unknown as WasmBackend, args.inputs as Record<string, Info>, args.attrs);
}

/** The output size and leading padding of an NHWC convolution with stride 1 and dilation 1; null for any other. */
function stride1Geometry(xShape: number[], filterShape: number[], attrs: Record<string, unknown>): ConvGeometry | null {
  if (((attrs.dataFormat as string | undefined) ?? 'NHWC') !== 'NHWC') return null;
  const dilations = attrs.dilations as number | number[] | undefined;
  if (dilations != null && (Array.isArray(dilations) ? dilations : [dilations]).some((d) => d !== 1)) return null;
  const info = convInfo(xShape, filterShape, attrs);
  if (info.strideHeight !== 1 || info.strideWidth !== 1) return null;
  return { outHeight: info.outHeight, outWidth: info.outWidth, top: info.padInfo.top, left: info.padInfo.left };
}

/**
 * A stride-1, dilation-1 NHWC convolution (linear or ReLU, optional bias) on the FMA kernel
 * (gemm.ts: the patch matrix packed straight into its panels) where it applies; null otherwise.
 */
function fmaConv(backend: WasmBackend, x: Info, filter: Info, bias: Info | null, activation: string | undefined, attrs: Record<string, unknown>): Info | null {
  const act = activation ?? 'linear';
  if (act !== 'linear' && act !== 'relu') return null;
  const g = stride1Geometry(x.shape, filter.shape, attrs);
  return g ? heapConv2D(backend as unknown as HeapBackend, x, filter, bias, act === 'relu', g) : null;
}

const conv2D: Kernel = ({ inputs, backend, attrs }) => fmaConv(backend, inputs.x, inputs.filter, null, 'linear', attrs) ?? call('Conv2D', backend, inputs, attrs);

const fusedConv2D: Kernel = ({ inputs, backend, attrs }) => {
  const { x, filter, bias, preluActivationWeights } = inputs as Record<string, Info | undefined>;
  const fma = x && filter && !preluActivationWeights ? fmaConv(backend, x, filter, bias ?? null, attrs.activation as string | undefined, attrs) : null;
  return fma ?? call('FusedConv2D', backend, inputs, attrs);
};

const identity: Kernel = ({ inputs, backend }) => {
  const { x } = inputs;
  backend.incRef(x.dataId);
  return { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype };
};

const FIXES: Record<string, Kernel> = {
  Conv2DBackpropFilter: conv2DBackpropFilter,
  BatchMatMul: batchMatMul,
  Conv2DBackpropInput: conv2DBackpropInput,
  MaxPoolGrad: maxPoolGrad,
  Tile: tile,
  Sum: leadingReduction('Sum'),
  Mean: leadingReduction('Mean'),
  Identity: identity,
  Conv2D: conv2D,
  FusedConv2D: fusedConv2D,
  // Sparse × dense for pruned Dense kernels, inside evaluation only (src/core/tf/sparse-matmul.ts).
  _FusedMatMul: sparseFusedMatMul(fusedMatMul) as unknown as Kernel,
};

let registered = false;

/** Registers the fixes on the wasm backend once per thread. Safe to call again. */
export function registerWasmKernelFixes(): void {
  if (registered) return;
  for (const [name, fn] of Object.entries(FIXES)) {
    const existing = tf.getKernel(name, 'wasm');
    if (existing) {
      original.set(name, existing.kernelFunc as unknown as Kernel);
      tf.unregisterKernel(name, 'wasm');
    }
    tf.registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc: fn as unknown as tf.KernelFunc });
  }
  registered = true;
}

/** Names of the kernels this module replaces or adds on wasm (for /health and reports). */
export const WASM_KERNEL_FIXES = Object.keys(FIXES);
