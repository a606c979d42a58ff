import { CoreInputError } from '../errors.js';
import { checkSeed, deriveSeed, Sfc32 } from '../random.js';
import { type ImageDataset, type SplitName, sampleSize } from './dataset.js';
import { SEED_TAG } from './splits.js';

/**
 * Image corruptions for out-of-distribution accuracy, in the spirit of MNIST-C (Mu & Gilmer 2019) and
 * ImageNet-C (Hendrycks & Dietterich 2019; the noise and contrast parameters are theirs). Pixels are
 * uint8 in and uint8 out (rounded, clipped to 0–255), as MNIST-C stores them; the arithmetic is done on
 * [0, 1] floats. Geometric corruptions fill uncovered pixels with 0 (MNIST's background).
 *
 * Determinism: image i is corrupted with `Sfc32(deriveSeed(seed, SEED_TAG.corruption, i))`, where i is its
 * index in the dataset (`indices`), so the result does not depend on batch boundaries. The severity is
 * not part of the seed: one image gets the same noise pattern and the same rotation sign at every
 * severity, only scaled, which makes the severity levels comparable.
 *
 * Pixel-sized parameters (blur sigma, translation) are given for 28×28 images and scale with min(h, w)/28.
 */

export type CorruptionName =
  | 'gaussian-noise'
  | 'shot-noise'
  | 'impulse-noise'
  | 'blur'
  | 'contrast'
  | 'brightness'
  | 'rotation'
  | 'translation'
  | 'zoom';

export interface CorruptionInfo {
  name: CorruptionName;
  description: string;
  /** What the severity parameters are. */
  parameter: string;
  /** The parameter at severities 1…5; each is stronger than the one before. */
  severities: readonly [number, number, number, number, number];
}

export const CORRUPTIONS: readonly CorruptionInfo[] = [
  { name: 'gaussian-noise', description: 'additive Gaussian noise', parameter: 'standard deviation (pixels in [0, 1])', severities: [0.08, 0.12, 0.18, 0.26, 0.38] },
  { name: 'shot-noise', description: 'Poisson (photon) noise: Poisson(x·λ)/λ', parameter: 'photon count λ (lower is noisier)', severities: [60, 25, 12, 5, 3] },
  { name: 'impulse-noise', description: 'salt-and-pepper noise: pixels set to 0 or 1', parameter: 'fraction of pixels replaced', severities: [0.03, 0.06, 0.09, 0.17, 0.27] },
  { name: 'blur', description: 'Gaussian blur (separable, edges clamped)', parameter: 'sigma in pixels at 28×28', severities: [0.5, 0.75, 1, 1.25, 1.5] },
  { name: 'contrast', description: 'contrast reduction toward the image mean: (x − mean)·c + mean', parameter: 'factor c (lower is stronger)', severities: [0.4, 0.3, 0.2, 0.1, 0.05] },
  { name: 'brightness', description: 'brightness increase: x + b, clipped', parameter: 'offset b (pixels in [0, 1])', severities: [0.1, 0.2, 0.3, 0.4, 0.5] },
  { name: 'rotation', description: 'rotation about the centre, bilinear, direction random per image', parameter: 'angle in degrees', severities: [10, 20, 30, 45, 60] },
  { name: 'translation', description: 'shift in one of the 8 compass directions, random per image', parameter: 'shift in pixels at 28×28 (per axis)', severities: [1, 2, 3, 4, 5] },
  { name: 'zoom', description: 'zoom in about the centre (the border is cropped), bilinear', parameter: 'magnification', severities: [1.1, 1.2, 1.3, 1.5, 1.7] },
];

const BY_NAME = new Map(CORRUPTIONS.map((c) => [c.name as string, c]));

export function corruptionInfo(name: string): CorruptionInfo {
  const info = BY_NAME.get(name);
  if (!info) {
    throw new CoreInputError('unknown-corruption', `unknown corruption '${name}' (known: ${CORRUPTIONS.map((c) => c.name).join(', ')})`, { name }, 422);
  }
  return info;
}

function checkSeverity(severity: number): void {
  if (!Number.isInteger(severity) || severity < 1 || severity > 5) {
    throw new CoreInputError('invalid-severity', `corruption severity must be an integer from 1 to 5, got ${severity}`, { severity });
  }
}

// ---- geometry on [0, 1] float images (h × w × c, row-major) ----------------------------------------

/** Snaps coordinates within 1e-9 of an integer, so exact rotations (90°) do not blur from rounding error. */
function snap(v: number): number {
  const r = Math.round(v);
  return Math.abs(v - r) < 1e-9 ? r : v;
}

/**
 * Inverse-maps every output pixel through the affine map sy = m[0]·r + m[1]·c + m[2],
 * sx = m[3]·r + m[4]·c + m[5] (source coordinates) and samples the source bilinearly; samples outside
 * the image are 0. Coefficients rather than a callback: this runs for every pixel of a test set.
 */
