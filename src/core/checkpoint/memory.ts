import { type CheckpointReader, DTYPE_BYTES, type DType, type TensorEntry } from '../tensors.js';

/**
 * A checkpoint held in memory as float32 tensors: for tests, benchmarks and small models built in a
 * worker. Entries are laid out back to back as if they were one F32 file.
 */
export class MemoryCheckpoint implements CheckpointReader {
  readonly tensors: TensorEntry[];
  private readonly data = new Map<string, Float32Array>();

  constructor(tensors: { name: string; shape: number[]; data: Float32Array; dtype?: DType }[]) {
    let offset = 0;
    this.tensors = tensors.map((t) => {
      const size = t.shape.reduce((a, b) => a * b, 1);
      if (size !== t.data.length) throw new Error(`${t.name}: shape [${t.shape}] holds ${size} values, got ${t.data.length}`);
      const dtype = t.dtype ?? 'F32';
      const entry = { name: t.name, dtype, shape: [...t.shape], byteOffset: offset, byteLength: size * DTYPE_BYTES[dtype] };
      offset += entry.byteLength;
      this.data.set(t.name, t.data);
      return entry;
    });
  }

  private get(name: string): Float32Array {
    const d = this.data.get(name);
    if (!d) throw new Error(`no tensor named ${name}`);
    return d;
  }

  async readFloat32(name: string, into?: Float32Array): Promise<Float32Array> {
    const d = this.get(name);
    const out = into && into.length >= d.length ? into.subarray(0, d.length) : new Float32Array(d.length);
    out.set(d);
    return out;
  }

  async readRaw(name: string): Promise<Uint8Array> {
    const d = this.get(name);
    return new Uint8Array(d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength));
  }

  async close(): Promise<void> {}
}
