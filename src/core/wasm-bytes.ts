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

// ---- instructions shared by the tf kernels' modules (gemm.ts, batch-norm-train.ts, max-pool-grad.ts,
// sparse-matmul.ts): i32 arithmetic, memory access with an offset (align hint 1: every access may be
// unaligned), SIMD, and the structured control the loops are built from ----

export const tee = (i: number) => [0x22, ...uleb(i)];
export const add = [0x6a];
export const sub = [0x6b];
export const mul = [0x6c];
export const divU = [0x6e];
export const and = [0x71];
export const eq = [0x46];
export const ltU = [0x49];
export const geS = [0x4e];
export const geU = [0x4f];
export const select = [0x1b];
export const mem = (offset: number) => [0, ...uleb(offset)];
export const i32load = (o = 0) => [0x28, ...mem(o)];
export const f32load = (o = 0) => [0x2a, ...mem(o)];
export const f32store = (o = 0) => [0x38, ...mem(o)];
export const simd = (op: number, ...imm: number[]) => [0xfd, ...uleb(op), ...imm];
export const vload = (o = 0) => simd(0x00, ...mem(o));
export const vsplat32 = (o = 0) => simd(0x09, ...mem(o));
export const vstore = (o = 0) => simd(0x0b, ...mem(o));
export const vzero = simd(0x0c, ...new Array(16).fill(0));
/** i8x16.shuffle of two vectors by float lanes (0–3 the first, 4–7 the second). */
export const shuffle = (...lanes: number[]) => simd(0x0d, ...lanes.flatMap((l) => [4 * l, 4 * l + 1, 4 * l + 2, 4 * l + 3]));
export const ifThen = (cond: number[], body: number[]) => [...cond, 0x04, 0x40, ...body, 0x0b];
export const ifElse = (cond: number[], then: number[], otherwise: number[]) => [...cond, 0x04, 0x40, ...then, 0x05, ...otherwise, 0x0b];
export const ifElseV128 = (cond: number[], then: number[], otherwise: number[]) => [...cond, 0x04, V128, ...then, 0x05, ...otherwise, 0x0b];
/** while (local p < local end, unsigned) body — tested first. */
export function whileBelow(p: number, end: number, body: number[]): number[] {
  return [0x02, 0x40, 0x03, 0x40, ...get(p), ...get(end), ...geU, 0x0d, 1, ...body, 0x0c, 0, 0x0b, 0x0b];
}
/** local p += by (by: the instructions that push the step). */
export const bump = (p: number, by: number[]) => [...get(p), ...by, ...add, ...set(p)];
/** A function's code entry: its locals ([count, type] runs) and body, length-prefixed. */
export function funcCode(locals: [number, number][], body: number[]): number[] {
  const code = [...vec(locals.map(([count, type]) => [...uleb(count), type])), ...body, 0x0b];
  return [...uleb(code.length), ...code];
}
