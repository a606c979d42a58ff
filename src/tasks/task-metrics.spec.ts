import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ProblemException } from '../common/problem.js';
import { parseTaskMetrics } from './task-metrics.js';

const KINDS = ['train', 'evaluate', 'recalibrate'] as const;
const accuracy = fc.double({ min: 0, max: 1, noNaN: true });

describe('parseTaskMetrics (the metrics part of an untrusted task result)', () => {
  it('answers any JSON value with metrics whose every field is in range, or a 422 that says what is wrong', () => {
    const field = fc.oneof(accuracy, fc.double(), fc.integer(), fc.string(), fc.constant(null), fc.array(fc.oneof(accuracy, fc.double(), fc.constant(null)), { maxLength: 5 }));
    const value = fc.oneof(
      fc.jsonValue(),
      fc.record({ valAccuracy: field, testAccuracy: field, loss: field, ece: field, perClassAccuracy: field, ensembleTestAccuracy: field }, { requiredKeys: [] }),
      fc.dictionary(fc.string(), field),
    );
    fc.assert(
      fc.property(fc.constantFrom(...KINDS), value, (kind, raw) => {
        let m: ReturnType<typeof parseTaskMetrics>;
        try {
          m = parseTaskMetrics(kind, raw);
        } catch (err) {
          expect(err).toBeInstanceOf(ProblemException);
          expect((err as ProblemException).getStatus()).toBe(422);
          expect(String((err as ProblemException).problem.detail).length).toBeGreaterThan(0);
          return;
        }
        if (m === null) {
          expect(kind).toBe('recalibrate');
          return;
        }
        const inUnit = (x: unknown) => typeof x === 'number' && Number.isFinite(x) && x >= 0 && x <= 1;
        if (kind !== 'recalibrate') {
          expect(inUnit(m.valAccuracy)).toBe(true);
          expect(inUnit(m.testAccuracy)).toBe(true);
        }
        for (const k of ['valAccuracy', 'testAccuracy', 'ece', 'ensembleTestAccuracy'] as const) if (m[k] !== undefined && m[k] !== null) expect(inUnit(m[k])).toBe(true);
        if (m.perClassAccuracy) for (const x of m.perClassAccuracy) expect(x === null || inUnit(x)).toBe(true);
        for (const k of Object.keys(m)) expect(['valAccuracy', 'testAccuracy', 'loss', 'ece', 'perClassAccuracy', 'samples', 'durationMs', 'ensembleTestAccuracy']).toContain(k);
      }),
      { numRuns: 2000 },
    );
  });

  it('accepts every well-formed metrics object', () => {
    fc.assert(
      fc.property(fc.constantFrom(...KINDS), accuracy, accuracy, fc.double({ min: 0, max: 100, noNaN: true }), fc.option(accuracy, { nil: undefined }), fc.array(fc.option(accuracy), { maxLength: 20 }), (kind, val, test, loss, ece, perClass) => {
        const raw = { valAccuracy: val, testAccuracy: test, loss, ...(ece === undefined ? {} : { ece }), perClassAccuracy: perClass };
        expect(parseTaskMetrics(kind, raw)).toEqual(raw);
      }),
    );
  });

  it('names each problem', () => {
    const detail = (f: () => unknown) => {
      try {
        f();
      } catch (err) {
        return String((err as ProblemException).problem.detail);
      }
      return 'no error';
    };
    expect(detail(() => parseTaskMetrics('train', { valAccuracy: 1.5, extra: 1 }))).toMatch(/metrics\.extra: unknown field; metrics\.valAccuracy: must be a finite number in \[0, 1\]; metrics\.testAccuracy: required/);
    expect(detail(() => parseTaskMetrics('evaluate', null))).toMatch(/missing/);
    expect(parseTaskMetrics('recalibrate', null)).toBeNull();
  });
});
