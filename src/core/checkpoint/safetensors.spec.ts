import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  concatBytes,
  expectCoreError,
  fixture,
  fixtureJson,
  memorySink,
  outcome,
  rawSafetensors,
  split,
  u64le,
} from '../../../test/fixtures/checkpoint/helpers.js';
import { CoreInputError } from '../errors.js';
import { DTYPE_BYTES, type DType, FLOAT_DTYPES, type TensorStats } from '../tensors.js';
import { decodeFloat32, encodeFromFloat32 } from './dtype.js';
import { MemoryCheckpoint } from './memory.js';
import {
  encodeSafetensorsHeader,
  openSafetensors,
  parseSafetensorsHeader,
  SafetensorsIngest,
  type SafetensorsIngestResult,
  SafetensorsWriter,
} from './safetensors.js';
import { writeCheckpointLike } from './write-like.js';

const CODE = 'invalid-safetensors';
const ALL_DTYPES = Object.keys(DTYPE_BYTES) as DType[];

interface Expected {
  metadata: Record<string, string>;
  tensors: { name: string; dtype: DType; shape: number[]; values: (string | number)[]; zeros: number; nonFinite: number }[];
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sparsoup-st-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let fileCounter = 0;
async function toFile(bytes: Uint8Array): Promise<string> {
  const path = join(dir, `f${fileCounter++}.safetensors`);
  await writeFile(path, bytes);
  return path;
}

function ingestAll(bytes: Uint8Array, cuts: number[] = [], maxHeaderBytes?: number): SafetensorsIngestResult {
  const ingest = new SafetensorsIngest({ maxHeaderBytes });
  for (const c of split(bytes, cuts)) ingest.push(c);
  return ingest.finish();
}

/** Stats the slow, obvious way: decode every element. */
function referenceStats(bytes: Uint8Array, entries: { name: string; dtype: DType; shape: number[]; byteOffset: number; byteLength: number }[]): TensorStats[] {
  return entries.map((e) => {
    const raw = bytes.slice(e.byteOffset, e.byteOffset + e.byteLength);
    const size = e.byteLength / DTYPE_BYTES[e.dtype];
    let zeros = 0;
    let nonFinite = 0;
    if (FLOAT_DTYPES.has(e.dtype)) {
      const v = decodeFloat32(e.dtype, raw);
      for (const x of v) {
        if (x === 0) zeros++;
        else if (!Number.isFinite(x)) nonFinite++;
      }
      // F64 values too small or large for float32 must not be miscounted: check on the f64 itself.
      if (e.dtype === 'F64') {
        const d = new Float64Array(raw.buffer, raw.byteOffset, size);
        zeros = d.filter((x) => x === 0).length;
        nonFinite = d.filter((x) => !Number.isFinite(x)).length;
      }
    } else {
      const s = DTYPE_BYTES[e.dtype];
      for (let i = 0; i < size; i++) if (raw.subarray(i * s, i * s + s).every((b) => b === 0)) zeros++;
    }
    return { name: e.name, dtype: e.dtype, shape: e.shape, size, zeros, nonFinite };
  });
}

/** Keeps -0 and NaN as they are (Math.max would not). */
function dropNegative(x: number): number {
  if (x < 0) return 0;
  return x;
}

describe('the reference fixture (written by test/fixtures/checkpoint/make_fixtures.py)', () => {
  const file = fixture('reference.safetensors');
  const expected = fixtureJson<Expected>('reference.expected.json');

  it('parses: names, dtypes, shapes, metadata, offsets in file order', () => {
    const h = parseSafetensorsHeader(file, { fileSize: file.byteLength });
    expect(h.metadata).toEqual(expected.metadata);
    expect(h.dataStart % 8).toBe(0);
    expect(h.entries.map((e) => [e.name, e.dtype, e.shape])).toEqual(expected.tensors.map((t) => [t.name, t.dtype, t.shape]));
    for (let i = 1; i < h.entries.length; i++) expect(h.entries[i].byteOffset).toBe(h.entries[i - 1].byteOffset + h.entries[i - 1].byteLength);
    expect(h.dataStart + h.dataBytes).toBe(file.byteLength);
  });

  it('reads every tensor with the values Python wrote', async () => {
    const reader = await openSafetensors(await toFile(file));
    try {
      expect(reader.metadata).toEqual(expected.metadata);
      for (const t of expected.tensors) {
        const f32 = await reader.readFloat32(t.name);
        if (FLOAT_DTYPES.has(t.dtype)) {
          const bits = Array.from(new Uint32Array(f32.buffer, f32.byteOffset, f32.length), (b) => b.toString(16).padStart(8, '0'));
          expect(bits, t.name).toEqual(t.values);
        } else {
          expect(Array.from(f32), t.name).toEqual(t.values.map(Number));
        }
      }
      // The raw bytes of an integer tensor are exactly what is stored.
      const raw = await reader.readRaw('i16');
      expect(Array.from(new Int16Array(raw.slice().buffer))).toEqual([-300, 0]);
    } finally {
      await reader.close();
    }
  });

  it('ingests in any chunking with the zero and non-finite counts Python computed', () => {
    fc.assert(
      fc.property(fc.array(fc.nat(), { maxLength: 30 }), (cuts) => {
        const r = ingestAll(file, cuts);
        expect(r.totalBytes).toBe(file.byteLength);
        expect(r.stats.map((s) => [s.name, s.zeros, s.nonFinite])).toEqual(expected.tensors.map((t) => [t.name, t.zeros, t.nonFinite]));
        expect(r.stats.map((s) => s.size)).toEqual(expected.tensors.map((t) => t.values.length));
      }),
      { numRuns: 200 },
    );
  });

  it('is rewritten byte for byte (no transform, and an identity transform except the lossy F64)', async () => {
    const reader = await openSafetensors(await toFile(file));
    try {
      const same = memorySink();
      await writeCheckpointLike(reader, same.sink);
      expect(Buffer.from(same.bytes()).equals(Buffer.from(file))).toBe(true);

      const identity = memorySink();
      await writeCheckpointLike(reader, identity.sink, { transform: (_n, d) => d });
      const out = identity.bytes();
      expect(out.byteLength).toBe(file.byteLength);
      const f64 = reader.tensors.find((t) => t.dtype === 'F64')!;
      // Everything but the F64 tensor (which went through float32) is identical; F16 and BF16 included.
      const mask = (b: Uint8Array) => Buffer.concat([b.subarray(0, f64.byteOffset), b.subarray(f64.byteOffset + f64.byteLength)]);
      expect(mask(out).equals(mask(file))).toBe(true);
      const back = new Float64Array(out.slice(f64.byteOffset, f64.byteOffset + f64.byteLength).buffer);
      expect(Array.from(back)).toEqual([Math.fround(0.1), 1, -0, 0]);
    } finally {
      await reader.close();
    }
  });

  it('a transform changes only the float tensors, which keep their dtype', async () => {
    const reader = await openSafetensors(await toFile(file));
    const out = memorySink();
    await writeCheckpointLike(reader, out.sink, { transform: (_n, d) => d.map(dropNegative) });
    await reader.close();
    const path = await toFile(out.bytes());
    const again = await openSafetensors(path);
    try {
      expect(again.tensors).toEqual(reader.tensors);
      expect(Array.from(await again.readFloat32('bf'))).toEqual([1, 0, 0, Infinity, 3.3895313892515355e38]);
      expect(Array.from(await again.readFloat32('0')).slice(0, 4)).toEqual([1, -0, 2 ** -24, 65504]);
      expect(Array.from(await again.readFloat32('i8'))).toEqual([-128, 0, 127]);
    } finally {
      await again.close();
    }
  });
});

const tensorSpecs = fc
  .uniqueArray(
    fc.record({
      name: fc.string({ minLength: 1, maxLength: 8 }).filter((s) => s !== '__metadata__'),
      dtype: fc.constantFrom(...ALL_DTYPES),
      shape: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }),
    }),
    { selector: (t) => t.name, maxLength: 6 },
  )
  .chain((specs) =>
    fc.tuple(
      fc.constant(specs),
      fc.tuple(...specs.map((s) => fc.uint8Array({ minLength: s.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[s.dtype], maxLength: s.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[s.dtype] }))),
      fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 3 }),
    ),
  );

