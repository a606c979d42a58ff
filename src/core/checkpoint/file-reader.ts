import { open, type FileHandle } from 'node:fs/promises';
import { DTYPE_BYTES, type CheckpointReader, type TensorEntry } from '../tensors.js';
import { decodeFloat32 } from './dtype.js';

export type CheckpointFormat = 'safetensors' | 'tfjs-weights';

/** FileHandle.read takes at most 2 GiB - 1 bytes per call; stay well below. */
const MAX_READ = 1 << 30;

/**
 * Reads tensors of a file whose layout (absolute offsets) is already known: safetensors files and
 * TensorFlow.js weight files alike. One positioned read per tensor; never loads the whole file.
 */
export class FileCheckpointReader implements CheckpointReader {
  readonly tensors: readonly TensorEntry[];
  private readonly byName = new Map<string, TensorEntry>();
  private handle?: Promise<FileHandle>;
  private scratch?: Uint8Array;
  private scratchBusy = false;
  private closed = false;

  constructor(
    readonly path: string,
    entries: readonly TensorEntry[],
    readonly format?: CheckpointFormat,
    handle?: FileHandle,
  ) {
    this.tensors = entries;
    for (const e of entries) this.byName.set(e.name, e);
    if (handle) this.handle = Promise.resolve(handle);
  }

  private entry(name: string): TensorEntry {
    const e = this.byName.get(name);
    if (!e) throw new Error(`no tensor named ${name} in ${this.path}`);
    return e;
  }

  private file(): Promise<FileHandle> {
    if (this.closed) throw new Error(`checkpoint reader for ${this.path} is closed`);
    this.handle ??= open(this.path, 'r');
    return this.handle;
  }

  private async readInto(entry: TensorEntry, target: Uint8Array): Promise<void> {
    const fh = await this.file();
    let done = 0;
    while (done < entry.byteLength) {
      const len = Math.min(entry.byteLength - done, MAX_READ);
      const { bytesRead } = await fh.read(target, done, len, entry.byteOffset + done);
      if (bytesRead === 0) throw new Error(`${this.path} ends inside tensor ${entry.name} (at byte ${entry.byteOffset + done})`);
      done += bytesRead;
    }
  }

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

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const h = this.handle;
    this.handle = undefined;
    this.scratch = undefined;
    // A failed open has nothing to close.
    if (h) await h.then((fh) => fh.close(), () => {});
  }
}
