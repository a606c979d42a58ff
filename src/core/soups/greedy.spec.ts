import { describe, expect, it } from 'vitest';
import { greedySoup, type SoupScorer } from './greedy.js';

/** A scorer from a table of set scores ("0,2" → 0.9); records every call. */
function tableScorer(table: Record<string, number>) {
  const calls: string[] = [];
  const score: SoupScorer = async (weights, members) => {
    const key = members.join(',');
    calls.push(key);
    // The weights are the uniform soup of exactly these members.
    expect(weights.map((w, i) => (members.includes(i) ? w === 1 / members.length : w === 0))).not.toContain(false);
    if (!(key in table)) throw new Error(`unexpected set ${key}`);
    return table[key];
  };
  return { score, calls };
}

describe('greedySoup', () => {
  it('one candidate is that candidate', async () => {
    const { score, calls } = tableScorer({ '0': 0.7 });
    const r = await greedySoup(1, score);
    expect(r).toEqual({ accepted: [0], weights: [1], score: 0.7, trace: [{ index: 0, score: 0.7, soupScore: 0.7, accepted: true }], evaluations: 1 });
    expect(calls).toEqual(['0']);
  });

  it('sorts best first (ties by input order), adds a candidate only when the soup does not get worse', async () => {
    const { score, calls } = tableScorer({ '0': 0.5, '1': 0.8, '2': 0.6, '3': 0.8, '1,3': 0.85, '1,2,3': 0.86, '0,1,2,3': 0.84 });
    const r = await greedySoup(['a', 'b', 'c', 'd'], score);
    expect(r.trace).toEqual([
      { index: 1, score: 0.8, soupScore: 0.8, accepted: true },
      { index: 3, score: 0.8, soupScore: 0.85, accepted: true },
      { index: 2, score: 0.6, soupScore: 0.86, accepted: true },
      { index: 0, score: 0.5, soupScore: 0.84, accepted: false },
    ]);
    expect(r.accepted).toEqual([1, 3, 2]);
    expect(r.weights).toEqual([0, 1 / 3, 1 / 3, 1 / 3]);
    expect(r.score).toBe(0.86);
    // Four singletons, then one set per remaining candidate; never the same set twice.
    expect(calls).toEqual(['0', '1', '2', '3', '1,3', '1,2,3', '0,1,2,3']);
    expect(new Set(calls).size).toBe(calls.length);
    expect(r.evaluations).toBe(calls.length);
  });

  it(">= accepts a tie with the best so far, > does not", async () => {
    const table = { '0': 0.9, '1': 0.8, '0,1': 0.9 };
    const ge = await greedySoup(2, tableScorer(table).score, { comparison: '>=' });
    const gt = await greedySoup(2, tableScorer(table).score, { comparison: '>' });
    expect(ge.accepted).toEqual([0, 1]);
    expect(gt.accepted).toEqual([0]);
    expect(gt.trace[1]).toEqual({ index: 1, score: 0.8, soupScore: 0.9, accepted: false });
    expect(gt.weights).toEqual([1, 0]);
  });

  it('uses given individual scores instead of scoring singletons', async () => {
    const { score, calls } = tableScorer({ '0,1': 0.95, '0,1,2': 0.5 });
    const r = await greedySoup(3, score, { scores: [0.9, 0.9, 0.1] });
    expect(calls).toEqual(['0,1', '0,1,2']);
    expect(r.accepted).toEqual([0, 1]);
    expect(r.evaluations).toBe(2);
  });

  it('scores singletons concurrently when asked, steps sequentially', async () => {
    let running = 0;
    let peak = 0;
    const score: SoupScorer = async (_w, members) => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, 5));
      running--;
      return members.length === 1 ? members[0] : 10;
    };
    const r = await greedySoup(4, score, { concurrency: 3 });
    expect(peak).toBe(3);
    expect(r.accepted).toEqual([3, 2, 1, 0]);
  });

  it('a NaN score sorts last and is never accepted', async () => {
    const { score } = tableScorer({ '0': Number.NaN, '1': 0.4, '0,1': Number.NaN });
    const r = await greedySoup(2, score);
    expect(r.trace.map((s) => s.index)).toEqual([1, 0]);
    expect(r.accepted).toEqual([1]);
  });

  it('stops when aborted', async () => {
    const ctl = new AbortController();
    const score: SoupScorer = async (_w, members) => {
      if (members.length === 2) ctl.abort();
      return 1;
    };
    await expect(greedySoup(3, score, { signal: ctl.signal })).rejects.toThrow(/abort/i);
  });
});
