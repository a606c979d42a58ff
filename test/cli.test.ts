import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from './support/app.js';
import { safetensorsBytes, seededWeights } from './support/checkpoints.js';
import { mnistSliceIdx } from './support/datasets.js';

const KEY = 'cli-writer-key';

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The built CLI as a user runs it: a child process, talking HTTP to the listening test service. */
function cli(args: string[], env: Record<string, string> = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['dist/src/cli/main.js', ...args], { env: { ...process.env, NO_COLOR: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A port nothing listens on (a moment ago something did). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** `ok` runs the CLI and insists on exit 0 (naming the command and its output otherwise); `json` adds --json and parses. */
function runner(env: () => Record<string, string>) {
  const ok = async (args: string[]) => {
    const r = await cli(args, env());
    if (r.code !== 0) throw new Error(`sparsoup ${args.join(' ')} exited ${r.code}:\n${r.stderr}\n${r.stdout}`);
    return r;
  };
  const json = async (args: string[]) => JSON.parse((await ok([...args, '--json'])).stdout);
  return { ok, json };
}

describe('sparsoup CLI', () => {
  let t: TestApp;
  let dir: string;
  let env: Record<string, string>;
  const { ok, json } = runner(() => env);
  let pruned: { model: { id: string }; mask: { id: string; hash: string } };
  let runId: string;

  beforeAll(async () => {
    t = await startTestApp({ WORKERS: '2', API_KEYS: `cli:${KEY}:write` }, { listen: true });
    dir = mkdtempSync(join(tmpdir(), 'sparsoup-cli-'));
    env = { SPARSOUP_URL: t.url, SPARSOUP_API_KEY: KEY };
  });
  afterAll(async () => {
    await t?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('uploads a safetensors file and prints the model', async () => {
    const file = join(dir, 'tiny.safetensors');
    const body = await safetensorsBytes([{ name: 'fc/kernel', shape: [20, 10], data: seededWeights(200, 3) }]);
    writeFileSync(file, body);
    const model = await json(['models', 'upload', file]);
    expect(model).toMatchObject({ name: 'tiny', format: 'safetensors', paramCount: 200, sizeBytes: body.length });
    const text = (await ok(['models', 'get', model.id])).stdout;
    expect(text).toContain('fc/kernel');
    expect(text).toMatch(/\[20, 10\]/);
  });

  it('round-trips a TensorFlow.js folder: download --format tfjs, then upload the folder', async () => {
    const res = await fetch(`${t.url}/models/templates`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` }, body: JSON.stringify({ architecture: 'lenet-300-100', datasetId: 'mnist', seed: 4 }) });
    const template = (await res.json()) as { id: string; paramCount: number; tensors: { name: string }[] };
    expect(res.status).toBe(201);
    const folder = join(dir, 'lenet');
    const dl = await json(['models', 'download', template.id, '--format', 'tfjs', '-o', folder]);
    expect(dl.files.map((f: { file: string }) => f.file)).toEqual([join(folder, 'model.json'), join(folder, 'model.weights.bin')]);
    const again = await json(['models', 'upload', folder, '--name', 'lenet-again']);
    expect(again).toMatchObject({ name: 'lenet-again', format: 'tfjs-layers', paramCount: template.paramCount });
    expect(again.tensors.map((x: { name: string }) => x.name)).toEqual(template.tensors.map((x: { name: string }) => x.name));

    pruned = await json(['models', 'prune', again.id, '--method', 'magnitude-global', '--sparsity', '0.8']);
    expect(pruned.model).toMatchObject({ parentIds: [again.id] });
    expect((pruned.model as unknown as { prunableSparsity: number }).prunableSparsity).toBeCloseTo(0.8, 3);
  });

  it('creates a run from YAML and watches it to the end with one bar per candidate', async () => {
    const yaml = join(dir, 'run.yaml');
    writeFileSync(
      yaml,
      [
        'kind: retrain',
        `modelId: ${pruned.model.id}`,
        `maskId: ${pruned.mask.id}`,
        'datasetId: mnist',
        'm: 2',
        'vary: seed',
        'training:',
        '  epochs: 0.03',
        '  batchSize: 64',
        '  learningRate: 0.05',
        '  schedule: constant',
        '',
      ].join('\n'),
    );
    const created = await ok(['runs', 'create', '-f', yaml]);
    runId = /^run ([0-9a-f-]{36})/m.exec(created.stdout)![1];
    expect(created.stdout).toContain('2 candidates');

    const watched = await ok(['runs', 'watch', runId]);
    const lines = watched.stdout.trim().split('\n');
    expect(lines.at(-1)).toBe(`run ${runId} succeeded`);
    for (const c of ['candidate 0', 'candidate 1']) {
      const last = lines.filter((l) => l.startsWith(c)).at(-1)!;
      expect(last).toMatch(/█{30} 100%\s+succeeded\s+val \d+\.\d+% {2}test \d+\.\d+%/);
    }
    // The --json variant: one event per line, ending with run-finished.
    const events = (await ok(['runs', 'watch', runId, '--json'])).stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(events[0].type).toBe('run-created');
    expect(events.at(-1)).toMatchObject({ type: 'run-finished', data: { status: 'succeeded' } });
    expect(events.filter((e) => e.type === 'candidate-succeeded')).toHaveLength(2);
  });

  it('prints the report table and saves the plot', async () => {
    const svg = join(dir, 'report.svg');
    const r = await ok(['runs', 'report', runId, '-o', svg]);
    expect(r.stdout).toMatch(/^phase\s+sparsity\s+actual/m);
    expect(r.stdout).toMatch(/^candidate\s+seed\s+status\s+val\s+test/m);
    expect(r.stdout).toContain(`saved the accuracy-against-sparsity plot to ${svg}`);
    expect(readFileSync(svg, 'utf8')).toMatch(/^<svg[\s\S]*<\/svg>\s*$/);
  });

  it('makes a uniform soup of the candidates and downloads it', async () => {
    const run = await json(['runs', 'get', runId]);
    const ids = run.candidates.map((c: { resultModelId: string }) => c.resultModelId);
    const soup = await json(['soups', 'create', '--method', 'uniform', ...ids]);
    expect(soup).toMatchObject({ status: 'succeeded', method: 'uniform', acceptedIds: ids, maskHash: pruned.mask.hash });
    const file = join(dir, 'soup.safetensors');
    const text = (await ok(['models', 'download', soup.resultModelId, '-o', file])).stdout;
    expect(text).toMatch(/^wrote .*soup\.safetensors \(/);
    const bytes = readFileSync(file);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
    expect(Object.keys(header)).toEqual(expect.arrayContaining(['fc1/kernel']));
  });

  it('prints the problem detail for API errors, without a stack, and exits non-zero', async () => {
    const missing = '00000000-0000-4000-8000-000000000000';
    const notFound = await cli(['models', 'prune', missing, '--method', 'magnitude-global', '--sparsity', '0.5'], env);
    expect(notFound.code).toBe(1);
    expect(notFound.stderr).toBe(`error: model ${missing} does not exist (HTTP 404)\n`);

    const badKey = await cli(['runs', 'list', '--api-key', 'wrong'], env);
    expect(badKey.code).toBe(1);
    expect(badKey.stderr).toContain('error: the API key is not valid (HTTP 401)');

    const badRun = join(dir, 'bad.json');
    writeFileSync(badRun, JSON.stringify({ kind: 'retrain', modelId: 'not-a-uuid', datasetId: 'mnist', m: 2 }));
    const invalid = await cli(['runs', 'create', '-f', badRun], env);
    expect(invalid.code).toBe(1);
    expect(invalid.stderr).toMatch(/^error: .*modelId.*\(HTTP 400\)\n$/);

    const closed = await closedPort();
    const unreachable = await cli(['models', 'list', '--url', `http://127.0.0.1:${closed}`], env);
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toBe(`error: cannot reach the service at http://127.0.0.1:${closed} (ECONNREFUSED); set --url or SPARSOUP_URL\n`);

    const usage = await cli(['models', 'prune', missing], env);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('--method is required');
    expect((await cli(['runs', 'explode'], env)).code).toBe(2);
    for (const r of [notFound, badKey, invalid, unreachable, usage]) expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});

describe("the CLI alone: from a template to an SMS report (the README's tour)", () => {
  let t: TestApp;
  let dir: string;
  let env: Record<string, string>;
  const { ok, json } = runner(() => env);

  beforeAll(async () => {
    t = await startTestApp({ WORKERS: '2' }, { listen: true });
    dir = mkdtempSync(join(tmpdir(), 'sparsoup-cli-tour-'));
    env = { SPARSOUP_URL: t.url };
  });
  afterAll(async () => {
    await t?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('prints --help with an example for every command', async () => {
    for (const command of ['models template', 'models evaluate', 'runs create', 'masks list', 'masks get', 'masks diff', 'datasets list', 'datasets upload', 'models prune', 'soups create']) {
      const r = await ok([...command.split(' '), '--help']);
      expect(r.stdout).toMatch(new RegExp(`^usage: sparsoup ${command}( |\\n)`));
      expect(r.stdout).toMatch(new RegExp(`examples?:\\n {2}sparsoup ${command}( |\\n)`));
    }
  });

  it('uploads a dataset, trains a template densely, evaluates, prunes, diffs masks, runs SMS from flags and reports', async () => {
    const { images, labels } = mnistSliceIdx(1400);
    writeFileSync(join(dir, 'images.idx'), images);
    writeFileSync(join(dir, 'labels.idx'), labels);
    const dataset = await json(['datasets', 'upload', '--images', join(dir, 'images.idx'), '--labels', join(dir, 'labels.idx'), '--name', 'digits']);
    expect(dataset).toMatchObject({ name: 'digits', source: 'upload', classes: 10 });
    expect((await ok(['datasets', 'list'])).stdout).toMatch(new RegExp(`^${dataset.id}\\s+digits\\s+upload`, 'm'));

    const template = await json(['models', 'template', '--architecture', 'lenet-300-100', '--dataset', dataset.id, '--seed', '2']);
    expect(template).toMatchObject({ format: 'tfjs-layers', paramCount: 266_610 });
    expect((await ok(['models', 'template', '--architecture', 'lenet-300-100', '--dataset', dataset.id])).stdout).toMatch(/^template [0-9a-f-]{36} {2}lenet-300-100/);

    const train = await json(['runs', 'create', '--kind', 'train', '--model', template.id, '--dataset', dataset.id, '--epochs', '1', '--batch-size', '64', '--learning-rate', '0.1', '--seed', '3']);
    expect(train).toMatchObject({ kind: 'train', modelId: template.id, datasetId: dataset.id });
    expect(train.candidates[0].config).toMatchObject({ epochs: 1, batchSize: 64, learningRate: 0.1, seed: 3 });
    expect((await ok(['runs', 'watch', train.id])).stdout.trim().split('\n').at(-1)).toBe(`run ${train.id} succeeded`);
    const dense = (await json(['runs', 'get', train.id])).candidates[0].resultModelId;

    const evaluation = await json(['models', 'evaluate', dense, '--dataset', dataset.id, '--split', 'val', '--corruption', 'gaussian-noise:2']);
    expect(evaluation).toMatchObject({ modelId: dense, split: 'val', corruptions: [{ name: 'gaussian-noise', severity: 2 }] });
    expect(evaluation.accuracy).toBeGreaterThan(0.3);
    expect((await ok(['models', 'evaluate', dense, '--dataset', dataset.id])).stdout).toMatch(/^evaluation .* accuracy \d+\.\d+%/);

    const a = await json(['models', 'prune', dense, '--method', 'magnitude-global', '--sparsity', '0.8']);
    const b = await json(['models', 'prune', dense, '--method', 'random', '--sparsity', '0.8', '--seed', '1']);
    const listed = await json(['masks', 'list', '--model', dense]);
    expect(listed.items.map((m: { id: string }) => m.id).sort()).toEqual([a.mask.id, b.mask.id].sort());
    expect((await json(['masks', 'get', a.mask.id])).hash).toBe(a.mask.hash);
    const diff = await json(['masks', 'diff', a.mask.id, b.mask.id]);
    expect(diff.equal).toBe(false);
    expect(diff.hamming).toBe(diff.tensors.reduce((sum: number, x: { hamming: number }) => sum + x.hamming, 0));
    expect((await ok(['masks', 'diff', a.mask.id, a.mask.id])).stdout).toMatch(/^equal {2}hamming 0$/m);

    // Flags on top of a file: the file gives the shape, the flags the budget.
    const file = join(dir, 'sms.json');
    writeFileSync(file, JSON.stringify({ kind: 'sms', modelId: dense, datasetId: dataset.id, goalSparsity: 0.9, phases: 2, m: 3, training: { batchSize: 64, epochs: 5 } }));
    const sms = await json(['runs', 'create', '-f', file, '--m', '2', '--epochs', '0.2', '--soup', 'uniform', '--learning-rate', '0.05']);
    expect(sms).toMatchObject({ kind: 'sms', modelId: dense });
    expect(sms.candidates.length === 0 || sms.candidates.length === 2).toBe(true);
    expect((await ok(['runs', 'watch', sms.id])).stdout.trim().split('\n').at(-1)).toBe(`run ${sms.id} succeeded`);
    const run = await json(['runs', 'get', sms.id]);
    expect(run.candidates).toHaveLength(4);
    for (const c of run.candidates) expect(c.config).toMatchObject({ epochs: 0.2, batchSize: 64, learningRate: 0.05 });
    const report = await ok(['runs', 'report', sms.id, '-o', join(dir, 'sms.svg')]);
    expect(report.stdout).toMatch(/^2\s+90\.0%\s+\S+\s+succeeded\s+2\s.*soup \(uniform\)/m);
    expect(readFileSync(join(dir, 'sms.svg'), 'utf8')).toMatch(/^<svg/);
  }, 300_000);

  it('refuses a run without a kind or file, and numbers that are not numbers, as usage errors', async () => {
    const none = await cli(['runs', 'create', '--model', '00000000-0000-4000-8000-000000000000'], env);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('--kind train|retrain|imp|sms');
    const nan = await cli(['runs', 'create', '--kind', 'train', '--epochs', 'lots'], env);
    expect(nan.code).toBe(2);
    expect(nan.stderr).toContain('--epochs must be a number, not "lots"');
    const badCorruption = await cli(['models', 'evaluate', '00000000-0000-4000-8000-000000000000', '--dataset', 'mnist', '--corruption', 'noise:9'], env);
    expect(badCorruption.code).toBe(2);
  });
});
