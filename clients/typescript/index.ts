/**
 * A typed client for the sparsoup HTTP API. The types (`schema.ts`) are generated from
 * openapi/openapi.json by openapi-typescript (`npm run client`); requests go through openapi-fetch,
 * so every path, parameter and body is checked against the spec at compile time. The helpers below
 * cover what a JSON client cannot say by itself: binary uploads, downloads and the run event stream.
 */
import createClient, { type Client, type Middleware } from 'openapi-fetch';
import type { components, paths } from './schema.js';

export type { components, operations, paths } from './schema.js';

type Schemas = components['schemas'];
export type Model = Schemas['ModelDto'];
export type Mask = Schemas['MaskDto'];
export type Dataset = Schemas['DatasetDto'];
export type Run = Schemas['RunDto'];
export type Candidate = Schemas['CandidateDto'];
/** POST /runs's body: one of the four kinds, told apart by `kind`. */
export type CreateRun = Schemas['TrainRunDto'] | Schemas['RetrainRunDto'] | Schemas['ImpRunDto'] | Schemas['SmsRunDto'];
export type TrainingConfig = Schemas['TrainingConfigDto'];
export type Soup = Schemas['SoupDto'];
export type CreateSoup = Schemas['CreateSoupDto'];
export type RunReport = Schemas['RunReportDto'];
export type PruneRequest = Schemas['PruneModelDto'];
export type WebhookDelivery = Schemas['WebhookDeliveryDto'];

export type SparsoupClient = Client<paths>;

export interface SparsoupClientOptions {
  /** e.g. http://localhost:3000 */
  baseUrl: string;
  /** Sent as `Authorization: Bearer <key>` when the service has API_KEYS. */
  apiKey?: string;
  fetch?: (input: Request) => Promise<Response>;
}

export function createSparsoupClient(opts: SparsoupClientOptions): SparsoupClient {
  const client = createClient<paths>({ baseUrl: opts.baseUrl.replace(/\/+$/, ''), ...(opts.fetch ? { fetch: opts.fetch } : {}) });
  if (opts.apiKey) {
    const auth: Middleware = {
      onRequest({ request }) {
        request.headers.set('authorization', `Bearer ${opts.apiKey}`);
        return request;
      },
    };
    client.use(auth);
  }
  return client;
}

/** An RFC 9457 problem, as every sparsoup error is. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance?: string;
  requestId?: string;
  [extension: string]: unknown;
}

/** A non-2xx answer. `problem.detail` says what was wrong in words meant for a person. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Problem,
  ) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.name = 'ApiError';
  }
}

function toProblem(error: unknown, response: Response): Problem {
  if (error && typeof error === 'object' && 'status' in error) return error as Problem;
  const text = typeof error === 'string' ? error : '';
  return { type: 'about:blank', title: response.statusText || 'Error', status: response.status, detail: text.slice(0, 500) || `HTTP ${response.status} ${response.statusText}` };
}

/** The data of a successful answer, or an ApiError carrying the problem. */
export async function unwrap<T>(call: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  const { data, error, response } = await call;
  if (!response.ok) throw new ApiError(response.status, toProblem(error, response));
  return data as T;
}

// Binary bodies: the spec says "binary" (a string to the type generator); these pass bytes through.
const asIs = (body: unknown) => body;

/** POST /models with a safetensors file (bytes, or a Blob such as `fs.openAsBlob(path)`, streamed from disk). */
export function uploadSafetensors(client: SparsoupClient, name: string, body: Uint8Array | Blob): Promise<Model> {
  return unwrap(
    client.POST('/models', {
      params: { query: { name } },
      body: body as unknown as string,
      bodySerializer: asIs,
      headers: { 'content-type': 'application/octet-stream' },
    }),
  );
}

/** POST /models with a TensorFlow.js layers model, as `tf.io.http` sends it (multipart `model.json` + `model.weights.bin`). */
export function uploadTfjs(client: SparsoupClient, name: string, modelJson: Blob, weights: Blob): Promise<Model> {
  const form = new FormData();
  form.append('model.json', modelJson, 'model.json');
  form.append('model.weights.bin', weights, 'model.weights.bin');
  return unwrap(client.POST('/models', { params: { query: { name } }, body: form as unknown as { 'model.json'?: string }, bodySerializer: asIs }));
}

/**
 * POST /models with a folder of named files, in the order given: the converter's folder (`model.json`
 * first, then its weight files) or a Hugging Face sharded folder (`model.safetensors.index.json` first,
 * then its shards).
 */
export function uploadModelFiles(client: SparsoupClient, name: string, files: [string, Blob][]): Promise<Model> {
  const form = new FormData();
  for (const [n, b] of files) form.append(n, b, n);
  return unwrap(client.POST('/models', { params: { query: { name } }, body: form as unknown as { 'model.json'?: string }, bodySerializer: asIs }));
}

