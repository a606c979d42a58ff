import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CoreInputError } from '../errors.js';
import { builtinCachePath, fashionSplit, loadBuiltin, parseFashionClass } from './builtin.js';

const cacheDir = mkdtempSync(join(tmpdir(), 'sparsoup-builtin-'));
afterAll(() => rmSync(cacheDir, { recursive: true, force: true }));

describe('built-in MNIST (the one full load)', () => {
  it('parses the official split once, caches it, and reads the same dataset back', async () => {
    const t0 = performance.now();
    const first = await loadBuiltin('mnist', { cacheDir });
    const parseMs = performance.now() - t0;
    const path = builtinCachePath('mnist', cacheDir);
    const mtime = statSync(path).mtimeMs;
    expect(first.id).toBe('mnist');
    expect(first.inputShape).toEqual([28, 28, 1]);
    expect(first.x.length).toBe(70_000 * 784);
    const { train, val, test } = first.splits;
    expect([train.length, val.length, test.length]).toEqual([54_000, 6_000, 10_000]);
    // Official split: test is exactly the t10k files (appended after the 60k training images).
    expect(test[0]).toBe(60_000);
    expect(test[9_999]).toBe(69_999);
    expect(Array.from(first.y.subarray(60_000, 60_005))).toEqual([7, 2, 1, 0, 4]);
    // val is a stratified 10 % of the 60k and never in train.
    const inTrain = new Set(train);
    expect(val.every((i) => i < 60_000 && !inTrain.has(i))).toBe(true);
    const perClass = new Array(10).fill(0);
    const all = new Array(10).fill(0);
    for (const i of val) perClass[first.y[i]]++;
    for (let i = 0; i < 60_000; i++) all[first.y[i]]++;
    for (let c = 0; c < 10; c++) expect(Math.abs(perClass[c] - all[c] / 10)).toBeLessThanOrEqual(1);

    const t1 = performance.now();
    const second = await loadBuiltin('mnist', { cacheDir });
    const cachedMs = performance.now() - t1;
    expect(statSync(path).mtimeMs).toBe(mtime);
    expect(second.splits).toEqual(first.splits);
    expect(Buffer.from(second.x).equals(Buffer.from(first.x))).toBe(true);
    expect(Buffer.from(second.y).equals(Buffer.from(first.y))).toBe(true);
    console.log(`mnist: parse + cache ${parseMs.toFixed(0)} ms, cached load ${cachedMs.toFixed(0)} ms`);

    // Another val fraction or seed changes val (and the id), never test.
    const other = await loadBuiltin('mnist', { cacheDir, valFraction: 0.2, valSeed: 3 });
    expect(other.id).toBe('mnist:val=0.2,seed=3');
    expect(other.splits.val.length).toBe(12_000);
    expect(other.splits.test).toEqual(first.splits.test);

    // A damaged cache (one flipped pixel) fails its checksum and is rebuilt, not trusted.
    const bytes = readFileSync(path);
    bytes[bytes.length - 100_000] ^= 0xff;
    writeFileSync(path, bytes);
    const rebuilt = await loadBuiltin('mnist', { cacheDir });
    expect(Buffer.from(rebuilt.x).equals(Buffer.from(first.x))).toBe(true);
    expect(readFileSync(path).equals(bytes)).toBe(false);
  });

  it('refuses unknown names and bad val options', async () => {
    await expect(loadBuiltin('cifar' as never, { cacheDir })).rejects.toThrow(/unknown built-in dataset 'cifar'/);
    await expect(loadBuiltin('mnist', { cacheDir, valFraction: 1 })).rejects.toBeInstanceOf(CoreInputError);
    await expect(loadBuiltin('mnist', { cacheDir, valSeed: -0.5 })).rejects.toThrow(/valSeed/);
  });
});

describe('Fashion-MNIST split rule (on small synthetic classes)', () => {
  it('takes testPerClass per class by a seeded shuffle, the rest (extras included) to train', () => {
    const counts = [12, 10, 11];
    const s = fashionSplit(counts, 5, 4);
    expect(s.test.length).toBe(12);
    expect(s.train.length).toBe(21);
    const cls = (i: number) => (i < 12 ? 0 : i < 22 ? 1 : 2);
    const perClass = [0, 0, 0];
    for (const i of s.test) perClass[cls(i)]++;
    expect(perClass).toEqual([4, 4, 4]);
    expect(new Set([...s.train, ...s.test]).size).toBe(33);
    expect(fashionSplit(counts, 5, 4)).toEqual(s);
    expect(fashionSplit(counts, 6, 4).test).not.toEqual(s.test);
    expect(() => fashionSplit([4, 10], 5, 4)).toThrow(/class 0 has only 4 images/);
  });

  it('parses class files, skipping empty rows and refusing malformed ones', () => {
    const row = (v: number) => new Array(784).fill(v);
    const p = parseFashionClass(JSON.stringify({ data: [row(1), [], row(255)] }), 'c.json');
    expect(p.count).toBe(2);
    expect(p.skipped).toBe(1);
    expect(p.pixels[784]).toBe(255);
    expect(() => parseFashionClass(JSON.stringify({ data: [row(1).slice(1)] }), 'c.json')).toThrow(/row 0 is not 784 pixels/);
    expect(() => parseFashionClass(JSON.stringify({ data: [row(256)] }), 'c.json')).toThrow(/pixel 0 is not in 0–255/);
    expect(() => parseFashionClass('[]', 'c.json')).toThrow(/expected \{"data"/);
  });
});
