import { type FileHandle, open } from 'node:fs/promises';
import { type CheckpointReader, DTYPE_BYTES, type TensorEntry } from '../tensors.js';
import type { ByteSource } from './byte-source.js';
import { decodeFloat32 } from './dtype.js';

export type CheckpointFormat = 'safetensors' | 'tfjs-weights';

/** FileHandle.read takes at most 2 GiB - 1 bytes per call; stay well below. */
const MAX_READ = 1 << 30;

/**
 * Reads tensors from bytes whose layout (absolute offsets) is already known: one read per tensor,
 * never the whole checkpoint. Subclasses say where the bytes come from (a file, a ranged source).
 */
export abstract class TensorRangeReader implements CheckpointReader {
  readonly tensors: readonly TensorEntry[];
  private readonly byName = new Map<string, TensorEntry>();
  private scratch?: Uint8Array;
  private scratchBusy = false;

  constructor(
    readonly name: string,
    entries: readonly TensorEntry[],
    readonly format?: CheckpointFormat,
  ) {
    this.tensors = entries;
    for (const e of entries) this.byName.set(e.name, e);
  }

  protected entry(name: string): TensorEntry {
    const e = this.byName.get(name);
    if (!e) throw new Error(`no tensor named ${name} in ${this.name}`);
    return e;
  }

  protected abstract readInto(entry: TensorEntry, target: Uint8Array): Promise<void>;

  async readRaw(name: string, into?: Uint8Array): Promise<Uint8Array> {
    const e = this.entry(name);
    const out = into && into.byteLength >= e.byteLength ? into.subarray(0, e.byteLength) : new Uint8Array(e.byteLength);
    await this.readInto(e, out);
    return out;
  }

  async readFloat32(name: string, into?: Float32Array): Promise<Float32Array> {
    const e = this.entry(name);
    const n = e.byteLength / DTYPE_BYTES[e.dtype];
    const out = into && into.length >= n ? into.subarray(0, n) : new Float32Array(n);
    if (e.dtype === 'F32') {
      // Read straight into the result's bytes: no staging copy.
      await this.readInto(e, new Uint8Array(out.buffer, out.byteOffset, e.byteLength));
      return out;
    }
    // Other dtypes stage through a reused buffer; a concurrent read gets a private one.
    let staging: Uint8Array;
    const useScratch = !this.scratchBusy;
    if (useScratch) {
      if (!this.scratch || this.scratch.byteLength < e.byteLength) this.scratch = new Uint8Array(e.byteLength);
      staging = this.scratch.subarray(0, e.byteLength);
      this.scratchBusy = true;
    } else {
      staging = new Uint8Array(e.byteLength);
    }
    try {
      await this.readInto(e, staging);
      return decodeFloat32(e.dtype, staging, out);
    } finally {
      if (useScratch) this.scratchBusy = false;
    }
  }

  protected dropScratch(): void {
    this.scratch = undefined;
  }

  abstract close(): Promise<void>;
}

/** Reads tensors through a `ByteSource` (ranges of an object in a bucket): one range per tensor. */
export class SourceCheckpointReader extends TensorRangeReader {
  private closed = false;

  constructor(
    readonly source: ByteSource,
    entries: readonly TensorEntry[],
    format?: CheckpointFormat,
  ) {
    super(source.name, entries, format);
  }

  protected async readInto(entry: TensorEntry, target: Uint8Array): Promise<void> {
    if (this.closed) throw new Error(`checkpoint reader for ${this.name} is closed`);
    if (entry.byteOffset + entry.byteLength > this.source.size) throw new Error(`${this.name} ends inside tensor ${entry.name} (at byte ${this.source.size})`);
    if (target.byteLength > 0) await this.source.readAt(target, entry.byteOffset);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.dropScratch();
    await this.source.close();
  }
}

/**
 * Reads tensors of a file whose layout (absolute offsets) is already known: safetensors files and
 * TensorFlow.js weight files alike. One positioned read per tensor; never loads the whole file.
 */
export class FileCheckpointReader extends TensorRangeReader {
  private handle?: Promise<FileHandle>;
  private closed = false;

  constructor(
    readonly path: string,
    entries: readonly TensorEntry[],
    format?: CheckpointFormat,
    handle?: FileHandle,
  ) {
    super(path, entries, format);
    if (handle) this.handle = Promise.resolve(handle);
  }

  private file(): Promise<FileHandle> {
    if (this.closed) throw new Error(`checkpoint reader for ${this.path} is closed`);
    this.handle ??= open(this.path, 'r');
    return this.handle;
  }

  protected async readInto(entry: TensorEntry, target: Uint8Array): Promise<void> {
    const fh = await this.file();
    let done = 0;
    while (done < entry.byteLength) {
      const len = Math.min(entry.byteLength - done, MAX_READ);
      const { bytesRead } = await fh.read(target, done, len, entry.byteOffset + done);
      if (bytesRead === 0) throw new Error(`${this.path} ends inside tensor ${entry.name} (at byte ${entry.byteOffset + done})`);
      done += bytesRead;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const h = this.handle;
    this.handle = undefined;
    this.dropScratch();
    // A failed open has nothing to close.
    if (h) await h.then((fh) => fh.close(), () => {});
  }
}
