import type * as tf from '@tensorflow/tfjs';
import { type WasmMemory, wasmApi } from '../wasm-bytes.js';

/**
 * The little of @tensorflow/tfjs-backend-wasm's backend object that the hand-written modules
 * (sparse-matmul.ts, gemm.ts) use to work on its heap: tensors' byte offsets, allocation and
 * disposal, and the Emscripten module whose memory they import.
 */
export interface HeapBackend {
  disposeData(dataId: object): boolean;
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  dataIdMap: { get(dataId: object): { memoryOffset: number } | undefined };
  typedArrayFromHeap(info: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
  /** The Emscripten module: the single-threaded build exports its memory among `asm`; the threaded one creates it in JS and keeps it as `wasmMemory`. */
  wasm: { asm?: Record<string, unknown>; wasmMemory?: unknown };
}

export interface HeapInstance<E> {
  exports: E;
  memory: WasmMemory;
}

const instances = new WeakMap<object, Map<object, HeapInstance<unknown> | null>>();

/**
 * One instance per backend of the module `compiled(shared)` gives, importing the backend's own
 * memory (shared for the threaded build), cached; null where the memory cannot be found or the
 * module is unavailable (the caller keeps the backend's kernel).
 */
export function heapInstance<E>(backend: HeapBackend, key: object, compiled: (shared: boolean) => object | null): HeapInstance<E> | null {
  let perBackend = instances.get(backend);
  if (!perBackend) {
    perBackend = new Map();
    instances.set(backend, perBackend);
  }
  let inst = perBackend.get(key);
  if (inst === undefined) {
    inst = null;
    const isMemory = (v: unknown) => wasmApi !== undefined && v instanceof wasmApi.Memory;
    const memory = (isMemory(backend.wasm.wasmMemory) ? backend.wasm.wasmMemory : Object.values(backend.wasm.asm ?? {}).find(isMemory)) as WasmMemory | undefined;
    const shared = typeof SharedArrayBuffer !== 'undefined' && memory?.buffer instanceof SharedArrayBuffer;
    const mod = memory && compiled(shared);
    if (memory && mod && wasmApi) {
      try {
        inst = { exports: new wasmApi.Instance(mod, { env: { memory } }).exports, memory };
      } catch {
        inst = null;
      }
    }
    perBackend.set(key, inst);
  }
  return inst as HeapInstance<E> | null;
}

/** A tensor's byte offset on the heap (stable; typed-array views on the heap are not: an allocation may grow it). */
export function heapOffset(backend: HeapBackend, info: tf.TensorInfo): number {
  const d = backend.dataIdMap.get(info.dataId);
  if (!d) throw new Error('a tensor has no data on the wasm heap');
  return d.memoryOffset;
}
