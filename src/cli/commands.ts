import { createWriteStream, openAsBlob } from 'node:fs';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { parse as parseYaml } from 'yaml';
import {
  ApiError,
  type CreateRun,
  type CreateSoup,
  createSparsoupClient,
  downloadModel,
  type Model,
  type PruneRequest,
  type Run,
  runEvents,
  runReportSvg,
  type SparsoupClient,
  unwrap,
  uploadSafetensors,
  uploadTfjs,
} from '../../clients/typescript/index.js';
import { BarBoard, type BarState, bytes, num, pct, short, table } from './output.js';

export class UsageError extends Error {}

export interface Context {
  url: string;
  apiKey: string | undefined;
  json: boolean;
  out: NodeJS.WriteStream;
  err: NodeJS.WriteStream;
}

type Values = Record<string, string | boolean | string[] | undefined>;

export interface Command {
  args: string;
  summary: string;
  /** The command's own options (beyond --url, --api-key, --json, --help). */
  options: string[];
  run(ctx: Context, args: string[], values: Values): Promise<number | undefined | void>;
}

/** Every option any command takes; each command says which are its own. */
export const OPTIONS = {
  url: { type: 'string' },
  'api-key': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  name: { type: 'string' },
  method: { type: 'string' },
  sparsity: { type: 'string' },
  n: { type: 'string' },
  m: { type: 'string' },
  seed: { type: 'string' },
  include: { type: 'string', multiple: true },
  exclude: { type: 'string', multiple: true },
  format: { type: 'string' },
  output: { type: 'string', short: 'o' },
  file: { type: 'string', short: 'f' },
  dataset: { type: 'string' },
  weights: { type: 'string' },
  comparison: { type: 'string' },
  metric: { type: 'string' },
  limit: { type: 'string' },
} as const;

const client = (ctx: Context): SparsoupClient => createSparsoupClient({ baseUrl: ctx.url, apiKey: ctx.apiKey });
function print(ctx: Context, text: string): void {
  ctx.out.write(`${text}\n`);
}
function printJson(ctx: Context, value: unknown): void {
  ctx.out.write(`${JSON.stringify(value, null, 2)}\n`);
}

function need(args: string[], count: number, what: string): string[] {
  if (args.length < count) throw new UsageError(`missing ${what}`);
  return args;
}

