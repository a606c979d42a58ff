import { SafetensorsWriter } from '../../src/core/checkpoint/safetensors.js';
import type { DType } from '../../src/core/tensors.js';

/** A safetensors file in memory, written by the core writer (the parser is tested against an independent one). */
export async function safetensorsBytes(
  tensors: { name: string; dtype?: DType; shape: number[]; data: Float32Array }[],
  metadata: Record<string, string> = {},
): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  const w = new SafetensorsWriter(
    tensors.map(({ name, dtype, shape }) => ({ name, dtype: dtype ?? 'F32', shape })),
    metadata,
    async (c) => {
      chunks.push(c.slice());
    },
  );
  for (const t of tensors) await w.writeTensor(t.name, t.data);
  await w.finish();
  return Buffer.concat(chunks);
}

/** Deterministic pseudo-random weights (no ties except where asked). */
export function seededWeights(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32 - 0.5) * 2;
  }
  return out;
}

// biome-ignore lint/suspicious/noExplicitAny: superagent types the response loosely.
export function binaryParser(res: any, cb: (err: Error | null, body: Buffer) => void) {
  const chunks: Buffer[] = [];
  res.on('data', (c: Buffer) => chunks.push(c));
  res.on('end', () => cb(null, Buffer.concat(chunks)));
}
