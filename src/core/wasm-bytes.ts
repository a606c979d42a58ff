/**
 * Encoding helpers for hand-written WebAssembly modules (src/core/soups/kernels.ts,
 * src/core/tf/sparse-matmul.ts): LEB128 numbers, vectors, sections, names and the few
 * instructions both build with; and the little of the WebAssembly API both use, compiled once.
 */
export function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

export function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

export const vec = (items: number[][]) => [...uleb(items.length), ...items.flat()];
export const section = (id: number, body: number[]) => [id, ...uleb(body.length), ...body];
export const name = (s: string) => [...uleb(s.length), ...Array.from(s, (c) => c.charCodeAt(0))];

export const I32 = 0x7f;
export const V128 = 0x7b;

/**
 * A module that imports its memory as `env.memory` (one page at least) and exports each function by
 * its name: the magic and version, then the type, import, function, export and code sections.
 * `shared` declares the memory shared (as a threaded Emscripten build's is: a shared memory can only
 * be imported as shared, and a shared import must state a maximum, here the 4 GiB of wasm32).
 */
export function moduleBytes(types: number[][], funcs: { name: string; type: number; code: number[] }[], shared = false): Uint8Array<ArrayBuffer> {
  const limits = shared ? [0x03, ...uleb(1), ...uleb(65536)] : [0x00, ...uleb(1)];
  return Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec(types)),
    ...section(2, vec([[...name('env'), ...name('memory'), 0x02, ...limits]])),
    ...section(3, vec(funcs.map((f) => uleb(f.type)))),
    ...section(7, vec(funcs.map((f, i) => [...name(f.name), 0x00, ...uleb(i)]))),
    ...section(10, vec(funcs.map((f) => f.code))),
  ]);
}

export const get = (i: number) => [0x20, ...uleb(i)];
export const set = (i: number) => [0x21, ...uleb(i)];
export const i32c = (v: number) => [0x41, ...sleb(v)];

// The project's lib (ES2023, no DOM) does not declare WebAssembly: the little used here, typed locally.
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
export interface WasmApi {
  Memory: new (descriptor: { initial: number; maximum?: number; shared?: boolean }) => WasmMemory;
  Module: new (bytes: Uint8Array<ArrayBuffer>) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
  validate(bytes: Uint8Array<ArrayBuffer>): boolean;
}
/** The runtime's WebAssembly, or undefined where it has none. */
export const wasmApi = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;

/**
 * The module `bytes()` encodes, compiled on the first call and kept; null where WebAssembly (or
 * the SIMD the module uses) is unavailable or the bytes do not validate, so callers fall back.
 */
export function compiledOnce(bytes: () => Uint8Array<ArrayBuffer>): () => object | null {
  let compiled: object | null | undefined;
  return () => {
    if (compiled === undefined) {
      try {
        const b = bytes();
        compiled = wasmApi?.validate(b) ? new wasmApi.Module(b) : null;
      } catch {
        compiled = null;
      }
    }
    return compiled;
  };
}