async function writeFile_(specs: { name: string; dtype: DType; shape: number[] }[], data: Uint8Array[], metadata: Record<string, string>, chunkBytes?: number): Promise<Uint8Array> {
  const out = memorySink();
  const w = new SafetensorsWriter(specs, metadata, out.sink, { chunkBytes });
  for (let i = 0; i < specs.length; i++) await w.writeTensor(specs[i].name, data[i]);
  expect((await w.finish()).bytesWritten).toBe(w.totalBytes);
  return out.bytes();
}

describe('SafetensorsWriter', () => {
  it('round-trips every dtype: parse, ingest and file reader agree with what was written', async () => {
    await fc.assert(
      fc.asyncProperty(tensorSpecs, fc.array(fc.nat(), { maxLength: 8 }), fc.integer({ min: 8, max: 64 }), async ([specs, data, metadata], cuts, chunkBytes) => {
        const bytes = await writeFile_(specs, data, metadata, chunkBytes);
        const h = parseSafetensorsHeader(bytes, { fileSize: bytes.byteLength });
        expect(h.headerLength % 8).toBe(0);
        expect(h.metadata).toEqual(metadata);
        expect(h.entries.map((e) => e.name)).toEqual(specs.map((s) => s.name));
        expect(h.entries.map((e) => e.dtype)).toEqual(specs.map((s) => s.dtype));
        const r = ingestAll(bytes, cuts);
        expect(r.stats).toEqual(referenceStats(bytes, h.entries));
        const reader = await openSafetensors(await toFile(bytes));
        try {
          for (let i = 0; i < specs.length; i++) {
            expect(Array.from(await reader.readRaw(specs[i].name))).toEqual(Array.from(data[i]));
            const f = await reader.readFloat32(specs[i].name);
            expect(Array.from(f)).toEqual(Array.from(decodeFloat32(specs[i].dtype, data[i])));
          }
        } finally {
          await reader.close();
        }
      }),
      { numRuns: 60 },
    );
  });

  it('encodes float32 input into the entry dtype, across chunk boundaries', async () => {
    const values = new Float32Array([1, -0.1, 65504, 1e-8, Number.NaN, -Infinity, 3.25, 0]);
    for (const dtype of ['F32', 'F16', 'BF16', 'F64'] as DType[]) {
      const out = memorySink();
      const w = new SafetensorsWriter([{ name: 'w', dtype, shape: [2, 4] }], undefined, out.sink, { chunkBytes: 8 });
      await w.writeTensor('w', values);
      await w.finish();
      const file = out.bytes();
      const h = parseSafetensorsHeader(file, { fileSize: file.byteLength });
      const stored = file.subarray(h.entries[0].byteOffset);
      expect(Array.from(stored)).toEqual(Array.from(encodeFromFloat32(dtype, values)));
    }
  });

  it('lays the header out like the reference: compact JSON, metadata first, space padding to 8', () => {
    const header = encodeSafetensorsHeader([{ name: '0', dtype: 'F16', shape: [2] }, { name: 'b', dtype: 'F32', shape: [] }], { k: 'v' });
    const text = new TextDecoder().decode(header.subarray(8));
    expect(text).toBe('{"__metadata__":{"k":"v"},"0":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[],"data_offsets":[4,8]}}'.padEnd(136, ' '));
    expect(new DataView(header.buffer).getUint32(0, true)).toBe(136);
  });

  it('refuses wrong order, wrong sizes, float32 for integer tensors, missing tensors and bad specs', async () => {
    const { sink } = memorySink();
    const w = new SafetensorsWriter(
      [
        { name: 'a', dtype: 'F32', shape: [2] },
        { name: 'b', dtype: 'I32', shape: [1] },
      ],
      {},
      sink,
    );
    await expect(w.writeTensor('b', new Uint8Array(4))).rejects.toThrow(/tensor a comes next, got b/);
    await expect(w.writeTensor('a', new Float32Array(3))).rejects.toThrow(/holds 2 values, got 3/);
    await expect(w.writeTensor('a', new Uint8Array(7))).rejects.toThrow(/takes 8 bytes, got 7/);
    await w.writeTensor('a', new Float32Array(2));
    await expect(w.writeTensor('b', new Float32Array(1))).rejects.toThrow(/write its raw bytes/);
    await expect(w.finish()).rejects.toThrow(/only 1 of 2 tensors written; b is next/);
    await w.writeTensor('b', new Uint8Array(4));
    await expect(w.writeTensor('c', new Uint8Array(0))).rejects.toThrow(/all 2 tensors are written/);
    expect(() => new SafetensorsWriter([{ name: 'x', dtype: 'F32', shape: [] }, { name: 'x', dtype: 'F32', shape: [] }], {}, sink)).toThrow(/listed twice/);
    expect(() => new SafetensorsWriter([{ name: '__metadata__', dtype: 'F32', shape: [] }], {}, sink)).toThrow(CoreInputError);
    expect(() => new SafetensorsWriter([{ name: 'x', dtype: 'F32', shape: [2 ** 40, 2 ** 20] }], {}, sink)).toThrow(/too large shape/);
  });

  it('writes any CheckpointReader in a chosen format (MemoryCheckpoint → safetensors)', async () => {
    const mem = new MemoryCheckpoint([
      { name: 'k', shape: [2], data: new Float32Array([1, -2]) },
      { name: 'h', shape: [1], data: new Float32Array([0.5]), dtype: 'F16' },
    ]);
    await expect(writeCheckpointLike(mem, memorySink().sink)).rejects.toThrow(/say which format/);
    const out = memorySink();
    await writeCheckpointLike(mem, out.sink, { format: 'safetensors', metadata: { from: 'memory' } });
    const reader = await openSafetensors(await toFile(out.bytes()));
    expect(reader.metadata).toEqual({ from: 'memory' });
    expect(Array.from(await reader.readFloat32('k'))).toEqual([1, -2]);
    expect(Array.from(await reader.readRaw('h'))).toEqual([0x00, 0x38]);
    await reader.close();
  });
});

