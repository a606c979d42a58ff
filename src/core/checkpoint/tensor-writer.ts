import { CoreInputError } from '../errors.js';
import { DTYPE_BYTES, type DType, FLOAT_DTYPES, type TensorEntry } from '../tensors.js';
import { encodeFromFloat32 } from './dtype.js';

/**
 * Where written bytes go (ArtifactWriter.write fits). Chunks may be views of reused buffers: a sink
 * must be done with a chunk (or have copied it) when its promise resolves.
 */
export type ByteSink = (chunk: Uint8Array) => Promise<void>;

export interface TensorSpec {
  name: string;
  dtype: DType;
  shape: readonly number[];
}

/** Product of a shape with overflow checks; undefined when the shape is invalid. */
export function shapeSize(shape: unknown): number | undefined {
  if (!Array.isArray(shape)) return undefined;
  let size = 1;
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) return undefined;
    size *= d;
    if (!Number.isSafeInteger(size)) return undefined;
  }
  return size;
}

/**
 * Lays tensors out back to back from `start`, validating names, dtypes and shapes. Specs come from
 * parsed uploads (a tfjs weight may be named `__metadata__`), so problems are CoreInputErrors.
 */
export function layoutTensors(specs: readonly TensorSpec[], start = 0, reservedNames: readonly string[] = []): TensorEntry[] {
  const seen = new Set<string>();
  let offset = start;
  return specs.map((s) => {
    if (typeof s.name !== 'string' || reservedNames.includes(s.name)) {
      throw new CoreInputError('invalid-checkpoint', `a tensor cannot be named ${JSON.stringify(s.name)} in this format`, { tensor: s.name }, 422);
    }
    if (seen.has(s.name)) throw new CoreInputError('invalid-checkpoint', `tensor ${s.name} is listed twice`, { tensor: s.name }, 422);
    seen.add(s.name);
    const elementBytes = DTYPE_BYTES[s.dtype];
    if (!Object.hasOwn(DTYPE_BYTES, s.dtype)) throw new CoreInputError('invalid-checkpoint', `tensor ${s.name} has unknown dtype ${String(s.dtype)}`, { tensor: s.name }, 422);
    const size = shapeSize(s.shape);
    const byteLength = size === undefined ? undefined : size * elementBytes;
    if (byteLength === undefined || !Number.isSafeInteger(byteLength) || !Number.isSafeInteger(offset + byteLength)) {
      throw new CoreInputError('invalid-checkpoint', `tensor ${s.name} has an invalid or too large shape ${JSON.stringify(s.shape)}`, { tensor: s.name }, 422);
    }
    const entry: TensorEntry = { name: s.name, dtype: s.dtype, shape: [...s.shape], byteOffset: offset, byteLength };
    offset += byteLength;
    return entry;
  });
}

const DEFAULT_CHUNK_BYTES = 4 << 20;

/**
 * Writes an optional prefix (a safetensors header) and then each tensor in order to a sink. Memory:
 * one reused encoding buffer of at most `chunkBytes`; the caller holds one tensor at a time.
 * Misuse (wrong order, wrong sizes, concurrent calls) is a programming error: plain Errors.
 */
export class TensorStreamWriter {
  private next = 0;
  private written = 0;
  private prefixWritten = false;
  private busy = false;
  private failed?: unknown;
  private scratch?: Uint8Array;
  private readonly chunkBytes: number;

  constructor(
    readonly entries: readonly TensorEntry[],
    private readonly sink: ByteSink,
    private readonly prefix: Uint8Array = new Uint8Array(0),
    opts: { chunkBytes?: number } = {},
  ) {
    this.chunkBytes = Math.max(8, opts.chunkBytes ?? DEFAULT_CHUNK_BYTES);
  }

  /** Total bytes the finished file will have. */
  get totalBytes(): number {
    const last = this.entries[this.entries.length - 1];
    return last ? last.byteOffset + last.byteLength : this.prefix.byteLength;
  }

  get bytesWritten(): number {
    return this.written;
  }

  private async emit(chunk: Uint8Array): Promise<void> {
    if (chunk.byteLength === 0) return;
    await this.sink(chunk);
    this.written += chunk.byteLength;
  }

  private async guarded(fn: () => Promise<void>): Promise<void> {
    if (this.failed !== undefined) throw new Error('writer failed earlier', { cause: this.failed });
    if (this.busy) throw new Error('writer calls must not overlap: await each one');
    this.busy = true;
    try {
      if (!this.prefixWritten) {
        await this.emit(this.prefix);
        this.prefixWritten = true;
      }
      await fn();
    } catch (err) {
      this.failed = err;
      throw err;
    } finally {
      this.busy = false;
    }
  }

  /** Float32 data is encoded into the entry's float dtype; a Uint8Array is the raw stored bytes. */
  async writeTensor(name: string, data: Float32Array | Uint8Array): Promise<void> {
    const entry = this.entries[this.next];
    if (!entry) throw new Error(`all ${this.entries.length} tensors are written; got another (${name})`);
    if (entry.name !== name) throw new Error(`tensor ${entry.name} comes next, got ${name}`);
    const elementBytes = DTYPE_BYTES[entry.dtype];
    if (data instanceof Float32Array) {
      if (!FLOAT_DTYPES.has(entry.dtype)) throw new Error(`tensor ${name} is ${entry.dtype}: write its raw bytes, not float32`);
      if (data.length * elementBytes !== entry.byteLength) {
        throw new Error(`tensor ${name} [${entry.shape}] holds ${entry.byteLength / elementBytes} values, got ${data.length}`);
      }
    } else if (data.byteLength !== entry.byteLength) {
      throw new Error(`tensor ${name} takes ${entry.byteLength} bytes, got ${data.byteLength}`);
    }
    await this.guarded(async () => {
      if (data instanceof Float32Array && entry.dtype !== 'F32') {
        const per = Math.floor(this.chunkBytes / elementBytes);
        this.scratch ??= new Uint8Array(per * 8);
        for (let i = 0; i < data.length; i += per) {
          await this.emit(encodeFromFloat32(entry.dtype, data.subarray(i, i + per), this.scratch));
        }
      } else {
        // F32 and raw bytes go out as views: no copy.
        const bytes = data instanceof Float32Array ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : data;
        for (let i = 0; i < bytes.byteLength; i += this.chunkBytes) await this.emit(bytes.subarray(i, i + this.chunkBytes));
      }
      this.next++;
    });
  }

  /** Refuses when tensors are missing; writes the prefix when there were no tensors at all. */
  async finish(): Promise<{ bytesWritten: number }> {
    if (this.next !== this.entries.length) {
      throw new Error(`only ${this.next} of ${this.entries.length} tensors written; ${this.entries[this.next].name} is next`);
    }
    await this.guarded(async () => {});
    return { bytesWritten: this.written };
  }
}
