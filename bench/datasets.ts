/**
 * Resident memory of a two-thread worker pool that has Fashion-MNIST loaded in both threads, with the
 * pool sharing one copy per process (SharedArrayBuffers, the default) against one copy per thread
 * (`shareDatasets: false`, what the pool did before). Each configuration runs in its own child
 * process; RSS is the whole process (main thread and both workers, their wasm heaps included).
 *
 *   npm run bench:datasets
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { WorkerPool } from '../src/workers/worker-pool.js';
import { printMachine } from './machine.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, here.endsWith(join('dist', 'bench')) ? '../..' : '..');
const MiB = 2 ** 20;

async function child(shared: boolean) {
  const dir = mkdtempSync(join(os.tmpdir(), 'bench-ds-'));
  const pool = new WorkerPool(2, { backend: 'wasm', artifacts: { kind: 'fs', root: dir }, cacheDir: join(root, '.bench/cache'), allowDiagnostics: true }, { shareDatasets: shared });
  try {
    const ref = { id: 'fashion-mnist', source: 'builtin' as const };
    // Both threads up (and their backends) before the baseline.
    const counter0 = new SharedArrayBuffer(4);
    await Promise.all([0, 1].map(() => pool.run({ type: 'probe-dataset', dataset: { id: 'mnist', source: 'builtin' }, index: 0, rendezvous: { counter: counter0, parties: 2 } })));
    const before = process.memoryUsage().rss;
    let peak = before;
    const timer = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 20);
    const counter = new SharedArrayBuffer(4);
    const probes = await Promise.all([0, 1].map(() => pool.run({ type: 'probe-dataset', dataset: ref, index: 12345, rendezvous: { counter, parties: 2 } })));
    clearInterval(timer);
    const after = process.memoryUsage().rss;
    peak = Math.max(peak, after);
    console.log(JSON.stringify({ shared, threads: new Set(probes.map((p) => p.threadId)).size, sharedBuffers: probes.every((p) => p.shared), datasetMiB: probes[0].byteLength / MiB, beforeMiB: before / MiB, afterMiB: after / MiB, peakMiB: peak / MiB }));
  } finally {
    await pool.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main() {
  const i = process.argv.indexOf('--child');
  if (i >= 0) return child(process.argv[i + 1] === 'shared');
  console.log('# bench:datasets — RSS of a 2-thread pool with Fashion-MNIST in both threads');
  printMachine();
  console.log('| pool | dataset x (MiB) | RSS growth after both threads hold it (MiB) | peak growth (MiB) | SharedArrayBuffer in the threads | load (1 min) |');
  console.log('| --- | ---: | ---: | ---: | --- | ---: |');
  // Copies first, so the dataset cache file is built (by that run) before the shared run measures.
  for (const mode of ['copies', 'shared', 'copies', 'shared']) {
    const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', mode], { encoding: 'utf8' });
    const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
    if (!line) {
      console.log(`| ${mode} | failed: ${(r.stderr || '').trim().split('\n').pop()} |`);
      continue;
    }
    const j = JSON.parse(line);
    console.log(`| ${mode === 'shared' ? 'one copy per process (shared)' : 'one copy per thread'} | ${j.datasetMiB.toFixed(1)} | ${(j.afterMiB - j.beforeMiB).toFixed(0)} | ${(j.peakMiB - j.beforeMiB).toFixed(0)} | ${j.sharedBuffers} | ${os.loadavg()[0].toFixed(1)} |`);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