function number(values: Values, name: string): number | undefined {
  const v = values[name];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || v.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${name} must be a number, not "${v}"`);
  return n;
}

function modelLine(m: Model): string {
  return `${m.id}  ${m.name}  ${m.format}  ${m.paramCount.toLocaleString('en')} params  ${bytes(m.sizeBytes)}  sparsity ${pct(m.sparsity)} (prunable ${pct(m.prunableSparsity)})`;
}

// ---- models ---------------------------------------------------------------------------------

async function modelsUpload(ctx: Context, args: string[], values: Values) {
  const [path] = need(args, 1, 'the file or folder to upload');
  const info = await stat(path);
  const isTfjs = info.isDirectory() || basename(path) === 'model.json' || extname(path) === '.json';
  const modelJsonPath = info.isDirectory() ? join(path, 'model.json') : path;
  const name = (values.name as string | undefined) ?? (info.isDirectory() ? basename(resolve(path)) : isTfjs ? basename(dirname(resolve(path))) : basename(path, extname(path)));
  let model: Model;
  if (isTfjs) {
    // As tf.io.http sends it: model.json, then every weight file of the manifest, in order, as one part.
    const text = await readFile(modelJsonPath, 'utf8');
    let manifest: { paths?: string[] }[];
    try {
      manifest = (JSON.parse(text) as { weightsManifest?: { paths?: string[] }[] }).weightsManifest ?? [];
    } catch (err) {
      throw new UsageError(`${modelJsonPath} is not JSON: ${(err as Error).message}`);
    }
    const folder = dirname(modelJsonPath);
    const parts = await Promise.all(manifest.flatMap((g) => g.paths ?? []).map((p) => openAsBlob(join(folder, p))));
    model = await uploadTfjs(client(ctx), name, new Blob([text], { type: 'application/json' }), new Blob(parts));
  } else {
    model = await uploadSafetensors(client(ctx), name, await openAsBlob(path));
  }
  if (ctx.json) printJson(ctx, model);
  else print(ctx, `uploaded ${modelLine(model)}`);
}

async function modelsPrune(ctx: Context, args: string[], values: Values) {
  const [id] = need(args, 1, 'the model id');
  const method = values.method as PruneRequest['method'] | undefined;
  if (!method) throw new UsageError('--method is required (magnitude-global, magnitude-layerwise, random, n-of-m)');
  const body: PruneRequest = {
    method,
    ...(values.sparsity !== undefined ? { sparsity: number(values, 'sparsity') } : {}),
    ...(values.n !== undefined ? { n: number(values, 'n') } : {}),
    ...(values.m !== undefined ? { m: number(values, 'm') } : {}),
    ...(values.seed !== undefined ? { seed: number(values, 'seed') } : {}),
    ...(values.include ? { include: values.include as string[] } : {}),
    ...(values.exclude ? { exclude: values.exclude as string[] } : {}),
    ...(values.name ? { name: values.name as string } : {}),
  };
  const result = await unwrap(client(ctx).POST('/models/{id}/prune', { params: { path: { id } }, body }));
  if (ctx.json) return printJson(ctx, result);
  print(ctx, `pruned  ${modelLine(result.model)}`);
  print(ctx, `mask    ${result.mask.id}  ${result.mask.method}  kept ${result.mask.keptCount.toLocaleString('en')} of ${result.mask.prunableCount.toLocaleString('en')}  hash ${result.mask.hash.slice(0, 12)}`);
}

async function modelsDownload(ctx: Context, args: string[], values: Values) {
  const [id] = need(args, 1, 'the model id');
  const format = (values.format as string | undefined) ?? 'safetensors';
  if (format !== 'safetensors' && format !== 'tfjs') throw new UsageError('--format is safetensors or tfjs');
  const api = client(ctx);
  const written: string[] = [];
  if (format === 'safetensors') {
    const file = (values.output as string | undefined) ?? `${id}.safetensors`;
    await pipeline(Readable.fromWeb((await downloadModel(api, id, 'safetensors')) as WebReadableStream<Uint8Array>), createWriteStream(file));
    written.push(file);
  } else {
    // A folder that tf.loadLayersModel('file://…/model.json') reads.
    const folder = (values.output as string | undefined) ?? id;
    await mkdir(folder, { recursive: true });
    const modelJson = await unwrap(api.GET('/models/{id}/model.json', { params: { path: { id } } }));
    await writeFile(join(folder, 'model.json'), JSON.stringify(modelJson));
    await pipeline(Readable.fromWeb((await downloadModel(api, id, 'model.weights.bin')) as WebReadableStream<Uint8Array>), createWriteStream(join(folder, 'model.weights.bin')));
    written.push(join(folder, 'model.json'), join(folder, 'model.weights.bin'));
  }
  const sizes = await Promise.all(written.map(async (f) => ({ file: f, bytes: (await stat(f)).size })));
  if (ctx.json) printJson(ctx, { id, format, files: sizes });
  else for (const s of sizes) print(ctx, `wrote ${s.file} (${bytes(s.bytes)})`);
}

async function modelsList(ctx: Context, _args: string[], values: Values) {
  const page = await unwrap(client(ctx).GET('/models', { params: { query: { limit: number(values, 'limit') ?? 50 } } }));
  if (ctx.json) return printJson(ctx, page);
  print(ctx, table(['id', 'name', 'format', 'params', 'sparsity', 'parents', 'created'], page.items.map((m) => [m.id, m.name, m.format, m.paramCount, pct(m.sparsity), m.parentIds.map(short).join(',') || '-', String(m.createdAt)])));
  if (page.total > page.items.length) print(ctx, `(${page.items.length} of ${page.total})`);
}

async function modelsGet(ctx: Context, args: string[]) {
  const [id] = need(args, 1, 'the model id');
  const m = await unwrap(client(ctx).GET('/models/{id}', { params: { path: { id } } }));
  if (ctx.json) return printJson(ctx, m);
  print(ctx, modelLine(m));
  print(ctx, table(['tensor', 'dtype', 'shape', 'prunable', 'sparsity'], m.tensors.map((t) => [t.name, t.dtype, `[${t.shape.join(', ')}]`, t.prunable ? 'yes' : 'no', pct(t.sparsity)])));
}

// ---- soups ----------------------------------------------------------------------------------

async function soupsCreate(ctx: Context, args: string[], values: Values) {
  need(args, 1, 'the ids of the models to merge');
  const method = (values.method as CreateSoup['method'] | undefined) ?? 'uniform';
  const weights = values.weights === undefined ? undefined : String(values.weights).split(',').map(Number);
  if (weights?.some((w) => !Number.isFinite(w))) throw new UsageError('--weights is a comma-separated list of numbers');
  const body: CreateSoup = {
    modelIds: args,
    method,
    ...(weights ? { weights } : {}),
    ...(values.dataset ? { datasetId: values.dataset as string } : {}),
    ...(values.comparison ? { comparison: values.comparison as CreateSoup['comparison'] } : {}),
    ...(values.name ? { name: values.name as string } : {}),
  };
  const api = client(ctx);
  let soup = await unwrap(api.POST('/soups', { body }));
  // Greedy soups are built by a job: follow them to the end.
  while (soup.status === 'queued' || soup.status === 'running') {
    await new Promise((r) => setTimeout(r, 500));
    soup = await unwrap(api.GET('/soups/{id}', { params: { path: { id: soup.id } } }));
  }
  if (ctx.json) printJson(ctx, soup);
  else {
    print(ctx, `soup ${soup.id}  ${soup.method}  ${soup.status}  result ${soup.resultModelId ?? '-'}  sparsity ${pct(soup.sparsity)}  val ${pct(soup.valAccuracy)}`);
    if (soup.steps.length) print(ctx, table(['candidate', 'score', 'soup score', 'accepted'], soup.steps.map((s) => [s.modelId, pct(s.score), pct(s.soupScore), s.accepted ? 'yes' : 'no'])));
    if (soup.error) print(ctx, `error: ${soup.error}`);
  }
  return soup.status === 'succeeded' ? 0 : 1;
}

// ---- runs -----------------------------------------------------------------------------------

async function runsCreate(ctx: Context, args: string[], values: Values) {
  const file = (values.file as string | undefined) ?? args[0];
  if (!file) throw new UsageError('give the run as -f run.json or -f run.yaml');
  const text = await readFile(file, 'utf8');
  let body: CreateRun;
  try {
    body = (/\.ya?ml$/i.test(file) ? parseYaml(text) : JSON.parse(text)) as CreateRun;
  } catch (err) {
    throw new UsageError(`${file} is not valid ${/\.ya?ml$/i.test(file) ? 'YAML' : 'JSON'}: ${(err as Error).message}`);
  }
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new UsageError(`${file} must hold one object (the body of POST /runs)`);
  const run = await unwrap(client(ctx).POST('/runs', { body }));
  if (ctx.json) printJson(ctx, run);
  else print(ctx, `run ${run.id}  ${run.kind}  ${run.status}  ${run.candidates.length} candidates\nfollow it: sparsoup runs watch ${run.id}`);
}

async function runsGet(ctx: Context, args: string[]) {
  const [id] = need(args, 1, 'the run id');
  const run = await unwrap(client(ctx).GET('/runs/{id}', { params: { path: { id } } }));
  if (ctx.json) return printJson(ctx, run);
  printRun(ctx, run);
}

function printRun(ctx: Context, run: Run) {
  print(ctx, `run ${run.id}  ${run.kind}  ${run.status}${run.error ? `  error: ${run.error}` : ''}`);
  print(ctx, table(['candidate', 'phase', 'status', 'seed', 'attempts', 'val', 'test', 'result'], run.candidates.map((c) => [c.index, c.phase, c.status, (c.config as { seed?: number }).seed, c.attempts, pct(c.valAccuracy), pct(c.testAccuracy), c.resultModelId])));
}

async function runsList(ctx: Context, _args: string[], values: Values) {
  const page = await unwrap(client(ctx).GET('/runs', { params: { query: { limit: number(values, 'limit') ?? 50 } } }));
  if (ctx.json) return printJson(ctx, page);
  print(ctx, table(['id', 'kind', 'status', 'candidates', 'created', 'finished'], page.items.map((r) => [r.id, r.kind, r.status, r.candidates.length, String(r.createdAt), r.finishedAt ? String(r.finishedAt) : null])));
}

/** Live bars from the run's event stream, one per candidate; returns when `run-finished` arrives. */
async function runsWatch(ctx: Context, args: string[]) {
  const [id] = need(args, 1, 'the run id');
  const api = client(ctx);
  let run = await unwrap(api.GET('/runs/{id}', { params: { path: { id } } }));
  const bars = new Map<string, BarState>();
  const label = (c: { phase: number; index: number }) => (run.phases.length ? `p${c.phase} c${c.index}` : `candidate ${c.index}`);
  const sync = () => {
    for (const c of run.candidates) {
      // The stream replays the run's history from the start: the bars begin where the run began.
      if (!bars.has(c.id)) bars.set(c.id, { label: label(c), status: 'queued', step: 0, steps: c.progress?.steps ?? 0, detail: '' });
    }
  };
  sync();
  const board = new BarBoard(ctx.out);
  let status: string = run.status;
  let header = `run ${short(run.id)} ${run.kind}: ${status}`;
  if (!ctx.json) board.render(header, [...bars.values()]);
  for await (const e of runEvents(api, id)) {
    if (ctx.json) {
      ctx.out.write(`${JSON.stringify(e)}\n`);
      if (e.type === 'run-finished') status = String(e.data.status ?? status);
      continue;
    }
    const cid = e.data.candidateId ?? undefined;
    if (cid && !bars.has(cid)) {
      run = await unwrap(api.GET('/runs/{id}', { params: { path: { id } } }));
      sync();
    }
    const b = cid ? bars.get(cid) : undefined;
    const d = e.data as Record<string, number | string | null | undefined>;
    if (b) {
      if (e.type === 'candidate-started') Object.assign(b, { status: 'running', step: 0, detail: `attempt ${d.attempt ?? 1}` });
      else if (e.type === 'progress') {
        Object.assign(b, { status: 'running', step: Number(d.step ?? 0), steps: Number(d.steps ?? b.steps) });
        b.detail = [`epoch ${d.epoch ?? '-'}`, `step ${d.step}/${d.steps}`, typeof d.loss === 'number' ? `loss ${num(d.loss)}` : '', typeof d.samplesPerSecond === 'number' ? `${Math.round(d.samplesPerSecond)}/s` : ''].filter(Boolean).join('  ');
      } else if (e.type === 'candidate-succeeded') Object.assign(b, { status: 'succeeded', step: b.steps, detail: `val ${pct(d.valAccuracy as number)}  test ${pct(d.testAccuracy as number)}` });
      else if (e.type === 'candidate-failed' || e.type === 'candidate-cancelled') Object.assign(b, { status: e.type.slice('candidate-'.length), detail: String(d.error ?? '') });
      else if (e.type === 'candidate-retry' || e.type === 'candidate-requeued') Object.assign(b, { status: 'queued', detail: `${e.type.slice('candidate-'.length)}: ${d.error ?? d.reason ?? ''}` });
    }
    if (e.type.startsWith('phase-')) header = `run ${short(run.id)} ${run.kind}: phase ${d.phase} ${e.type.slice('phase-'.length)}${typeof d.sparsity === 'number' ? ` (sparsity ${pct(d.sparsity, 1)})` : ''}`;
    if (e.type === 'run-finished') {
      status = String(d.status ?? status);
      header = `run ${short(run.id)} ${run.kind}: ${status}${d.error ? ` (${d.error})` : ''}`;
    }
    board.render(header, [...bars.values()]);
  }
  if (!ctx.json) print(ctx, `run ${run.id} ${status}`);
  return status === 'succeeded' ? 0 : 1;
}

async function runsReport(ctx: Context, args: string[], values: Values) {
  const [id] = need(args, 1, 'the run id');
  const api = client(ctx);
  const report = await unwrap(api.GET('/runs/{id}/report', { params: { path: { id } } }));
  const metric = (values.metric as 'test' | 'val' | undefined) ?? 'test';
  if (metric !== 'test' && metric !== 'val') throw new UsageError('--metric is test or val');
  let plot: string | null = null;
  const file = (values.output as string | undefined) ?? 'report.svg';
  try {
    await writeFile(file, await runReportSvg(api, id, { metric }));
    plot = file;
  } catch (err) {
    // An older service without the plot: the table alone.
    if (!(err instanceof ApiError && err.status === 404 && !/run/i.test(err.problem.detail))) throw err;
  }
  if (ctx.json) return printJson(ctx, { ...report, plot });
  print(ctx, `${report.label}  (${report.kind}, ${report.status}, dataset ${report.datasetId})`);
  print(
    ctx,
    table(
      ['phase', 'sparsity', 'actual', 'status', 'candidates', 'mean val', 'mean test', 'best test', 'ensemble test', 'result', 'result test', 'ECE', 'L2'],
      report.phases.map((p) => [
        p.index,
        pct(p.sparsity, 1),
        pct(p.actualSparsity, 1),
        p.status,
        p.candidates.length,
        pct(p.candidateMean.valAccuracy),
        pct(p.candidateMean.testAccuracy),
        pct(p.candidateBest.testAccuracy),
        pct(p.ensembleTestAccuracy),
        p.soup ? `soup (${p.soup.method})` : p.result ? 'single' : '-',
        pct(p.result?.testAccuracy),
        num(p.result?.ece),
        num(p.meanL2Distance, 3),
      ]),
    ),
  );
  for (const p of report.phases) {
    if (report.phases.length > 1) print(ctx, `\nphase ${p.index}`);
    print(ctx, table(['candidate', 'seed', 'status', 'val', 'test', 'model'], p.candidates.map((c) => [c.index, c.seed, c.status, pct(c.valAccuracy), pct(c.testAccuracy), c.resultModelId])));
  }
  if (plot) print(ctx, `\nsaved the accuracy-against-sparsity plot to ${plot}`);
}

export const COMMANDS: Record<string, Command> = {
  'models upload': { args: '<file.safetensors | model.json folder> [--name]', summary: 'upload a checkpoint', options: ['name'], run: modelsUpload },
  'models prune': { args: '<id> --method <m> [--sparsity s] [--n --m --seed --include --exclude]', summary: 'prune into a new model and mask', options: ['method', 'sparsity', 'n', 'm', 'seed', 'include', 'exclude', 'name'], run: modelsPrune },
  'models download': { args: '<id> [--format safetensors|tfjs] [-o file|folder]', summary: 'download a model', options: ['format', 'output'], run: modelsDownload },
  'models list': { args: '[--limit n]', summary: 'list models with their lineage', options: ['limit'], run: modelsList },
  'models get': { args: '<id>', summary: 'a model and its tensors', options: [], run: (ctx, args) => modelsGet(ctx, args) },
  'soups create': { args: '--method uniform|weighted|greedy <ids…> [--weights --dataset]', summary: 'merge models into a soup', options: ['method', 'weights', 'dataset', 'comparison', 'name'], run: soupsCreate },
  'runs create': { args: '-f <run.json | run.yaml>', summary: 'start a run (the body of POST /runs)', options: ['file'], run: runsCreate },
  'runs list': { args: '[--limit n]', summary: 'list runs', options: ['limit'], run: runsList },
  'runs get': { args: '<id>', summary: 'a run and its candidates', options: [], run: (ctx, args) => runsGet(ctx, args) },
  'runs watch': { args: '<id>', summary: 'live progress bars until the run finishes (exit 1 unless it succeeded)', options: [], run: (ctx, args) => runsWatch(ctx, args) },
  'runs report': { args: '<id> [-o report.svg] [--metric test|val]', summary: 'the report table; saves the plot', options: ['output', 'metric'], run: runsReport },
};