function warp(src: Float32Array, h: number, w: number, ch: number, out: Float32Array, m: readonly number[]): void {
  for (let r = 0; r < h; r++) {
    for (let c = 0; c < w; c++) {
      const sy = snap(m[0] * r + m[1] * c + m[2]);
      const sx = snap(m[3] * r + m[4] * c + m[5]);
      const y0 = Math.floor(sy);
      const x0 = Math.floor(sx);
      const fy = sy - y0;
      const fx = sx - x0;
      for (let k = 0; k < ch; k++) {
        let v = 0;
        for (let dy = 0; dy <= 1; dy++) {
          const wy = dy ? fy : 1 - fy;
          const yy = y0 + dy;
          if (wy === 0 || yy < 0 || yy >= h) continue;
          for (let dx = 0; dx <= 1; dx++) {
            const wx = dx ? fx : 1 - fx;
            const xx = x0 + dx;
            if (wx === 0 || xx < 0 || xx >= w) continue;
            v += wy * wx * src[(yy * w + xx) * ch + k];
          }
        }
        out[(r * w + c) * ch + k] = v;
      }
    }
  }
}

/** Rotates counter-clockwise (as displayed, rows growing downward) by `degrees` about the image centre. */
export function rotateImage(src: Float32Array, h: number, w: number, ch: number, degrees: number, out: Float32Array): void {
  const t = (degrees * Math.PI) / 180;
  const cos = Math.cos(t);
  const sin = Math.sin(t);
  const cy = (h - 1) / 2;
  const cx = (w - 1) / 2;
  // sy = cy + (c − cx)·sin + (r − cy)·cos,  sx = cx + (c − cx)·cos − (r − cy)·sin
  warp(src, h, w, ch, out, [cos, sin, cy - cx * sin - cy * cos, -sin, cos, cx - cx * cos + cy * sin]);
}

/** Moves the content `dx` pixels right and `dy` pixels down. */
export function translateImage(src: Float32Array, h: number, w: number, ch: number, dx: number, dy: number, out: Float32Array): void {
  warp(src, h, w, ch, out, [1, 0, -dy, 0, 1, -dx]);
}

/** Magnifies by `factor` about the centre. */
export function zoomImage(src: Float32Array, h: number, w: number, ch: number, factor: number, out: Float32Array): void {
  const cy = (h - 1) / 2;
  const cx = (w - 1) / 2;
  const f = 1 / factor;
  warp(src, h, w, ch, out, [f, 0, cy - cy * f, 0, f, cx - cx * f]);
}

function gaussianKernel(sigma: number): Float32Array {
  const radius = Math.max(1, Math.ceil(3 * sigma));
  const k = new Float32Array(2 * radius + 1);
  let sum = 0;
  for (let i = -radius; i <= radius; i++) sum += k[i + radius] = Math.exp(-(i * i) / (2 * sigma * sigma));
  for (let i = 0; i < k.length; i++) k[i] /= sum;
  return k;
}

/** Separable Gaussian blur, edges clamped; `tmp` is scratch of the image's size. */
export function blurImage(src: Float32Array, h: number, w: number, ch: number, sigma: number, out: Float32Array, tmp: Float32Array): void {
  const k = gaussianKernel(sigma);
  const taps = k.length;
  const rad = (taps - 1) / 2;
  // Clamped source offsets per output column / row and tap, computed once instead of per pixel.
  const colOff = new Int32Array(w * taps);
  for (let c = 0; c < w; c++) for (let i = 0; i < taps; i++) colOff[c * taps + i] = Math.min(w - 1, Math.max(0, c + i - rad)) * ch;
  const rowOff = new Int32Array(h * taps);
  for (let r = 0; r < h; r++) for (let i = 0; i < taps; i++) rowOff[r * taps + i] = Math.min(h - 1, Math.max(0, r + i - rad)) * w * ch;
  for (let r = 0; r < h; r++) {
    const row = r * w * ch;
    for (let c = 0; c < w; c++) {
      for (let q = 0; q < ch; q++) {
        let v = 0;
        for (let i = 0; i < taps; i++) v += k[i] * src[row + colOff[c * taps + i] + q];
        tmp[row + c * ch + q] = v;
      }
    }
  }
  for (let r = 0; r < h; r++) {
    for (let c = 0; c < w; c++) {
      for (let q = 0; q < ch; q++) {
        let v = 0;
        for (let i = 0; i < taps; i++) v += k[i] * tmp[rowOff[r * taps + i] + c * ch + q];
        out[(r * w + c) * ch + q] = v;
      }
    }
  }
}

// ---- the corruptions ---------------------------------------------------------------------------------

export interface CorruptOptions {
  /** Dataset index of each image (default 0…N−1): fixes each image's random stream. */
  indices?: ArrayLike<number>;
  /** Output buffer to reuse (length ≥ x.length). */
  out?: Uint8Array;
}

/**
 * Corrupts N images (`shape` = [N, H, W, C], or [N, H, W] for one channel) at `severity` 1–5. Returns
 * uint8 pixels of the same shape.
 */
