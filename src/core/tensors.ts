/**
 * The shared vocabulary of the pure core. Every checkpoint format, pruning method, mask codec and
 * soup method speaks in these types; none of them imports Nest, TypeORM or HTTP.
 */

/** safetensors dtype names; tfjs `float32`/`int32`/`bool` map to F32/I32/BOOL. */
export type DType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U64' | 'U32' | 'U16' | 'U8' | 'BOOL';

export const FLOAT_DTYPES: ReadonlySet<DType> = new Set(['F64', 'F32', 'F16', 'BF16']);

export const DTYPE_BYTES: Readonly<Record<DType, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
};

/** One named tensor of a checkpoint file: where its bytes are. Offsets are absolute in the file. */
export interface TensorEntry {
  name: string;
  dtype: DType;
  shape: number[];
  /** Absolute byte offset of the first element in the weights file. */
  byteOffset: number;
  byteLength: number;
}

/** Per-tensor facts computed while bytes stream in (or read back): what the Model resource reports. */
export interface TensorStats {
  name: string;
  dtype: DType;
  shape: number[];
  size: number;
  /** Exact zeros (+0 and -0) among the elements. */
  zeros: number;
  /** NaN or ±Infinity elements (floats only). */
  nonFinite: number;
}

/**
 * A checkpoint opened for reading, one tensor at a time. Float tensors come back as float32
 * (F16/BF16/F64 converted); integer and bool tensors are read raw. Never loads the whole file.
 */
export interface CheckpointReader {
  readonly tensors: readonly TensorEntry[];
  /** Reads one tensor as float32. `into`, when given and large enough, is reused (hot paths). */
  readFloat32(name: string, into?: Float32Array): Promise<Float32Array>;
  /** The tensor's bytes exactly as stored. */
  readRaw(name: string, into?: Uint8Array): Promise<Uint8Array>;
  close(): Promise<void>;
}
