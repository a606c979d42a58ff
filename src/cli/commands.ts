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
  type components,
  createSparsoupClient,
  downloadModel,
  downloadModelFile,
  type Model,
  type PruneRequest,
  type Run,
  runEvents,
  runReportSvg,
  type SparsoupClient,
  unwrap,
  uploadDataset,
  uploadModelFiles,
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
type Schemas = components['schemas'];

export interface Command {
  args: string;
  summary: string;
  /** Shown by `sparsoup <group> <command> --help`: what the options mean and an example. */
  help?: string;
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
  architecture: { type: 'string' },
  split: { type: 'string' },
  corruption: { type: 'string', multiple: true },
  kind: { type: 'string' },
  model: { type: 'string' },
  mask: { type: 'string' },
  vary: { type: 'string' },
  values: { type: 'string' },
  epochs: { type: 'string' },
  'batch-size': { type: 'string' },
  'learning-rate': { type: 'string' },
  schedule: { type: 'string' },
  optimizer: { type: 'string' },
  'goal-sparsity': { type: 'string' },
  phases: { type: 'string' },
  pruning: { type: 'string' },
  soup: { type: 'string' },
  'epochs-multiplier': { type: 'string' },
  images: { type: 'string' },
  labels: { type: 'string' },
  'test-images': { type: 'string' },
  'test-labels': { type: 'string' },
  classes: { type: 'string' },
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
  const index = info.isDirectory() ? join(path, 'model.safetensors.index.json') : null;
  if (index && (await stat(index).catch(() => null))) {
    // A Hugging Face sharded folder: the index first, then every shard its weight_map names.
    const text = await readFile(index, 'utf8');
    let shards: string[];
    try {
      shards = [...new Set(Object.values((JSON.parse(text) as { weight_map?: Record<string, string> }).weight_map ?? {}))];
    } catch (err) {
      throw new UsageError(`${index} is not JSON: ${(err as Error).message}`);
    }
    const files: [string, Blob][] = [['model.safetensors.index.json', new Blob([text], { type: 'application/json' })]];
    for (const s of shards) files.push([s, await openAsBlob(join(path, s))]);
    model = await uploadModelFiles(client(ctx), name, files);
  } else if (isTfjs) {
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
  if (format !== 'safetensors' && format !== 'tfjs' && format !== 'files') throw new UsageError('--format is safetensors, tfjs or files');
  const api = client(ctx);
  const written: string[] = [];
  if (format === 'files') {
    // Every file of the model as the service lists it: a sharded model's index and shards.
    const folder = (values.output as string | undefined) ?? id;
    await mkdir(folder, { recursive: true });
    const files = await unwrap(api.GET('/models/{id}/files', { params: { path: { id } } }));
    for (const f of files) {
      const file = join(folder, basename(f.name));
      await pipeline(Readable.fromWeb((await downloadModelFile(api, id, f.name)) as WebReadableStream<Uint8Array>), createWriteStream(file));
      written.push(file);
    }
  } else if (format === 'safetensors') {
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

/** Flags of `runs create` and the field of POST /runs each sets (training fields go under `training`). */
const RUN_FLAGS: [flag: string, field: string, kind: 'string' | 'number'][] = [
  ['kind', 'kind', 'string'],
  ['model', 'modelId', 'string'],
  ['dataset', 'datasetId', 'string'],
  ['mask', 'maskId', 'string'],
  ['m', 'm', 'number'],
  ['vary', 'vary', 'string'],
  ['goal-sparsity', 'goalSparsity', 'number'],
  ['phases', 'phases', 'number'],
  ['epochs-multiplier', 'epochsMultiplier', 'number'],
];
const TRAINING_FLAGS: [flag: string, field: string, kind: 'string' | 'number'][] = [
  ['epochs', 'epochs', 'number'],
  ['batch-size', 'batchSize', 'number'],
  ['learning-rate', 'learningRate', 'number'],
  ['schedule', 'schedule', 'string'],
  ['optimizer', 'optimizer', 'string'],
  ['seed', 'seed', 'number'],
];

/** The body of POST /runs: the file (-f, JSON or YAML) if given, then every flag on top of it. */
export async function runBody(args: string[], values: Values): Promise<CreateRun> {
  const file = (values.file as string | undefined) ?? args[0];
  let body: Record<string, unknown> = {};
  if (file) {
    const text = await readFile(file, 'utf8');
    const yaml = /\.ya?ml$/i.test(file);
    let parsed: unknown;
    try {
      parsed = yaml ? parseYaml(text) : JSON.parse(text);
    } catch (err) {
      throw new UsageError(`${file} is not valid ${yaml ? 'YAML' : 'JSON'}: ${(err as Error).message}`);
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new UsageError(`${file} must hold one object (the body of POST /runs)`);
    body = parsed as Record<string, unknown>;
  }
  const read = (flag: string, kind: 'string' | 'number') => (kind === 'number' ? number(values, flag) : (values[flag] as string | undefined));
  for (const [flag, field, kind] of RUN_FLAGS) if (values[flag] !== undefined) body[field] = read(flag, kind);
  const training: Record<string, unknown> = { ...((body.training as Record<string, unknown> | undefined) ?? {}) };
  for (const [flag, field, kind] of TRAINING_FLAGS) if (values[flag] !== undefined) training[field] = read(flag, kind);
  if (Object.keys(training).length) body.training = training;
  if (values.values !== undefined) body.values = String(values.values).split(',').map((v) => (v.trim() !== '' && Number.isFinite(Number(v)) ? Number(v) : v));
  if (values.pruning !== undefined) body.pruning = { ...((body.pruning as object | undefined) ?? {}), method: values.pruning };
  if (values.soup !== undefined) body.soup = { ...((body.soup as object | undefined) ?? {}), method: values.soup };
  if (!file && values.kind === undefined) throw new UsageError('give the run as -f run.json | run.yaml, or as flags starting with --kind train|retrain|imp|sms');
  if (body.kind === undefined) throw new UsageError('the run needs a kind (--kind train|retrain|imp|sms, or "kind" in the file)');
  return body as unknown as CreateRun;
}

async function runsCreate(ctx: Context, args: string[], values: Values) {
  const body = await runBody(args, values);
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

// ---- templates, evaluations, masks, datasets ---------------------------------------------------

async function modelsTemplate(ctx: Context, _args: string[], values: Values) {
  const architecture = values.architecture as Schemas['CreateTemplateDto']['architecture'] | undefined;
  if (!architecture) throw new UsageError('--architecture is required (lenet-300-100, cnn-bn, resnet-small)');
  if (!values.dataset) throw new UsageError('--dataset is required (mnist, fashion-mnist, or an uploaded dataset id)');
  const body: Schemas['CreateTemplateDto'] = {
    architecture,
    datasetId: values.dataset as string,
    ...(values.seed !== undefined ? { seed: number(values, 'seed') } : {}),
    ...(values.name ? { name: values.name as string } : {}),
  };
  const model = await unwrap(client(ctx).POST('/models/templates', { body }));
  if (ctx.json) printJson(ctx, model);
  else print(ctx, `template ${modelLine(model)}`);
}

async function modelsEvaluate(ctx: Context, args: string[], values: Values) {
  const [id] = need(args, 1, 'the model id');
  if (!values.dataset) throw new UsageError('--dataset is required');
  const split = (values.split as 'train' | 'val' | 'test' | undefined) ?? 'test';
  if (!['train', 'val', 'test'].includes(split)) throw new UsageError('--split is train, val or test');
  const corruptions = ((values.corruption as string[] | undefined) ?? []).map((c) => {
    const match = /^([a-z-]+)(?::([1-5]))?$/.exec(c);
    if (!match) throw new UsageError(`--corruption is name or name:severity (1-5), not "${c}"`);
    return { name: match[1] as NonNullable<Schemas['CreateEvaluationDto']['corruptions']>[number]['name'], severity: Number(match[2] ?? 3) };
  });
  const body: Schemas['CreateEvaluationDto'] = {
    datasetId: values.dataset as string,
    split,
    ...(corruptions.length ? { corruptions } : {}),
    ...(values.seed !== undefined ? { seed: number(values, 'seed') } : {}),
  };
  const e = await unwrap(client(ctx).POST('/models/{id}/evaluations', { params: { path: { id } }, body }));
  if (ctx.json) return printJson(ctx, e);
  print(ctx, `evaluation ${e.id}  ${e.datasetId}/${e.split}  ${e.count.toLocaleString('en')} samples  accuracy ${pct(e.accuracy)}  loss ${num(e.loss)}  ECE ${num(e.ece)}  worst class ${e.worstClass ?? '-'} (${pct(e.worstClassAccuracy)})`);
  if (e.corruptions.length) print(ctx, table(['corruption', 'severity', 'accuracy'], e.corruptions.map((c) => [c.name, c.severity, pct(c.accuracy)])));
}

function maskLine(m: Schemas['MaskDto']): string {
  return `${m.id}  ${m.method}  sparsity ${pct(m.sparsity)}  kept ${m.keptCount.toLocaleString('en')} of ${m.prunableCount.toLocaleString('en')}  hash ${m.hash.slice(0, 12)}  source ${m.sourceModelId ?? '-'}`;
}

async function masksList(ctx: Context, _args: string[], values: Values) {
  const query = { limit: number(values, 'limit') ?? 50, ...(values.model ? { sourceModelId: values.model as string } : {}) };
  const page = await unwrap(client(ctx).GET('/masks', { params: { query } }));
  if (ctx.json) return printJson(ctx, page);
  print(ctx, table(['id', 'method', 'sparsity', 'kept', 'hash', 'source model'], page.items.map((m) => [m.id, m.method, pct(m.sparsity), m.keptCount, m.hash.slice(0, 12), m.sourceModelId])));
  if (page.total > page.items.length) print(ctx, `(${page.items.length} of ${page.total})`);
}

async function masksGet(ctx: Context, args: string[]) {
  const [id] = need(args, 1, 'the mask id');
  const m = await unwrap(client(ctx).GET('/masks/{id}', { params: { path: { id } } }));
  if (ctx.json) return printJson(ctx, m);
  print(ctx, maskLine(m));
  print(ctx, table(['tensor', 'shape', 'kept', 'sparsity'], m.tensors.map((t) => [t.name, `[${t.shape.join(', ')}]`, t.kept, pct(t.sparsity)])));
}

async function masksDiff(ctx: Context, args: string[]) {
  const [id, otherId] = need(args, 2, 'the two mask ids');
  const d = await unwrap(client(ctx).GET('/masks/{id}/diff/{otherId}', { params: { path: { id, otherId } } }));
  if (ctx.json) return printJson(ctx, d);
  print(ctx, `${d.equal ? 'equal' : 'different'}  hamming ${d.hamming.toLocaleString('en')}`);
  print(ctx, table(['tensor', 'hamming', 'kept only in first', 'kept only in second'], d.tensors.map((t) => [t.name, t.hamming, t.keptOnlyInA, t.keptOnlyInB])));
  for (const name of d.missing) print(ctx, `only in the first: ${name}`);
  for (const name of d.extra) print(ctx, `only in the second: ${name}`);
  for (const s of d.shapeDifferences) print(ctx, `shape differs: ${JSON.stringify(s)}`);
}

function datasetLine(d: Schemas['DatasetDto']): string {
  return `${d.id}  ${d.name}  ${d.source}${d.format ? ` (${d.format})` : ''}  [${d.inputShape.join('×')}]  ${d.classes} classes  train ${d.splits.train.toLocaleString('en')} / val ${d.splits.val.toLocaleString('en')} / test ${d.splits.test.toLocaleString('en')}`;
}

async function datasetsList(ctx: Context, _args: string[], values: Values) {
  const page = await unwrap(client(ctx).GET('/datasets', { params: { query: { limit: number(values, 'limit') ?? 50 } } }));
  if (ctx.json) return printJson(ctx, page);
  print(ctx, table(['id', 'name', 'source', 'input', 'classes', 'train', 'val', 'test'], page.items.map((d) => [d.id, d.name, d.source, d.inputShape.join('×'), d.classes, d.splits.train, d.splits.val, d.splits.test])));
}

async function datasetsUpload(ctx: Context, args: string[], values: Values) {
  const classes = number(values, 'classes');
  let body: Record<string, Blob> | Blob;
  let fallbackName: string;
  if (args[0]) {
    if (values.images || values.labels) throw new UsageError('give one .npz / safetensors file, or --images and --labels, not both');
    body = await openAsBlob(args[0]);
    fallbackName = basename(args[0], extname(args[0]));
  } else {
    if (!values.images || !values.labels) throw new UsageError('give a .npz or safetensors file, or an IDX pair as --images and --labels');
    const parts: [string, string][] = [['images', 'images'], ['labels', 'labels'], ['testImages', 'test-images'], ['testLabels', 'test-labels']];
    body = {};
    for (const [part, flag] of parts) if (values[flag]) body[part] = await openAsBlob(values[flag] as string);
    fallbackName = basename(values.images as string).replace(/[-.]?(idx\d-ubyte|images).*$/i, '') || 'dataset';
  }
  const d = await uploadDataset(client(ctx), (values.name as string | undefined) ?? fallbackName, body, classes === undefined ? {} : { classes });
  if (ctx.json) printJson(ctx, d);
  else print(ctx, `uploaded ${datasetLine(d)}`);
}

const RUN_HELP = `A run is the body of POST /runs: from a file (-f run.json or run.yaml), from flags, or both (flags win).
  --kind train|retrain|imp|sms   train: dense training of --model; retrain: m candidates under a mask;
                                 imp / sms: T phases of prune → retrain (→ soup) toward --goal-sparsity
  --model <id>  --dataset <id>   the starting model (a template for train) and the dataset
  --mask <id>                    retrain: the mask to keep (default: the model's own zeros)
  --m <n>  --vary seed|…  --values a,b,c   retrain / sms: candidates and what differs between them
  --goal-sparsity <S>  --phases <T>  --pruning magnitude-global|magnitude-layerwise|random
  --soup uniform|greedy          sms: how each phase merges its candidates
  --epochs-multiplier <k>        imp: k× the retraining epochs
  --epochs <e> (fractional: 0.2)  --batch-size  --learning-rate  --schedule constant|linear|cosine|allr
  --optimizer sgd|adam  --seed   the training configuration

examples:
  sparsoup runs create --kind train --model <template id> --dataset fashion-mnist --epochs 0.5
  sparsoup runs create --kind sms --model <dense id> --dataset fashion-mnist --goal-sparsity 0.9 --phases 2 --m 2 --epochs 0.1
  sparsoup runs create -f run.yaml --epochs 0.2`;

export const COMMANDS: Record<string, Command> = {
  'models template': {
    args: '--architecture lenet-300-100|cnn-bn|resnet-small --dataset <id> [--seed n] [--name]',
    summary: 'an untrained model sized for a dataset (the place to start)',
    help: 'example:\n  sparsoup models template --architecture lenet-300-100 --dataset fashion-mnist --seed 1',
    options: ['architecture', 'dataset', 'seed', 'name'],
    run: modelsTemplate,
  },
  'models upload': { args: '<file.safetensors | model.json folder | sharded safetensors folder> [--name]', summary: 'upload a checkpoint', help: 'examples:\n  sparsoup models upload model.safetensors --name resnet\n  sparsoup models upload ./my-tfjs-model          # a folder with model.json and its weight files\n  sparsoup models upload ./my-hf-model            # model.safetensors.index.json and its shards', options: ['name'], run: modelsUpload },
  'models prune': {
    args: '<id> --method <m> [--sparsity s] [--n --m --seed --include --exclude]',
    summary: 'prune into a new model and mask',
    help: 'methods: magnitude-global, magnitude-layerwise, random (--seed), n-of-m (--n 2 --m 4)\nexample:\n  sparsoup models prune <model id> --method magnitude-global --sparsity 0.9',
    options: ['method', 'sparsity', 'n', 'm', 'seed', 'include', 'exclude', 'name'],
    run: modelsPrune,
  },
  'models evaluate': {
    args: '<id> --dataset <id> [--split test|val|train] [--corruption name:severity …] [--seed n]',
    summary: 'accuracy, loss, ECE and per-class accuracy (optionally under corruptions)',
    help: 'corruptions: gaussian-noise, shot-noise, impulse-noise, blur, contrast, brightness, rotation, translation, zoom (severity 1-5, default 3)\nexample:\n  sparsoup models evaluate <model id> --dataset fashion-mnist --corruption gaussian-noise:3 --corruption rotation:2',
    options: ['dataset', 'split', 'corruption', 'seed'],
    run: modelsEvaluate,
  },
  'models download': { args: '<id> [--format safetensors|tfjs|files] [-o file|folder]', summary: 'download a model', help: 'example:\n  sparsoup models download <model id> -o soup.safetensors', options: ['format', 'output'], run: modelsDownload },
  'models list': { args: '[--limit n]', summary: 'list models with their lineage', help: 'example:\n  sparsoup models list --limit 10', options: ['limit'], run: modelsList },
  'models get': { args: '<id>', summary: 'a model and its tensors', help: 'example:\n  sparsoup models get <model id>', options: [], run: (ctx, args) => modelsGet(ctx, args) },
  'masks list': { args: '[--model <source model id>] [--limit n]', summary: 'list masks', help: 'example:\n  sparsoup masks list --model <dense id>', options: ['model', 'limit'], run: masksList },
  'masks get': { args: '<id>', summary: 'a mask and its tensors', help: 'example:\n  sparsoup masks get <mask id>', options: [], run: (ctx, args) => masksGet(ctx, args) },
  'masks diff': { args: '<id> <otherId>', summary: 'per-tensor Hamming distance between two masks', help: 'example:\n  sparsoup masks diff <mask id> <other mask id>', options: [], run: (ctx, args) => masksDiff(ctx, args) },
  'datasets list': { args: '[--limit n]', summary: 'list datasets (built-ins mnist, fashion-mnist)', help: 'example:\n  sparsoup datasets list', options: ['limit'], run: datasetsList },
  'datasets upload': {
    args: '<file.npz | file.safetensors> | --images <idx> --labels <idx> [--test-images --test-labels] [--name] [--classes n]',
    summary: 'upload a dataset',
    help: 'a .npz or safetensors file holds x (N × …) and y (N labels), optionally x_test, y_test; or an IDX pair\nexamples:\n  sparsoup datasets upload digits.npz --name digits\n  sparsoup datasets upload --images train-images-idx3-ubyte --labels train-labels-idx1-ubyte --name digits',
    options: ['name', 'classes', 'images', 'labels', 'test-images', 'test-labels'],
    run: datasetsUpload,
  },
  'soups create': {
    args: '--method uniform|weighted|greedy <ids…> [--weights --dataset]',
    summary: 'merge models into a soup',
    help: 'greedy scores on the val split of --dataset (--comparison ">=" or ">"); weighted needs --weights 0.5,0.3,0.2\nexample:\n  sparsoup soups create --method greedy --dataset fashion-mnist <c1> <c2> <c3>',
    options: ['method', 'weights', 'dataset', 'comparison', 'name'],
    run: soupsCreate,
  },
  'runs create': {
    args: '[-f run.json | run.yaml] [--kind train|retrain|imp|sms --model <id> --dataset <id> …]',
    summary: 'start a run (the body of POST /runs) from a file or from flags',
    help: RUN_HELP,
    options: ['file', ...RUN_FLAGS.map(([f]) => f), ...TRAINING_FLAGS.map(([f]) => f), 'values', 'pruning', 'soup'],
    run: runsCreate,
  },
  'runs list': { args: '[--limit n]', summary: 'list runs', help: 'example:\n  sparsoup runs list', options: ['limit'], run: runsList },
  'runs get': { args: '<id>', summary: 'a run and its candidates', help: 'example:\n  sparsoup runs get <run id>', options: [], run: (ctx, args) => runsGet(ctx, args) },
  'runs watch': { args: '<id>', summary: 'live progress bars until the run finishes (exit 1 unless it succeeded)', help: 'example:\n  sparsoup runs watch <run id>', options: [], run: (ctx, args) => runsWatch(ctx, args) },
  'runs report': { args: '<id> [-o report.svg] [--metric test|val]', summary: 'the report table; saves the plot', help: 'example:\n  sparsoup runs report <run id> -o report.svg', options: ['output', 'metric'], run: runsReport },
};
