import { describe, expect, it } from 'vitest';
import { MemoryCheckpoint } from '../checkpoint/memory.js';
import type { CheckpointReader } from '../tensors.js';
import { CachedCheckpoint } from './cached-reader.js';
import { mergeCheckpoints } from './merge.js';

function counting(reader: CheckpointReader): { reader: CheckpointReader; reads: () => number } {
  let n = 0;
  return {
    reads: () => n,
    reader: {
      tensors: reader.tensors,
      readFloat32: (name, into) => {
        n++;
        return reader.readFloat32(name, into);
      },
      readRaw: (name, into) => {
        n++;
        return reader.readRaw(name, into);
      },
      close: () => reader.close(),
    },
  };
}

async function mergeToBytes(readers: CheckpointReader[], weights: number[]): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  await mergeCheckpoints(readers, weights, async (c) => void parts.push(c.slice()), { format: 'tfjs-weights' });
  return Buffer.concat(parts);
}

describe('CachedCheckpoint', () => {
  const make = (seed: number) =>
    new MemoryCheckpoint([
      { name: 'a/kernel', shape: [3, 5], data: Float32Array.from({ length: 15 }, (_, i) => Math.sin(seed * 10 + i)) },
      { name: 'a/bias', shape: [5], data: Float32Array.from({ length: 5 }, (_, i) => seed + i / 7) },
    ]);

  it('merges exactly as its source, reading each tensor from the source once however often it is merged', async () => {
    const sources = [counting(make(1)), counting(make(2)), counting(make(3))];
    const cached = sources.map((s) => new CachedCheckpoint(s.reader));
    const direct = [make(1), make(2), make(3)];
    for (const weights of [[1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0], [0, 0.5, 0.5], [1, 0, 0]]) {
      expect(Buffer.from(await mergeToBytes(cached, weights)).equals(Buffer.from(await mergeToBytes(direct, weights)))).toBe(true);
    }
    for (const s of sources) expect(s.reads()).toBe(2); // two tensors, each read once
  });

  it('hands out copies: writing into a returned array does not change what it serves next', async () => {
    const c = new CachedCheckpoint(make(4));
    const first = await c.readFloat32('a/bias');
    const want = Array.from(first);
    first.fill(99);
    expect(Array.from(await c.readFloat32('a/bias', first))).toEqual(want);
    expect(Array.from(await c.readFloat32('a/bias'))).toEqual(want);
    expect(c.cachedBytes).toBe(20);
  });
});
