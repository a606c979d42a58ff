import type { CheckpointReader, TensorEntry } from '../tensors.js';

/**
 * A checkpoint held in memory after its first read: scoring many candidate sets (a greedy soup)
 * merges the same tensors again and again, and should not read the files each time. Each tensor is
 * cached in the form it was asked for (float32 or raw bytes), once; callers get copies (the merge
 * reuses and overwrites the arrays it is handed back), so the cache cannot be corrupted.
 */
export class CachedCheckpoint implements CheckpointReader {
  readonly tensors: readonly TensorEntry[];
  private readonly floats = new Map<string, Float32Array>();
  private readonly raws = new Map<string, Uint8Array>();

  constructor(private readonly source: CheckpointReader) {
    this.tensors = source.tensors;
  }

  /** Bytes held (float32 and raw caches together). */
  get cachedBytes(): number {
    let n = 0;
    for (const f of this.floats.values()) n += f.byteLength;
    for (const r of this.raws.values()) n += r.byteLength;
    return n;
  }

  async readFloat32(name: string, into?: Float32Array): Promise<Float32Array> {
    let d = this.floats.get(name);
    if (!d) {
      d = (await this.source.readFloat32(name)).slice();
      this.floats.set(name, d);
    }
    const out = into && into.length >= d.length ? into.subarray(0, d.length) : new Float32Array(d.length);
    out.set(d);
    return out;
  }

  async readRaw(name: string, into?: Uint8Array): Promise<Uint8Array> {
    let d = this.raws.get(name);
    if (!d) {
      d = (await this.source.readRaw(name)).slice();
      this.raws.set(name, d);
    }
    const out = into && into.length >= d.length ? into.subarray(0, d.length) : new Uint8Array(d.length);
    out.set(d);
    return out;
  }

  /** Drops the cache; the source stays open (its owner closes it). */
  async close(): Promise<void> {
    this.floats.clear();
    this.raws.clear();
  }
}
