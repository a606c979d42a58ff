import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { scanJsonKeys } from './json-scan.js';

describe('scanJsonKeys', () => {
  it('finds no duplicate in JSON.stringify output, and the top-level keys in document order', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.constantFrom(undefined, 1, '\t'), (v, indent) => {
        const text = JSON.stringify(v, null, indent);
        const scan = scanJsonKeys(text);
        expect(scan.duplicate).toBeUndefined();
        const isObj = typeof v === 'object' && v !== null && !Array.isArray(v);
        expect(scan.topLevelKeys).toEqual(isObj ? Object.keys(v) : []);
      }),
      { numRuns: 500 },
    );
  });

  it('finds a key repeated at any depth, however it is spelled', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.string({ maxLength: 5 }), fc.nat({ max: 4 }), (v, key, depth) => {
        const k = JSON.stringify(key);
        // Spell the second copy with \u escapes for every character.
        const escaped = `"${[...key].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('')}"`;
        const inner = `{${k}:${JSON.stringify(v)},"x":[1,{"y":2}],${escaped}:null}`;
        const text = '{"w":'.repeat(depth) + inner + '}'.repeat(depth);
        const scan = scanJsonKeys(text);
        expect(scan.duplicate).toEqual({ key, path: Array(depth).fill('w') });
      }),
      { numRuns: 300 },
    );
  });

  it('measures nesting depth', () => {
    expect(scanJsonKeys('1').maxDepth).toBe(0);
    expect(scanJsonKeys('[]').maxDepth).toBe(1);
    expect(scanJsonKeys('{"a":[[{}]],"b":[1]}').maxDepth).toBe(4);
    expect(scanJsonKeys(`${'['.repeat(50000)}${']'.repeat(50000)}`).maxDepth).toBe(50000);
  });
});
