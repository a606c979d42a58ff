/**
 * WASM_KERNELS: which kernels run training's and evaluation's hot operations on the wasm backend in
 * this thread. 'sparsoup' (the default): the hand-written WebAssembly SIMD kernels on the backend's
 * heap, i.e. the FMA matrix products and stride-1 convolutions (gemm.ts, where V8 has Relaxed SIMD),
 * batch norm in training mode (batch-norm-train.ts) and the 2×2 pooling gradient (max-pool-grad.ts).
 * 'tfjs': tfjs's own (XNNPACK, tfjs-layers' batch-norm chain), with sparsoup's fixes for missing or
 * broken kernels (wasm-kernels.ts) and the sparse inference product (sparse-matmul.ts) still in place.
 */
export type WasmKernels = 'sparsoup' | 'tfjs';
export const WASM_KERNEL_SETS: readonly WasmKernels[] = ['sparsoup', 'tfjs'];

let current: WasmKernels = 'sparsoup';

export function setWasmKernels(k: WasmKernels): void {
  if (!WASM_KERNEL_SETS.includes(k)) throw new Error(`WASM_KERNELS must be one of ${WASM_KERNEL_SETS.join(', ')}, got ${k}`);
  current = k;
}

export function wasmKernels(): WasmKernels {
  return current;
}
