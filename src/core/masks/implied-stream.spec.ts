import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { openSafetensors, SafetensorsIngest, SafetensorsWriter } from '../checkpoint/safetensors.js';
import type { DType } from '../tensors.js';
import { maskHash } from './compare.js';
import { impliedMask } from './implied.js';
import { ImpliedMaskFollower } from './implied-stream.js';

async function checkpoint(tensors: { name: string; dtype: DType; shape: number[]; data: Float32Array }[]): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const w = new SafetensorsWriter(tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape })), {}, async (c) => {
    chunks.push(c.slice());
  });
  for (const t of tensors) await w.writeTensor(t.name, t.data);
  await w.finish();
  return Buffer.concat(chunks);
}

const dir = mkdtempSync(join(tmpdir(), 'implied-stream-'));
let files = 0;

/** What the service computed before: the implied mask read back from the stored file. */
async function readBack(bytes: Uint8Array): Promise<string> {
  const path = join(dir, `${files++}.safetensors`);
  writeFileSync(path, bytes);
  const reader = await openSafetensors(path);
  try {
    return maskHash(await impliedMask(reader));
  } finally {
    await reader.close();
  }
}

function streamed(bytes: Uint8Array, cuts: number[]): string | null {
  const ingest = new SafetensorsIngest();
  const follower = new ImpliedMaskFollower(() => ingest.header?.entries);
  let at = 0;
  for (const cut of [...cuts.map((c) => Math.floor(c * bytes.length)).sort((a, b) => a - b), bytes.length]) {
    const chunk = bytes.subarray(at, Math.max(at, cut));
    ingest.push(chunk);
    follower.push(chunk);
    at = Math.max(at, cut);
  }
  ingest.finish();
  return follower.hash();
}

// Values that stress the rule: ±0, NaN, infinities, and magnitudes that vanish in float16/float32.
const special = fc.constantFrom(0, -0, Number.NaN, Number.POSITIVE_INFINITY, 1e-8, 1e-40, 3e-45, 1, -2.5);
const value = fc.oneof(special, fc.float({ noNaN: false }));

describe('ImpliedMaskStream', () => {
  it('hashes the same implied mask as reading the file back, however the bytes are chunked', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.constantFrom<DType>('F32', 'F16', 'BF16', 'F64'), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 9 })), { minLength: 1, maxLength: 4 }),
        fc.array(value, { minLength: 45, maxLength: 45 }),
        fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 12 }),
        async (shapes, values, cuts) => {
          const tensors = shapes.map(([dtype, r, c], i) => ({
            name: `layer${i}.weight`,
            dtype,
            shape: [r, c],
            data: Float32Array.from({ length: r * c }, (_, k) => values[(k + i * 7) % values.length]),
          }));
          const bytes = await checkpoint(tensors);
          expect(streamed(bytes, cuts)).toBe(await readBack(bytes));
        },
      ),
      { numRuns: 60 },
    );
  });

  it('answers null when no tensor is prunable', async () => {
    const bytes = await checkpoint([{ name: 'bias', dtype: 'F32', shape: [4], data: new Float32Array([0, 1, 0, 2]) }]);
    expect(streamed(bytes, [0.5])).toBeNull();
  });
});
