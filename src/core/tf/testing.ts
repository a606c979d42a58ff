import type { ImageDataset } from '../data/dataset.js';
import { Mulberry32 } from '../random.js';

/**
 * A small synthetic image dataset for tests: class k is a bright 2×2 blob at a class-specific
 * place plus uniform noise, so small models learn it in tens of steps. Not for benchmarks.
 */
export function syntheticDataset(options: { n?: number; side?: number; classes?: number; seed?: number } = {}): ImageDataset {
  const n = options.n ?? 512;
  const side = options.side ?? 8;
  const classes = options.classes ?? 4;
  const rng = new Mulberry32(options.seed ?? 42);
  const rand = () => rng.uniform();
  const size = side * side;
  const x = new Float32Array(n * size);
  const y = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const k = i % classes;
    y[i] = k;
    for (let p = 0; p < size; p++) x[i * size + p] = rand() * 0.6;
    const row = 1 + ((k * 3) % (side - 2));
    const col = 1 + ((k * 5) % (side - 2));
    for (const [dr, dc] of [[0, 0], [0, 1], [1, 0], [1, 1]]) x[i * size + (row + dr) * side + col + dc] += 0.8;
  }
  const nTest = Math.floor(n / 4);
  const nVal = Math.floor(n / 8);
  const range = (a: number, b: number) => Uint32Array.from({ length: b - a }, (_, i) => a + i);
  return {
    id: 'synthetic',
    inputShape: [side, side, 1],
    classes,
    x,
    y,
    splits: { train: range(0, n - nTest - nVal), val: range(n - nTest - nVal, n - nTest), test: range(n - nTest, n) },
  };
}