export function corruptImages(
  x: Uint8Array,
  shape: readonly number[],
  name: string,
  severity: number,
  seed: number,
  opts: CorruptOptions = {},
): Uint8Array {
  const info = corruptionInfo(name);
  checkSeverity(severity);
  checkSeed(seed);
  if (!(x instanceof Uint8Array)) {
    throw new CoreInputError('unsupported-dataset', 'corruptions need uint8 pixel images; this dataset holds float32 values', {}, 422);
  }
  if ((shape.length !== 3 && shape.length !== 4) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new CoreInputError('invalid-shape', `image shape must be [N, H, W] or [N, H, W, C], got [${shape.join(', ')}]`, { shape });
  }
  const [n, h, w, ch = 1] = shape;
  const size = h * w * ch;
  if (n * size !== x.length) throw new CoreInputError('invalid-shape', `shape [${shape.join(', ')}] needs ${n * size} pixels, got ${x.length}`, { shape });
  if (opts.indices && opts.indices.length !== n) throw new CoreInputError('invalid-shape', `indices has ${opts.indices.length} entries for ${n} images`);
  const out = opts.out && opts.out.length >= x.length ? opts.out.subarray(0, x.length) : new Uint8Array(x.length);
  const p = info.severities[severity - 1];
  const scale = Math.min(h, w) / 28;
  const a = new Float32Array(size);
  const b = new Float32Array(size);
  const tmp = name === 'blur' ? new Float32Array(size) : b;

  for (let img = 0; img < n; img++) {
    const index = opts.indices ? opts.indices[img] : img;
    const rng = new Sfc32(deriveSeed(seed, SEED_TAG.corruption, index));
    const base = img * size;
    for (let i = 0; i < size; i++) a[i] = x[base + i] / 255;
    let res = a;
    switch (info.name) {
      case 'gaussian-noise':
        for (let i = 0; i < size; i++) a[i] += p * rng.normal();
        break;
      case 'shot-noise':
        for (let i = 0; i < size; i++) a[i] = rng.poisson(a[i] * p) / p;
        break;
      case 'impulse-noise':
        for (let i = 0; i < size; i++) {
          // Two draws per pixel at every severity keep the streams aligned across severities.
          const u = rng.float();
          const salt = rng.float() < 0.5;
          if (u < p) a[i] = salt ? 1 : 0;
        }
        break;
      case 'blur':
        blurImage(a, h, w, ch, p * scale, b, tmp);
        res = b;
        break;
      case 'contrast': {
        let mean = 0;
        for (let i = 0; i < size; i++) mean += a[i];
        mean /= size;
        for (let i = 0; i < size; i++) a[i] = (a[i] - mean) * p + mean;
        break;
      }
      case 'brightness':
        for (let i = 0; i < size; i++) a[i] += p;
        break;
      case 'rotation':
        rotateImage(a, h, w, ch, rng.float() < 0.5 ? -p : p, b);
        res = b;
        break;
      case 'translation': {
        const dir = rng.int(8);
        const steps: [number, number][] = [[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1]];
        const s = Math.max(1, Math.round(p * scale));
        translateImage(a, h, w, ch, steps[dir][0] * s, steps[dir][1] * s, b);
        res = b;
        break;
      }
      case 'zoom':
        zoomImage(a, h, w, ch, p, b);
        res = b;
        break;
    }
    for (let i = 0; i < size; i++) {
      const v = Math.round(res[i] * 255);
      out[base + i] = Math.min(255, Math.max(0, v));
    }
  }
  return out;
}

/**
 * A corrupted copy of one split as its own dataset: `x` holds only that split's images, corrupted with
 * their original dataset indices as seeds, and `splits.test` lists them all (train and val are empty).
 */
export function corruptedSplit(ds: ImageDataset, split: SplitName, name: string, severity: number, seed: number): ImageDataset {
  const idx = ds.splits[split];
  const size = sampleSize(ds);
  if (!(ds.x instanceof Uint8Array)) {
    throw new CoreInputError('unsupported-dataset', `corruptions need uint8 pixel images; dataset ${ds.id} holds float32 values`, { dataset: ds.id }, 422);
  }
  const src = new Uint8Array(idx.length * size);
  const y = ds.y instanceof Uint8Array ? new Uint8Array(idx.length) : new Int32Array(idx.length);
  for (let i = 0; i < idx.length; i++) {
    src.set(ds.x.subarray(idx[i] * size, (idx[i] + 1) * size), i * size);
    y[i] = ds.y[idx[i]];
  }
  const x = corruptImages(src, [idx.length, ...ds.inputShape], name, severity, seed, { indices: idx, out: src });
  const test = new Uint32Array(idx.length);
  for (let i = 0; i < test.length; i++) test[i] = i;
  return {
    id: `${ds.id}/${split}+${name}@${severity}#${seed}`,
    inputShape: ds.inputShape,
    classes: ds.classes,
    x,
    y,
    splits: { train: new Uint32Array(0), val: new Uint32Array(0), test },
  };
}
