import { describe, expect, it } from 'vitest';
import { runFuzz } from '../scripts/fuzz.js';

/**
 * A bounded run of the fuzz campaign (`npm run fuzz -- --cases N` runs it longer): the built service
 * as a child process, driven with mutated safetensors, TF.js multipart, dataset uploads and JSON
 * bodies to every POST route. FUZZ_CASES raises the count.
 */
describe('fuzzing the running service', () => {
  it('never crashes, never answers 5xx or a 4xx that is not problem+json, leaves nothing behind a refusal, holds no extra descriptors', async () => {
    const report = await runFuzz({ cases: Number(process.env.FUZZ_CASES ?? 60), seed: 20261202, batch: 30 });
    expect(report.cases).toBeGreaterThan(0);
    expect(report.failures).toEqual([]);
    expect(report.crashes).toBe(0);
    expect(report.traces).toBe(0);
    expect(report.fdGrowth).toBeLessThanOrEqual(0);
    for (const [route, f] of Object.entries(report.routes)) {
      expect({ route, server5xx: f.server5xx, notProblemJson: f.notProblemJson, noAnswer: f.noAnswer, hangs: f.hangs, litter: f.litter, crashes: f.crashes }).toEqual({ route, server5xx: 0, notProblemJson: 0, noAnswer: 0, hangs: 0, litter: 0, crashes: 0 });
    }
  }, 600_000);
});
