/**
 * Workers on other machines, sharing nothing but Postgres and the bucket: the API and a worker run
 * in two network namespaces (ip netns, veth pairs made and removed here), each with its own DATA_DIR
 * and cache folder, and reach Postgres and the S3 server only over those links. The API runs with
 * WORKERS=0, so an SMS run's candidates train in the worker's namespace; killing that worker (-9)
 * mid-candidate and starting another loses nothing.
 *
 * Needs root and `ip` (CI has both) and a Postgres server (the test:pg suite); elsewhere it is
 * skipped with the reason printed. Postgres listens on 127.0.0.1 only, so the test forwards TCP from
 * the root-side veth addresses to it (the machine's Postgres configuration is left alone).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScratchDatabase } from '../src/database/scratch.js';
import { mnistSliceIdx } from './support/datasets.js';
import { type S3Server, startS3Server } from './support/s3rver.js';

function skipReason(): string | null {
  if (!process.env.DATABASE_URL) return 'it needs a Postgres server (run it with npm run test:pg); the embedded database is one process';
  if (process.getuid?.() !== 0) return 'it needs root to create network namespaces';
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    return 'the ip command (iproute2) is missing';
  }
  return null;
}
const reason = skipReason();
if (reason) console.log(`test/netns.test.ts skipped: ${reason}`);

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
const PREFIX = 'netns';

/** One namespace ("a machine") with a veth pair to the root namespace. */
interface Machine {
  ns: string;
  rootVeth: string;
  /** The root side's address as this machine sees it, and the machine's own. */
  hostAddress: string;
  address: string;
}

/** Forwards TCP from `listen` to 127.0.0.1:`port` (what a machine uses to reach Postgres or S3). */
async function forward(listen: string, port: number): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((inbound) => {
    const outbound = net.connect(port, '127.0.0.1');
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('error', () => {
        inbound.destroy();
        outbound.destroy();
      });
      s.on('close', () => sockets.delete(s));
    }
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((res) => server.listen(0, listen, res));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((res) => {
        for (const s of sockets) s.destroy();
        server.close(() => res());
      }),
  };
}

interface Proc {
  child: ChildProcess;
  output: () => string;
  /** Resolves with the first output line that matches. */
  line: (re: RegExp) => Promise<string>;
}

function startIn(m: Machine, script: string, env: Record<string, string>): Proc {
  const child = spawn('ip', ['netns', 'exec', m.ns, process.execPath, script], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on('line', (l) => {
      out += `${l}\n`;
      for (const w of [...waiters]) if (w.re.test(l)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(l);
      }
    });
  }
  return {
    child,
    output: () => out,
    line: (re) =>
      new Promise<string>((resolve, reject) => {
        waiters.push({ re, resolve });
        child.once('exit', (code, signal) => reject(new Error(`${script} in ${m.ns} exited (${code ?? signal}) before printing ${re}:\n${out}`)));
      }),
  };
}

async function stop(p: Proc | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
  const exited = new Promise((r) => p.child.once('exit', r));
  p.child.kill(signal);
  await exited;
}

