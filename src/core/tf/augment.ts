import { Mulberry32, streamSeed } from '../random.js';

/** Zero padding of the random crop, in pixels (the SMS code's `RandomCrop(size, padding=4)`). */
export const CROP_PADDING = 4;

/**
 * Augments `count` NHWC samples of `x` in place: each sample is zero-padded by `padding` pixels on
 * every side, a window of the original size is cut at a random offset, and the result is mirrored
 * left–right with probability ½. The randomness comes from `seed` alone (one stream per batch), so
 * a seed gives the same augmented batch everywhere. `scratch` holds one sample (h·w·c floats).
 */
export function augmentBatch(x: Float32Array, count: number, shape: readonly [number, number, number], seed: number, padding = CROP_PADDING, scratch = new Float32Array(shape[0] * shape[1] * shape[2])): void {
  const [h, w, c] = shape;
  const size = h * w * c;
  const rng = new Mulberry32(seed);
  for (let b = 0; b < count; b++) {
    // Offsets in [−padding, padding]: the window's top-left corner in the unpadded image.
    const dy = Math.floor(rng.uniform() * (2 * padding + 1)) - padding;
    const dx = Math.floor(rng.uniform() * (2 * padding + 1)) - padding;
    const flip = rng.uniform() < 0.5;
    const sample = x.subarray(b * size, (b + 1) * size);
    scratch.set(sample);
    for (let i = 0; i < h; i++) {
      const si = i + dy;
      for (let j = 0; j < w; j++) {
        const sj = (flip ? w - 1 - j : j) + dx;
        const o = (i * w + j) * c;
        if (si < 0 || si >= h || sj < 0 || sj >= w) for (let k = 0; k < c; k++) sample[o + k] = 0;
        else {
          const s = (si * w + sj) * c;
          for (let k = 0; k < c; k++) sample[o + k] = scratch[s + k];
        }
      }
    }
  }
}

/** The seed of step `step`'s augmentation stream: disjoint from the batch-order streams (one per epoch). */
export function augmentSeed(seed: number, step: number): number {
  return streamSeed(streamSeed(seed, 0x61756721), step);
}
