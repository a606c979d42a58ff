import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BackendInfo, initBackend } from '../core/tf/backend.js';
import { namedWeights } from '../core/tf/model-io.js';
import { buildTemplate } from '../core/tf/templates.js';
import { syntheticDataset } from '../core/tf/testing.js';
import { trainModel } from '../core/tf/train.js';
import { FsArtifactStore } from '../storage/fs-artifact-store.js';
import { greedyOverLayersModels, runSoup } from './handlers/soup.js';
import type { TaskContext } from './shared/context.js';
import { openStoredModel, storeLayersModel } from './shared/stored-models.js';
import type { SoupTask, StoredLayersModelRef } from './tasks.js';

// val must hold two evaluation batches (2 × 512) for the helper to take a part.
const ds = syntheticDataset({ n: 9000, side: 8, seed: 11 });

describe('greedy soup scoring with a score helper thread', () => {
  const dir = mkdtempSync(join(os.tmpdir(), 'score-helper-'));
  const store = new FsArtifactStore(dir);
  const refs: StoredLayersModelRef[] = [];
  let backend: BackendInfo;
  beforeAll(async () => {
    backend = await initBackend('wasm');
    const base = buildTemplate('cnn-bn', { inputShape: [8, 8, 1], classes: 4, seed: 3 });
    for (const seed of [1, 2, 3]) {
      const m = buildTemplate('cnn-bn', { inputShape: [8, 8, 1], classes: 4, seed: 3 });
      m.setWeights(base.getWeights());
      await trainModel(m, ds, { seed, epochs: 0.1, batchSize: 64, optimizer: 'sgd', momentum: 0.9, nesterov: false, learningRate: 0.05, schedule: 'constant', weightDecay: 1e-4 });
      const s = await storeLayersModel(store, m);
      refs.push({ format: 'tfjs-layers', weightsSha256: s.model.weights.sha256, entries: s.model.entries, topologySha256: s.topology.sha256 });
      m.dispose();
    }
    base.dispose();
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('gives the single-thread soup bit for bit: the same trace, score and recalibrated statistics', async () => {
    expect(backend.name).toBe('wasm');
    const task = { models: refs, recalibrate: true, recalibrationFraction: 0.2 };
    const run = async (helper: boolean) => {
      const readers = await Promise.all(refs.map((r) => openStoredModel(store, r)));
      try {
        const g = await greedyOverLayersModels(store, task, readers, undefined, ds, () => {}, { helper });
        const weights = [...namedWeights(g.model)].map(([name, v]) => [name, Array.from(v.read().dataSync())] as const);
        g.model.dispose();
        return { weights: g.weights, trace: g.trace, score: g.score, variables: weights, threads: g.scoringThreads };
      } finally {
        for (const r of readers) await r.close();
      }
    };
    const alone = await run(false);
    const paired = await run(true);
    expect([alone.threads, paired.threads]).toEqual([1, 2]);
    expect(alone.trace.length).toBe(3);
    expect(paired.weights).toEqual(alone.weights);
    expect(paired.trace).toEqual(alone.trace);
    expect(paired.score).toBe(alone.score);
    // Recalibration ran: moving statistics are not the initial zeros and ones.
    const mean = alone.variables.find(([n]) => n === 'bn1/moving_mean')![1];
    expect(mean.some((x) => x !== 0)).toBe(true);
    expect(paired.variables).toEqual(alone.variables);
  }, 240_000);

  it('a uniform soup recalibrated and validated on two threads is the one-thread soup: same score, same stored bytes', async () => {
    const task: SoupTask = { type: 'soup', models: refs, maskHashes: refs.map(() => null), method: 'uniform', dataset: { id: ds.id, source: 'builtin' }, recalibrate: true };
    const ctx = (idleThreads: number): TaskContext => ({
      init: { backend: 'wasm', artifacts: { kind: 'fs', root: dir }, cacheDir: dir },
      store,
      backend,
      progress: () => {},
      port: null,
      sharedDataset: ds,
      idleThreads,
    });
    const alone = await runSoup(task, ctx(0));
    const paired = await runSoup(task, ctx(1));
    expect([alone.scoringThreads, paired.scoringThreads]).toEqual([1, 2]);
    expect(alone.valAccuracy).toBeGreaterThan(0);
    expect(paired.valAccuracy).toBe(alone.valAccuracy);
    expect(paired.stored!.weights.weights.sha256).toBe(alone.stored!.weights.weights.sha256);
  }, 240_000);
  it('greedy with known single scores: the singles the greedy way give the same set, trace and stored bytes in 2 scorings instead of 5', async () => {
    const ctx: TaskContext = { init: { backend: 'wasm', artifacts: { kind: 'fs', root: dir }, cacheDir: dir }, store, backend, progress: () => {}, port: null, sharedDataset: ds, idleThreads: 0 };
    const task: SoupTask = { type: 'soup', models: refs, maskHashes: refs.map(() => null), method: 'greedy', dataset: { id: ds.id, source: 'builtin' }, recalibrate: true };
    const scored = await runSoup(task, ctx);
    expect(scored.scorings).toBe(5);
    const singles = refs.map((_, i) => scored.steps!.find((s) => s.index === i)!.score);
    const known = await runSoup({ ...task, knownScores: singles }, ctx);
    expect(known.scorings).toBe(2);
    expect(known.weights).toEqual(scored.weights);
    expect(known.steps).toEqual(scored.steps);
    expect(known.valAccuracy).toBe(scored.valAccuracy);
    expect(known.stored!.weights.weights.sha256).toBe(scored.stored!.weights.weights.sha256);
    // Known scores no pair beats: the best single is the soup, scored here once more (its statistics
    // and accuracy are measured, not the known figure), so it is the greedy-way single bit for bit.
    const alone = await runSoup({ ...task, comparison: '>', knownScores: [2, 1.5, 1] }, ctx);
    expect(alone.weights).toEqual([1, 0, 0]);
    expect(alone.scorings).toBe(3);
    expect(alone.valAccuracy).toBe(singles[0]);
    await expect(runSoup({ ...task, knownScores: [0.5] }, ctx)).rejects.toThrow(/knownScores/);
  }, 240_000);
});