describe.skipIf(reason !== null)('workers on other machines: two network namespaces sharing only Postgres and the bucket', () => {
  const id = randomBytes(3).toString('hex');
  const machines: Machine[] = [];
  const forwarders: { close: () => Promise<void> }[] = [];
  const dirs: string[] = [];
  const procs: Proc[] = [];
  let s3: S3Server;
  let scratch: { url: string; drop: () => Promise<void> };
  let db: pg.Client;
  let api: Proc;
  let apiUrl: string;
  let envFor: (m: Machine) => Record<string, string>;

  beforeAll(async () => {
    // Two /30 links in a block no route of this machine uses.
    const routes = execFileSync('ip', ['-4', 'route']).toString();
    let block = 0;
    for (let tries = 0; tries < 50 && (!block || routes.includes(`10.${block}.`)); tries++) block = 100 + Math.floor(Math.random() * 150);
    for (const [i, role] of ['a', 'w'].entries()) {
      const m: Machine = { ns: `sp${role}${id}`, rootVeth: `sp${role}${id}r`, hostAddress: `10.${block}.${i}.1`, address: `10.${block}.${i}.2` };
      machines.push(m); // pushed first: afterAll removes whatever part of it was made
      ip('netns', 'add', m.ns);
      ip('link', 'add', m.rootVeth, 'type', 'veth', 'peer', 'name', `sp${role}${id}n`);
      ip('link', 'set', `sp${role}${id}n`, 'netns', m.ns);
      ip('addr', 'add', `${m.hostAddress}/30`, 'dev', m.rootVeth);
      ip('link', 'set', m.rootVeth, 'up');
      ip('netns', 'exec', m.ns, 'ip', 'addr', 'add', `${m.address}/30`, 'dev', `sp${role}${id}n`);
      ip('netns', 'exec', m.ns, 'ip', 'link', 'set', `sp${role}${id}n`, 'up');
      ip('netns', 'exec', m.ns, 'ip', 'link', 'set', 'lo', 'up');
    }
    s3 = await startS3Server();
    scratch = await createScratchDatabase(process.env.DATABASE_URL!, 'sparsoup_netns');
    db = new pg.Client({ connectionString: scratch.url });
    await db.connect();
    const pgPort = Number(new URL(scratch.url).port || 5432);
    const s3Port = Number(new URL(s3.endpoint).port);
    const links = new Map<Machine, { pg: number; s3: number }>();
    for (const m of machines) {
      const p = await forward(m.hostAddress, pgPort);
      const o = await forward(m.hostAddress, s3Port);
      forwarders.push(p, o);
      links.set(m, { pg: p.port, s3: o.port });
    }
    envFor = (m) => {
      const dbUrl = new URL(scratch.url);
      dbUrl.hostname = m.hostAddress;
      dbUrl.port = String(links.get(m)!.pg);
      const dataDir = mkdtempSync(join(tmpdir(), `sparsoup-${m.ns}-`));
      dirs.push(dataDir);
      return {
        ...s3.env(PREFIX),
        AWS_ENDPOINT_URL_S3: `http://${m.hostAddress}:${links.get(m)!.s3}`,
        DATABASE_URL: dbUrl.toString(),
        DATA_DIR: join(dataDir, 'data'),
        ARTIFACT_CACHE_DIR: join(dataDir, 'cache'),
        LOG_LEVEL: 'info',
        TFJS_BACKEND: 'wasm',
      };
    };
    const [a] = machines;
    api = startIn(a, 'dist/src/main.js', { ...envFor(a), WORKERS: '0', HOST: a.address, PORT: '3000' });
    procs.push(api);
    apiUrl = `http://${a.address}:3000`;
    await api.line(/listening|started/i);
    const health = (await (await fetch(`${apiUrl}/health`)).json()) as { artifacts: { kind: string; writable: boolean }; database: { driver: string } };
    expect(health).toMatchObject({ artifacts: { kind: 's3', writable: true }, database: { driver: 'postgres' } });
  }, 90_000);

  afterAll(async () => {
    for (const p of procs) await stop(p, 'SIGKILL');
    for (const f of forwarders) await f.close();
    await db?.end().catch(() => {});
    await scratch?.drop().catch(() => {});
    await s3?.stop();
    for (const m of machines) {
      try {
        ip('netns', 'del', m.ns);
      } catch {}
      try {
        ip('link', 'del', m.rootVeth);
      } catch {} // gone with the namespace's end of the pair
    }
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  async function startWorker(): Promise<{ proc: Proc; workerId: string }> {
    const w = machines[1];
    const proc = startIn(w, 'dist/src/worker.js', { ...envFor(w), WORKERS: '1' });
    procs.push(proc);
    await proc.line(/sparsoup worker started/);
    const rows = (await db.query('SELECT id FROM worker_process WHERE pid = $1', [proc.child.pid])).rows as { id: string }[];
    expect(rows).toHaveLength(1);
    return { proc, workerId: rows[0].id };
  }

  async function call<T>(path: string, init?: { method?: string; body?: unknown; form?: FormData }): Promise<T> {
    const res = await fetch(`${apiUrl}${path}`, {
      method: init?.method ?? (init?.body || init?.form ? 'POST' : 'GET'),
      ...(init?.form ? { body: init.form } : init?.body ? { body: JSON.stringify(init.body), headers: { 'content-type': 'application/json' } } : {}),
    });
    const body = await res.json();
    if (!res.ok) throw new Error(`${path}: ${res.status} ${JSON.stringify(body)}`);
    return body as T;
  }

  it('runs SMS with its candidates trained in the worker\'s namespace; a worker killed mid-candidate loses nothing', async () => {
    const first = await startWorker();
    const { images, labels } = mnistSliceIdx(600);
    const form = new FormData();
    form.append('images', new Blob([images]), 'images');
    form.append('labels', new Blob([labels]), 'labels');
    const data = (await call<{ id: string }>('/datasets?name=slice', { form })).id;
    const template = await call<{ id: string }>('/models/templates', { body: { architecture: 'lenet-300-100', datasetId: data, seed: 1 } });
    // 40 epochs of the slice: about a second a candidate, so the kill lands while one trains (at 2
    // epochs the FMA kernels could finish a candidate before the kill arrived).
    const run = await call<{ id: string }>('/runs', {
      body: { kind: 'sms', modelId: template.id, datasetId: data, goalSparsity: 0.5, phases: 1, m: 2, training: { epochs: 40, batchSize: 32, learningRate: 0.05, schedule: 'constant' }, soup: { method: 'uniform' } },
    });

    // Follow the run's events; kill the worker as soon as it has started a candidate.
    const events = await fetch(`${apiUrl}/runs/${run.id}/events`);
    const lines = createInterface({ input: (await import('node:stream')).Readable.fromWeb(events.body as import('node:stream/web').ReadableStream) });
    const seen: string[] = [];
    let second: { proc: Proc; workerId: string } | null = null;
    for await (const l of lines) {
      const type = /^event: (.+)$/.exec(l)?.[1];
      if (!type) continue;
      seen.push(type);
      if (type === 'candidate-started' && !second) {
        first.proc.child.kill('SIGKILL');
        second = await startWorker();
      }
      if (type === 'run-finished') break;
    }
    // The killed candidate started again: requeued by the supervisor (`candidate-requeued`), or its
    // job handed back by the job-hold sweep first and claimed by the new worker (a third start).
    expect(seen.includes('candidate-requeued') || seen.filter((t) => t === 'candidate-started').length >= 3).toBe(true);

    const finished = await call<{ status: string; candidates: { status: string; attempts: number }[] }>(`/runs/${run.id}`);
    expect(finished.status).toBe('succeeded');
    expect(finished.candidates).toHaveLength(2);
    expect(finished.candidates.every((c) => c.status === 'succeeded')).toBe(true);
    expect(Math.max(...finished.candidates.map((c) => c.attempts))).toBeGreaterThanOrEqual(2);
    // Trained by the workers in the other namespace, never by the API process (WORKERS=0).
    const apiRow = (await db.query('SELECT id, threads FROM worker_process WHERE pid = $1', [api.child.pid])).rows[0] as { id: string; threads: number };
    expect(apiRow.threads).toBe(0);
    const trainedBy = (await db.query('SELECT worker_id FROM run_candidate WHERE run_id = $1', [run.id])).rows.map((r: { worker_id: string }) => r.worker_id);
    expect(trainedBy.every((w: string) => w === second!.workerId || w === first.workerId)).toBe(true);
    expect(trainedBy).toContain(second!.workerId);

    // The machines shared no folder: the artifacts are in the bucket, listed by the API, none on disk.
    for (const d of dirs) expect(existsSync(join(d, 'data', 'artifacts'))).toBe(false);
    const bucketDir = join(s3.dir, s3.bucket, PREFIX);
    const inBucket = readdirSync(bucketDir, { withFileTypes: true }).filter((e) => e.isFile() && e.name.endsWith('._S3rver_object')).map((e) => e.name.replace(/\._S3rver_object$/, '')).sort();
    const listed = (await call<{ items: { sha256: string }[] }>('/artifacts?limit=500')).items.map((a) => a.sha256).sort();
    expect(inBucket).toEqual(listed);
  }, 120_000);
});
