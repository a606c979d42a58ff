import { mkdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runFuzz, safetensors, VALID_TENSORS } from '../scripts/fuzz.js';

/**
 * A bounded run of the fuzz campaign (`npm run fuzz -- --cases N` runs it longer): the built service
 * as a child process, driven with mutated safetensors, TF.js multipart, dataset uploads and JSON
 * bodies to every POST route. FUZZ_CASES raises the count.
 */
describe('fuzzing the running service', () => {
  it('never crashes, never answers 5xx or a 4xx that is not problem+json, leaves nothing behind a refusal, holds no extra descriptors', async () => {
    const report = await runFuzz({ cases: Number(process.env.FUZZ_CASES ?? 60), seed: 20261202, batch: 30, concurrency: 4 });
    expect(report.cases).toBeGreaterThan(0);
    expect(report.failures).toEqual([]);
    expect(report.crashes).toBe(0);
    expect(report.traces).toBe(0);
    expect(report.fdGrowth).toBeLessThanOrEqual(0);
    expect(report.eventLoop.maxMs).toBeGreaterThan(0);
    for (const [route, f] of Object.entries(report.routes)) {
      expect({ route, server5xx: f.server5xx, notProblemJson: f.notProblemJson, noAnswer: f.noAnswer, hangs: f.hangs, litter: f.litter, crashes: f.crashes }).toEqual({ route, server5xx: 0, notProblemJson: 0, noAnswer: 0, hangs: 0, litter: 0, crashes: 0 });
    }
  }, 600_000);

  it('the batch check sees a file and a row planted after a refused case, and names that case by running the batch again one case at a time', async () => {
    // Litter stands in for a leaking request: after the first refused case of each batch, a file
    // without a row (first batch) or a model row no answer of the batch accounts for (second batch) is
    // planted, and planted again when that case runs again.
    const planted = { file: 0, row: 0 };
    const plantRow = (port: number) =>
      new Promise<void>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/models?name=planted', headers: { 'content-type': 'application/octet-stream' } }, (res) => {
          res.resume();
          res.on('end', () => (res.statusCode === 201 ? resolve() : reject(new Error(`planting a row: ${res.statusCode}`))));
        });
        req.on('error', reject);
        req.end(safetensors(VALID_TENSORS, { planted: 'yes' }));
      });
    const report = await runFuzz({
      cases: 40,
      seed: 20261203,
      batch: 20,
      concurrency: 4,
      afterCase: async (n, svc, status) => {
        const refused = status !== null && status >= 400 && status < 500;
        if (n === planted.file || (!planted.file && n <= 20 && refused)) {
          planted.file = n;
          const dir = join(svc.dataDir, 'artifacts', 'sha256', 'ab');
          mkdirSync(dir, { recursive: true });
          writeFileSync(join(dir, `ab${String(n).padStart(62, '0')}`), 'planted');
        }
        if (n === planted.row || (!planted.row && n > 20 && refused)) {
          planted.row = n;
          await plantRow(svc.port);
        }
      },
    });
    expect(planted.file).toBeGreaterThan(0);
    expect(planted.row).toBeGreaterThan(20);
    const litter = report.failures.filter((f) => /left/.test(f));
    expect(litter).toHaveLength(2);
    expect(litter[0]).toMatch(new RegExp(`^case ${planted.file} .*: a refused request left .*files without a row`));
    expect(litter[1]).toMatch(new RegExp(`^case ${planted.row} .*: a refused request left rows models \\d+.* where the accepted answers explain`));
    expect(Object.values(report.routes).reduce((n, f) => n + f.litter, 0)).toBe(2);
    expect(report.batchesRechecked).toBeGreaterThanOrEqual(2);
  }, 600_000);
});