/** GET /models/{id}/files/{name}: one file of a model, streamed. */
export async function downloadModelFile(client: SparsoupClient, id: string, name: string): Promise<ReadableStream<Uint8Array>> {
  const stream = await unwrap(client.GET('/models/{id}/files/{name}', { params: { path: { id, name } }, parseAs: 'stream' }) as Promise<{ data?: ReadableStream<Uint8Array> | null; error?: unknown; response: Response }>);
  if (!stream) throw new Error('the service answered without a body');
  return stream;
}

/**
 * POST /datasets: an IDX pair as parts (`images`, `labels`, optionally `testImages`, `testLabels`), or
 * one `.npz` / safetensors file holding `x` and `y`.
 */
export function uploadDataset(client: SparsoupClient, name: string, body: Record<string, Blob> | Uint8Array | Blob, query: { classes?: number } = {}): Promise<Dataset> {
  const isFile = body instanceof Uint8Array || body instanceof Blob;
  let payload: FormData | Uint8Array | Blob;
  if (isFile) payload = body;
  else {
    const form = new FormData();
    for (const [part, blob] of Object.entries(body)) form.append(part, blob, part);
    payload = form;
  }
  return unwrap(
    client.POST('/datasets', {
      params: { query: { name, ...query } },
      body: payload as unknown as string,
      bodySerializer: asIs,
      ...(isFile ? { headers: { 'content-type': 'application/octet-stream' } } : {}),
    }),
  );
}

/** GET /models/{id}/safetensors (or model.json / model.weights.bin) as a byte stream. */
export async function downloadModel(client: SparsoupClient, id: string, format: 'safetensors' | 'model.json' | 'model.weights.bin' = 'safetensors'): Promise<ReadableStream<Uint8Array>> {
  const call =
    format === 'safetensors'
      ? client.GET('/models/{id}/safetensors', { params: { path: { id } }, parseAs: 'stream' })
      : format === 'model.json'
        ? client.GET('/models/{id}/model.json', { params: { path: { id } }, parseAs: 'stream' })
        : client.GET('/models/{id}/model.weights.bin', { params: { path: { id } }, parseAs: 'stream' });
  const stream = await unwrap(call as Promise<{ data?: ReadableStream<Uint8Array> | null; error?: unknown; response: Response }>);
  if (!stream) throw new Error('the service answered without a body');
  return stream;
}

/** GET /runs/{id}/report.svg: accuracy against sparsity, as SVG text. */
export function runReportSvg(client: SparsoupClient, id: string, query: { metric?: 'test' | 'val'; baselineIds?: string } = {}): Promise<string> {
  return unwrap(client.GET('/runs/{id}/report.svg', { params: { path: { id }, query }, parseAs: 'text' })) as Promise<string>;
}

/** One server-sent event of GET /runs/{id}/events. */
export interface RunEvent {
  id: string;
  /** run-created, candidate-started, progress, candidate-succeeded / -failed / -retry / -requeued, run-finished, … */
  type: string;
  data: Record<string, unknown> & { candidateId?: string | null; at?: string };
}

/**
 * The run's events, replayed from the start (or after `lastEventId`), then live; the iteration ends
 * after `run-finished`, when the server closes the stream, or when `signal` aborts.
 */
export async function* runEvents(client: SparsoupClient, id: string, opts: { lastEventId?: string; signal?: AbortSignal } = {}): AsyncGenerator<RunEvent> {
  const stream = await unwrap(
    client.GET('/runs/{id}/events', {
      // The spec lists Last-Event-ID as a header parameter; it is optional (absent: replay from the start).
      params: { path: { id }, header: opts.lastEventId ? { 'last-event-id': opts.lastEventId } : undefined } as { path: { id: string }; header: { 'last-event-id': string } },
      parseAs: 'stream',
      headers: { accept: 'text/event-stream' },
      ...(opts.signal ? { signal: opts.signal } : {}),
    }) as Promise<{ data?: ReadableStream<Uint8Array> | null; error?: unknown; response: Response }>,
  );
  if (!stream) return;
  const decoder = new TextDecoder();
  let buffer = '';
  const reader = stream.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
      let end = buffer.indexOf('\n\n');
      while (end >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event) {
          yield event;
          if (event.type === 'run-finished') return;
        }
        end = buffer.indexOf('\n\n');
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

function parseEvent(block: string): RunEvent | null {
  let id = '';
  let type = 'message';
  const data: string[] = [];
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'id') id = value;
    else if (field === 'event') type = value;
    else if (field === 'data') data.push(value);
  }
  if (!data.length) return null;
  const text = data.join('\n');
  let parsed: RunEvent['data'];
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = { text };
  }
  return { id, type, data: parsed };
}