describe('FileCheckpointReader', () => {
  it('reuses the caller buffer and serves concurrent reads correctly', async () => {
    const out = memorySink();
    const w = new SafetensorsWriter(
      [
        { name: 'a', dtype: 'F16', shape: [3] },
        { name: 'b', dtype: 'BF16', shape: [2] },
      ],
      {},
      out.sink,
    );
    await w.writeTensor('a', new Float32Array([1, 2, 3]));
    await w.writeTensor('b', new Float32Array([4, 5]));
    await w.finish();
    const reader = await openSafetensors(await toFile(out.bytes()));
    const into = new Float32Array(16);
    const a = await reader.readFloat32('a', into);
    expect(a.buffer).toBe(into.buffer);
    expect(Array.from(a)).toEqual([1, 2, 3]);
    const [x, y] = await Promise.all([reader.readFloat32('a'), reader.readFloat32('b')]);
    expect([Array.from(x), Array.from(y)]).toEqual([
      [1, 2, 3],
      [4, 5],
    ]);
    await expect(reader.readFloat32('nope')).rejects.toThrow(/no tensor named nope/);
    await reader.close();
    await expect(reader.readRaw('a')).rejects.toThrow(/closed/);
  });

  it('refuses a file whose header is bad', async () => {
    const path = await toFile(rawSafetensors('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 3));
    await expect(openSafetensors(path)).rejects.toThrow(/truncated: the header describes 4 bytes of tensor data, the file has 3/);
    await expect(openSafetensors(await toFile(new Uint8Array(5)))).rejects.toThrow(/too short for the 8-byte header length/);
  });
});

const F32 = (name: string, shape: number[], offsets: [number, number]) => `"${name}":{"dtype":"F32","shape":${JSON.stringify(shape)},"data_offsets":${JSON.stringify(offsets)}}`;

describe('bad safetensors input is a CoreInputError that says what is wrong', () => {
  const cases: [string, Uint8Array, RegExp, Record<string, unknown>?][] = [
    ['header length over the limit', concatBytes(u64le(200 * 2 ** 20), new Uint8Array(8)), /header length 209715200 exceeds the limit of 104857600/],
    ['header length over 2^53', concatBytes(u64le(2n ** 63n + 7n), new Uint8Array(8)), /header length 9223372036854775815 exceeds the limit/, { headerLength: '9223372036854775815' }],
    ['header longer than the file', concatBytes(u64le(1000), new TextEncoder().encode('{}')), /runs past the end of the 10-byte file/],
    ['tiny header length', concatBytes(u64le(0)), /too small/],
    ['truncated JSON', rawSafetensors('{"a":{"dtype":"F32"'), /not valid JSON/],
    ['invalid UTF-8', concatBytes(u64le(6), new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x7d])), /not valid UTF-8/],
    ['not an object', rawSafetensors('[1,2]'), /does not start with '\{'/],
    ['leading space', rawSafetensors(' {}'), /does not start with '\{'/],
    ['entry not an object', rawSafetensors('{"a":5}'), /tensor a: its entry is not an object/, { tensor: 'a' }],
    ['deeply nested entry', rawSafetensors(`{"a":${'['.repeat(100000)}${']'.repeat(100000)}}`), /the header nests 100001 levels deep; a safetensors header has at most 3/, { depth: 100001 }],
    ['deeply nested shape', rawSafetensors(`{"w":{"dtype":"F32","shape":${'['.repeat(50000)}${']'.repeat(50000)},"data_offsets":[0,0]}}`), /nests 50002 levels deep/],
    ['deeply nested dtype', rawSafetensors(`{"w":{"dtype":${'{"a":'.repeat(50000)}1${'}'.repeat(50000)},"shape":[0],"data_offsets":[0,0]}}`), /nests 50002 levels deep/],
    ['deeply nested offsets', rawSafetensors(`{"w":{"dtype":"F32","shape":[0],"data_offsets":[0,${'['.repeat(50000)}${']'.repeat(50000)}]}}`), /nests 50003 levels deep/],
    ['nested metadata value', rawSafetensors('{"__metadata__":{"a":{"b":[]}}}'), /nests 4 levels deep/],
    ['entry is an array', rawSafetensors('{"a":[]}'), /tensor a: its entry is not an object/, { tensor: 'a' }],
    ['unknown dtype', rawSafetensors('{"w":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}}', 1), /tensor w has unknown dtype "F8"/, { tensor: 'w' }],
    ['unknown field', rawSafetensors('{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}}', 1), /tensor w has an unknown field x/],
    ['negative dimension', rawSafetensors(`{${F32('w', [-1], [0, 4])}}`, 4), /tensor w: shape \[-1\] is not a list of non-negative integers/],
    ['fractional dimension', rawSafetensors(`{${F32('w', [1.5], [0, 4])}}`, 4), /shape \[1.5\]/],
    ['string shape', rawSafetensors('{"w":{"dtype":"F32","shape":"3","data_offsets":[0,12]}}', 12), /shape "3"/],
    ['shape product beyond 2^53', rawSafetensors(`{${F32('w', [2 ** 30, 2 ** 30], [0, 4])}}`, 4), /safe product/],
    ['byte size beyond 2^53', rawSafetensors(`{${F32('w', [2 ** 52], [0, 4])}}`, 4), /needs \d+ bytes, but data_offsets \[0, 4\] cover 4/],
    ['wrong byte range', rawSafetensors(`{${F32('w', [2], [0, 4])}}`, 4), /tensor w: shape \[2\] of F32 needs 8 bytes, but data_offsets \[0, 4\] cover 4/, { tensor: 'w' }],
    ['begin after end', rawSafetensors(`{${F32('w', [0], [8, 0])}}`, 8), /data_offsets \[8,0\] is not \[begin, end\]/],
    ['offsets not integers', rawSafetensors(`{${F32('w', [1], [0, 4.5])}}`, 8), /data_offsets \[0,4.5\]/],
    ['offsets beyond 2^53', rawSafetensors(`{${F32('w', [0], [1e300, 1e300])}}`, 8), /data_offsets/],
    ['one offset', rawSafetensors('{"w":{"dtype":"F32","shape":[0],"data_offsets":[0]}}'), /data_offsets \[0\]/],
    ['overlap', rawSafetensors(`{${F32('a', [2], [0, 8])},${F32('b', [2], [4, 12])}}`, 12), /tensor b \(data_offsets \[4, 12\]\) overlaps tensor a \(\[0, 8\]\)/, { tensor: 'b', overlaps: 'a' }],
    ['same range twice', rawSafetensors(`{${F32('a', [1], [0, 4])},${F32('b', [1], [0, 4])}}`, 4), /overlaps/],
    ['gap', rawSafetensors(`{${F32('a', [1], [0, 4])},${F32('b', [1], [8, 12])}}`, 12), /gap of 4 bytes before tensor b/, { tensor: 'b' }],
    ['data not starting at 0', rawSafetensors(`{${F32('a', [1], [4, 8])}}`, 8), /gap of 4 bytes before tensor a/],
    ['out of range', rawSafetensors(`{${F32('a', [2], [0, 8])}}`, 4), /truncated: the header describes 8 bytes of tensor data, the file has 4/],
    ['trailing bytes', rawSafetensors(`{${F32('a', [1], [0, 4])}}`, 6), /2 bytes after the last tensor/],
    ['duplicate tensor name', rawSafetensors(`{${F32('a', [1], [0, 4])},${F32('a', [1], [4, 8])}}`, 8), /tensor a is listed twice/, { tensor: 'a' }],
    ['duplicate name spelled with an escape', rawSafetensors(`{${F32('a', [1], [0, 4])},${F32('\\u0061', [1], [4, 8])}}`, 8), /tensor a is listed twice/],
    ['duplicate field', rawSafetensors('{"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,2]}}', 2), /tensor a has the field dtype twice/],
    ['duplicate metadata', rawSafetensors('{"__metadata__":{"k":"1"},"__metadata__":{}}'), /__metadata__ appears twice/],
    ['metadata value not a string', rawSafetensors('{"__metadata__":{"k":1}}'), /__metadata__ value for key k is not a string/],
    ['metadata not an object', rawSafetensors('{"__metadata__":["x"]}'), /__metadata__ is not an object of strings/],
  ];
  it.each(cases)('%s', (_label, bytes, message, details) => {
    expectCoreError(() => parseSafetensorsHeader(bytes, { fileSize: bytes.byteLength }), CODE, message, details);
    // The streaming ingest refuses the same input (its wording differs for size mismatches).
    const res = outcome(() => ingestAll(bytes, [3, 9, 17]));
    expect(res.ok).toBe(false);
  });

  it('accepts what the format allows: padding, null metadata, zero-length tensors, any key order', () => {
    const text = `{${F32('b', [1], [4, 8])},"__metadata__":null,${F32('z', [0, 3], [4, 4])},${F32('a', [1], [0, 4])}}     `;
    const h = parseSafetensorsHeader(rawSafetensors(text, 8), { fileSize: rawSafetensors(text, 8).byteLength });
    expect(h.entries.map((e) => e.name)).toEqual(['a', 'z', 'b']);
    expect(h.metadata).toEqual({});
    const empty = parseSafetensorsHeader(rawSafetensors('{}'), { fileSize: 10 });
    expect(empty.entries).toEqual([]);
    expect(ingestAll(rawSafetensors('{}')).stats).toEqual([]);
    // Keys JSON.parse would treat specially stay ordinary tensor names.
    const odd = parseSafetensorsHeader(rawSafetensors(`{${F32('__proto__', [1], [0, 4])},${F32('1', [1], [4, 8])}}`, 8));
    expect(odd.entries.map((e) => e.name)).toEqual(['__proto__', '1']);
  });

  it('the ingest refuses short and long bodies and a bad header before the data arrives', () => {
    const file = rawSafetensors(`{${F32('a', [2], [0, 8])}}`, 8);
    expectCoreError(() => ingestAll(file.subarray(0, file.byteLength - 1)), CODE, /shorter than its header describes: \d+ of \d+ bytes arrived \(tensor a is incomplete\)/, { tensor: 'a' });
    expectCoreError(() => ingestAll(concatBytes(file, new Uint8Array(1))), CODE, /longer than its header describes/);
    expectCoreError(() => ingestAll(file.subarray(0, 5)), CODE, /inside the 8-byte header length/);
    expectCoreError(() => ingestAll(file.subarray(0, 20)), CODE, /ended inside the header: 12 of its \d+ bytes arrived/);
    const bad = rawSafetensors('{"a":7}', 1000);
    const ingest = new SafetensorsIngest();
    expect(() => ingest.push(bad.subarray(0, 15))).toThrow(/tensor a: its entry is not an object/);
    // Every later call gives the same refusal.
    expect(() => ingest.push(bad.subarray(15))).toThrow(/tensor a: its entry is not an object/);
    expect(() => ingest.finish()).toThrow(/tensor a: its entry is not an object/);
    expectCoreError(() => new SafetensorsIngest({ maxHeaderBytes: 16 }).push(rawSafetensors('{"a":{"dtype":"U8"}}')), CODE, /exceeds the limit of 16 bytes/);
  });

  it('does not allocate what a forged header length claims', () => {
    // 99 MiB claimed, 1 KiB sent: the ingest must hold what arrived, not a buffer of the claim.
    const before = process.memoryUsage().arrayBuffers;
    const ingests: SafetensorsIngest[] = [];
    for (let i = 0; i < 20; i++) {
      const ingest = new SafetensorsIngest();
      ingest.push(concatBytes(u64le(99 * 2 ** 20), new Uint8Array(1024).fill(0x20)));
      ingests.push(ingest);
    }
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(50 * 2 ** 20);
    expectCoreError(() => ingests[0].finish(), CODE, /ended inside the header: 1024 of its 103809024 bytes/);
  });
});

