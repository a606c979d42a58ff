/**
 * An image-classification dataset in compact typed arrays. Built-ins (`mnist`, `fashion-mnist`) and
 * uploads both become this. Splits are index lists into `x`/`y`; `val` is held out of `train` and is
 * never trained on.
 */
export interface ImageDataset {
  id: string;
  /** [height, width, channels] */
  inputShape: [number, number, number];
  classes: number;
  /** N × h × w × c, row-major. Uint8 pixels are scaled by 1/255 when batched; float32 used as is. */
  x: Uint8Array | Float32Array;
  /** N labels in [0, classes). */
  y: Uint8Array | Int32Array;
  splits: { train: Uint32Array; val: Uint32Array; test: Uint32Array };
}

export type SplitName = keyof ImageDataset['splits'];

export function sampleSize(ds: Pick<ImageDataset, 'inputShape'>): number {
  return ds.inputShape[0] * ds.inputShape[1] * ds.inputShape[2];
}

/**
 * Copies `count` samples, named by `indices[start…start+count)`, into reused buffers: the batch is
 * built from typed-array slices, never by slicing a big tensor (about 600 ms a slice on wasm).
 */
export function fillBatch(
  ds: ImageDataset,
  indices: ArrayLike<number>,
  start: number,
  count: number,
  xOut: Float32Array,
  yOut: Int32Array,
): void {
  const size = sampleSize(ds);
  const scale = ds.x instanceof Uint8Array ? 1 / 255 : 1;
  for (let b = 0; b < count; b++) {
    const i = indices[start + b];
    const src = ds.x.subarray(i * size, (i + 1) * size);
    const dst = xOut.subarray(b * size, (b + 1) * size);
    if (scale === 1) dst.set(src);
    else for (let k = 0; k < size; k++) dst[k] = src[k] * scale;
    yOut[b] = ds.y[i];
  }
}
