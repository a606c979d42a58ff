import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { scanJsonKeys } from '../core/checkpoint/json-scan.js';
import { jsonDepthExceeds } from './json-body.js';

const enc = (s: string) => new TextEncoder().encode(s);

describe('jsonDepthExceeds', () => {
  it('counts brackets outside strings only', () => {
    expect(jsonDepthExceeds(enc('[[["[[[[[[","\\"[[[["]]]'), 3)).toBe(false);
    expect(jsonDepthExceeds(enc('[[[[]]]]'), 3)).toBe(true);
    expect(jsonDepthExceeds(enc(`${'{"a":'.repeat(10)}1${'}'.repeat(10)}`), 10)).toBe(false);
    expect(jsonDepthExceeds(enc(`${'{"a":'.repeat(11)}1${'}'.repeat(11)}`), 10)).toBe(true);
  });

  it('agrees with the checkpoint scanner on any JSON document', () => {
    fc.assert(
      fc.property(fc.json({ maxDepth: 6 }), fc.integer({ min: 0, max: 7 }), (json, limit) => {
        expect(jsonDepthExceeds(enc(json), limit)).toBe(scanJsonKeys(json).maxDepth > limit);
      }),
    );
  });
});