describe('fuzzing: never anything but a CoreInputError, and chunking never matters', () => {
  function check(bytes: Uint8Array, cutsA: number[], cutsB: number[]): void {
    const parsed = outcome(() => parseSafetensorsHeader(bytes, { fileSize: bytes.byteLength, maxHeaderBytes: 4096 }));
    outcome(() => parseSafetensorsHeader(bytes, { maxHeaderBytes: 4096 }));
    const a = outcome(() => ingestAll(bytes, cutsA, 4096));
    const b = outcome(() => ingestAll(bytes, cutsB, 4096));
    expect(a).toEqual(b);
    expect(a.ok).toBe(parsed.ok);
    if (a.ok && parsed.ok) {
      expect(a.value.entries).toEqual(parsed.value.entries);
      expect(a.value.stats).toEqual(referenceStats(bytes, parsed.value.entries));
    }
  }
  const cuts = fc.array(fc.nat(), { maxLength: 12 });

  it('random bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), cuts, cuts, check), { numRuns: 400 });
  });

  it('random bytes after a plausible header length', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), cuts, cuts, (tail, a, b) => check(concatBytes(u64le(Math.min(tail.byteLength, 120)), tail), a, b)),
      { numRuns: 300 },
    );
  });

  it('random JSON as the header', () => {
    fc.assert(
      fc.property(fc.json({ maxDepth: 4 }), fc.nat({ max: 40 }), cuts, cuts, (json, data, a, b) => check(rawSafetensors(json, data), a, b)),
      { numRuns: 300 },
    );
  });

  it('structured headers with random fields (most almost valid)', () => {
    const entry = fc.record(
      {
        dtype: fc.oneof(fc.constantFrom(...ALL_DTYPES), fc.string({ maxLength: 4 }), fc.integer()),
        shape: fc.oneof(fc.array(fc.integer({ min: -1, max: 3 }), { maxLength: 3 }), fc.jsonValue({ maxDepth: 1 })),
        data_offsets: fc.oneof(fc.tuple(fc.integer({ min: -2, max: 40 }), fc.integer({ min: -2, max: 40 })), fc.jsonValue({ maxDepth: 1 })),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(fc.dictionary(fc.string({ maxLength: 3 }), entry, { maxKeys: 4 }), fc.nat({ max: 48 }), cuts, cuts, (header, data, a, b) =>
        check(rawSafetensors(JSON.stringify(header), data), a, b),
      ),
      { numRuns: 400 },
    );
  });

  it('mutated valid files: flipped bytes, truncation, header-length corruption, spliced JSON', async () => {
    const files: Uint8Array[] = [fixture('reference.safetensors')];
    await fc.assert(
      fc.asyncProperty(tensorSpecs, async ([specs, data, metadata]) => {
        files.push(await writeFile_(specs, data, metadata));
      }),
      { numRuns: 30 },
    );
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('flip' as const), at: fc.array(fc.nat(), { minLength: 1, maxLength: 4 }), value: fc.integer({ min: 1, max: 255 }) }),
      fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
      fc.record({ kind: fc.constant('length' as const), value: fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.bigInt({ min: 0n, max: 2000n })) }),
      fc.record({ kind: fc.constant('splice' as const), at: fc.nat(), cut: fc.nat({ max: 20 }), text: fc.oneof(fc.json({ maxDepth: 2 }), fc.string({ maxLength: 10 })) }),
      fc.record({ kind: fc.constant('append' as const), extra: fc.uint8Array({ minLength: 1, maxLength: 10 }) }),
    );
    fc.assert(
      fc.property(fc.nat(), mutation, cuts, cuts, (which, m, a, b) => {
        const original = files[which % files.length];
        let bytes: Uint8Array = original.slice();
        if (m.kind === 'flip') for (const at of m.at) bytes[at % bytes.length] ^= m.value;
        else if (m.kind === 'truncate') bytes = bytes.slice(0, m.at % bytes.length);
        else if (m.kind === 'length') bytes.set(u64le(m.value), 0);
        else if (m.kind === 'append') bytes = concatBytes(bytes, m.extra);
        else {
          // Replace part of the JSON header with other JSON text, keeping the length field right.
          const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
          const json = bytes.subarray(8, 8 + n);
          const at = m.at % json.length;
          const spliced = concatBytes(json.subarray(0, at), new TextEncoder().encode(m.text), json.subarray(Math.min(json.length, at + m.cut)));
          bytes = concatBytes(u64le(spliced.length), spliced, bytes.subarray(8 + n));
        }
        check(bytes, a, b);
      }),
      { numRuns: 1500 },
    );
  });
});
