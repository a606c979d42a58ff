import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { memoryByteSource } from './byte-source.js';
import { encodeSafetensorsHeader, openSafetensors } from './safetensors.js';
import { openTfjsWeights } from './tfjs.js';

const dir = mkdtempSync(join(tmpdir(), 'byte-source-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Opens the same bytes as a file and as a ranged source: both must agree, on success and on refusal. */
async function both(bytes: Uint8Array) {
  const path = join(dir, 'x.safetensors');
  writeFileSync(path, bytes);
  const outcome = async (open: () => Promise<Awaited<ReturnType<typeof openSafetensors>>>) => {
    try {
      const r = await open();
      const tensors = await Promise.all(r.tensors.map(async (t) => [t.name, [...(await r.readRaw(t.name))]] as const));
      await r.close();
      return { ok: true as const, entries: r.tensors, metadata: (r as unknown as { metadata: Record<string, string> }).metadata, tensors };
    } catch (err) {
      return { ok: false as const, message: (err as Error).message };
    }
  };
  return [await outcome(() => openSafetensors(path)), await outcome(() => openSafetensors(memoryByteSource(bytes)))];
}

describe('checkpoint readers over a ranged source', () => {
  it('read what the file reader reads, with headers below and above the first 64 KiB range', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 1, maxLength: 6 }), fc.nat({ max: 70_000 }), async (sizes, metaLength) => {
        const specs = sizes.map((n, i) => ({ name: `t${i}`, dtype: 'F32' as const, shape: [n] }));
        const header = encodeSafetensorsHeader(specs, { note: 'x'.repeat(metaLength) });
        const data = new Uint8Array(sizes.reduce((a, n) => a + n * 4, 0)).map((_, i) => (i * 31) & 255);
        const bytes = new Uint8Array([...header, ...data]);
        const [file, source] = await both(bytes);
        expect(source).toEqual(file);
        expect(file.ok).toBe(true);
      }),
      { numRuns: 40 },
    );
  });

  it('refuse corrupt bytes exactly as the file reader does (flipped, cut, lying lengths)', async () => {
    const header = encodeSafetensorsHeader([{ name: 'w', dtype: 'F32', shape: [4, 4] }, { name: 'b', dtype: 'F16', shape: [3] }], { a: 'b' });
    const good = new Uint8Array([...header, ...new Uint8Array(64 + 6).fill(1)]);
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.nat({ max: good.length - 1 }), fc.nat({ max: 255 })), { maxLength: 4 }), fc.nat({ max: good.length }), async (flips, cut) => {
        const bytes = good.slice(0, Math.max(0, good.length - cut));
        for (const [i, v] of flips) if (i < bytes.length) bytes[i] = v;
        const [file, source] = await both(bytes);
        expect(source.ok).toBe(file.ok);
        if (file.ok) expect(source).toEqual(file);
        else expect((source as { message: string }).message).toBe((file as { message: string }).message);
      }),
      { numRuns: 200 },
    );
  });

  it('check a TensorFlow.js weights object against its manifest before reading, and read it by ranges', async () => {
    const bytes = new Uint8Array(Float32Array.from([1, 2, 3, 4, 5]).buffer);
    const entries = [{ name: 'k', dtype: 'F32' as const, shape: [2, 2], byteOffset: 0, byteLength: 16 }, { name: 'b', dtype: 'F32' as const, shape: [1], byteOffset: 16, byteLength: 4 }];
    const r = await openTfjsWeights(memoryByteSource(bytes), entries);
    expect([...(await r.readFloat32('b'))]).toEqual([5]);
    await r.close();
    await expect(openTfjsWeights(memoryByteSource(bytes.subarray(0, 12)), entries)).rejects.toThrow(/manifest names 20 bytes, the weights file has 12/);
  });
});
