import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { plainToInstance, Transform } from 'class-transformer';
import { IsIn, IsInt, IsNumber, IsOptional, IsString, Matches, Max, Min, validateSync } from 'class-validator';
// kernel-set.ts imports nothing: no TensorFlow.js in the main process for it.
import { WASM_KERNEL_SETS, type WasmKernels } from '../core/tf/kernel-set.js';
import type { ArtifactStoreConfig } from '../storage/create.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const BACKEND_NAMES = ['auto', 'tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendPreference = (typeof BACKEND_NAMES)[number];
/** EVAL_SPARSE: how evaluation runs pruned Dense layers on wasm (src/core/tf/sparse-matmul.ts). */
export const EVAL_SPARSE_MODES = ['auto', 'dense', 'sparse'] as const;
export type EvalSparseMode = (typeof EVAL_SPARSE_MODES)[number];

/** read: GET only; write: everything; worker: the task protocol only (lease, heartbeat, result, fail, and the downloads a task names). */
export type ApiKeyScope = 'read' | 'write' | 'worker';
export interface ApiKey {
  name: string;
  key: string;
  scope: ApiKeyScope;
}

const toInt = ({ value }: { value: unknown }) =>
  typeof value === 'string' && /^-?\d+$/.test(value.trim()) ? Number(value) : value;
const toNumber = ({ value }: { value: unknown }) =>
  typeof value === 'string' && /^\d+(\.\d+)?$/.test(value.trim()) ? Number(value) : value;

/** The environment as read: every variable is a string or absent. Validation names the variable. */
class Environment {
  @IsOptional() @Transform(toInt) @IsInt() @Min(0) @Max(65535)
  PORT?: number;

  @IsOptional() @IsString()
  HOST?: string;

  @IsOptional() @Matches(/^postgres(ql)?:\/\/.+/, { message: 'DATABASE_URL must be a postgres:// URL' })
  DATABASE_URL?: string;

  @IsOptional() @IsString()
  DATA_DIR?: string;

  @IsOptional()
  @Matches(/^\s*[^:,\s]+:[^:,\s]+:(read|write|worker)\s*(,\s*[^:,\s]+:[^:,\s]+:(read|write|worker)\s*)*$/, {
    message: 'API_KEYS must be a comma-separated list of name:key:scope entries with scope read, write or worker',
  })
  API_KEYS?: string;

  @IsOptional() @Transform(toInt) @IsInt() @Min(0) @Max(256)
  WORKERS?: number;

  @IsOptional() @Matches(/^(file:.*|s3:\/\/[^/]+(\/.*)?)$/, { message: 'ARTIFACTS_URL must be file: (the folder under DATA_DIR), file:///a/folder, or s3://bucket/prefix' })
  ARTIFACTS_URL?: string;

  @IsOptional() @IsString()
  AWS_ACCESS_KEY_ID?: string;

  @IsOptional() @IsString()
  AWS_SECRET_ACCESS_KEY?: string;

  @IsOptional() @Matches(/^[a-z0-9-]+$/, { message: 'AWS_REGION must be a region name such as us-east-1' })
  AWS_REGION?: string;

  @IsOptional() @Matches(/^https?:\/\/[^\s/]+(\/\S*)?$/, { message: 'AWS_ENDPOINT_URL_S3 must be an http:// or https:// URL' })
  AWS_ENDPOINT_URL_S3?: string;

  @IsOptional() @Matches(/^https?:\/\/[^\s/]+(\/\S*)?$/, { message: 'AWS_ENDPOINT_URL must be an http:// or https:// URL' })
  AWS_ENDPOINT_URL?: string;

  @IsOptional() @Transform(toInt) @IsInt() @Min(0)
  ARTIFACT_CACHE_BYTES?: number;

  @IsOptional() @IsString()
  ARTIFACT_CACHE_DIR?: string;

  @IsOptional() @IsIn(LOG_LEVELS)
  LOG_LEVEL?: LogLevel;

  @IsOptional() @Transform(toInt) @IsInt() @Min(1024)
  MAX_UPLOAD_BYTES?: number;

  @IsOptional() @IsIn(BACKEND_NAMES)
  TFJS_BACKEND?: BackendPreference;

  @IsOptional() @IsIn(EVAL_SPARSE_MODES)
  EVAL_SPARSE?: EvalSparseMode;

  @IsOptional() @Transform(toInt) @IsInt() @Min(1) @Max(8)
  WASM_THREADS?: number;

  @IsOptional() @IsIn(WASM_KERNEL_SETS)
  WASM_KERNELS?: WasmKernels;

  @IsOptional() @IsString()
  WEBHOOK_SECRET?: string;

  @IsOptional() @Transform(toInt) @IsInt() @Min(1)
  REQUEST_TIMEOUT_SECONDS?: number;

  @IsOptional() @Transform(toInt) @IsInt() @Min(1)
  TASK_TIMEOUT_SECONDS?: number;

  @IsOptional() @Transform(toInt) @IsInt() @Min(1) @Max(3600)
  TASK_LEASE_SECONDS?: number;

  @IsOptional() @Transform(toInt) @IsInt() @Min(1) @Max(100)
  TASK_MAX_ATTEMPTS?: number;

  @IsOptional() @Transform(toNumber) @IsNumber({}, { message: 'JOB_POLL_SECONDS must be a number of seconds' }) @Min(0.5) @Max(600)
  JOB_POLL_SECONDS?: number;

  @IsOptional() @Transform(toNumber) @IsNumber({}, { message: 'PROGRESS_WRITE_SECONDS must be a number of seconds' }) @Min(0) @Max(3600)
  PROGRESS_WRITE_SECONDS?: number;
}

/** Uploads slower than this are cut by the default request timeout (MAX_UPLOAD_BYTES / this, at least 300 s). */
export const MIN_UPLOAD_BYTES_PER_SECOND = 1024 * 1024;

export interface AppConfig {
  port: number;
  host: string;
  /** Absent: the embedded PGlite database in `dataDir/pglite`. */
  databaseUrl: string | null;
  dataDir: string;
  apiKeys: ApiKey[];
  workers: number;
  logLevel: LogLevel;
  maxUploadBytes: number;
  backend: BackendPreference;
  /** EVAL_SPARSE: 'auto' (sparse product for pruned Dense kernels), 'dense' or 'sparse' (always where it applies). */
  evalSparse: EvalSparseMode;
  /**
   * WASM_THREADS: XNNPACK threads per worker thread on the wasm backend (1: the single-threaded
   * build; 2..8: the threaded-SIMD build, src/core/tf/wasm-threads.ts).
   */
  wasmThreads: number;
  /**
   * WASM_KERNELS: 'sparsoup' runs the wasm backend's hot operations on sparsoup's WebAssembly SIMD
   * kernels (FMA matrix products and convolutions where V8 has Relaxed SIMD, batch norm, pooling
   * gradient: src/core/tf/kernel-set.ts); 'tfjs' keeps tfjs's own (XNNPACK, tfjs-layers' batch norm).
   */
  wasmKernels: WasmKernels;
  webhookSecret: string | null;
  /** How long a request may take to arrive in full (headers and body), in ms. */
  requestTimeoutMs: number;
  /** Time bound of one worker task other than training, in ms. */
  taskTimeoutMs: number;
  /** Where artifacts live (ARTIFACTS_URL): the folder under DATA_DIR, another folder, or a bucket. */
  artifacts: ArtifactStoreConfig;
  /** How long an external trainer's lease on a task lasts without a heartbeat, in ms. */
  taskLeaseMs: number;
  /** Leases of one external task before it (and its run) fails. */
  taskMaxAttempts: number;
  /**
   * How often each job queue's workers look for jobs they were not woken for, in seconds: jobs this
   * process sends, retries and delayed jobs wake its workers at once; this finds other processes' jobs.
   */
  jobPollSeconds: number;
  /** Training progress is written (a candidate's progress and a `progress` event) at most this often per candidate, in ms. */
  progressWriteMs: number;
}

/** JOB_POLL_SECONDS's default: with the embedded database only this process sends jobs, and it wakes its own workers. */
export const DEFAULT_JOB_POLL_SECONDS = { embedded: 10, postgres: 2 } as const;
/** PROGRESS_WRITE_SECONDS's default. */
export const DEFAULT_PROGRESS_WRITE_SECONDS = 5;

export class ConfigError extends Error {
  constructor(readonly problems: { variable: string; message: string }[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  ${p.variable}: ${p.message}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

const KNOWN = new Set(Object.keys(new Environment()).concat([
  'PORT', 'HOST', 'DATABASE_URL', 'DATA_DIR', 'API_KEYS', 'WORKERS', 'LOG_LEVEL', 'MAX_UPLOAD_BYTES',
  'TFJS_BACKEND', 'EVAL_SPARSE', 'WASM_THREADS', 'WASM_KERNELS', 'WEBHOOK_SECRET', 'REQUEST_TIMEOUT_SECONDS', 'TASK_TIMEOUT_SECONDS', 'ARTIFACTS_URL',
  'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_REGION', 'AWS_ENDPOINT_URL_S3', 'AWS_ENDPOINT_URL',
  'ARTIFACT_CACHE_BYTES', 'ARTIFACT_CACHE_DIR', 'TASK_LEASE_SECONDS', 'TASK_MAX_ATTEMPTS', 'JOB_POLL_SECONDS',
  'PROGRESS_WRITE_SECONDS',
]));

/** The default bound of a process's local cache of object-storage artifacts (ARTIFACT_CACHE_BYTES). */
export const DEFAULT_ARTIFACT_CACHE_BYTES = 4 * 1024 ** 3;

/** ARTIFACTS_URL and the AWS variables, checked together: each problem names its variable. */
function artifactsConfig(e: Environment, dataDir: string): ArtifactStoreConfig {
  const url = e.ARTIFACTS_URL;
  if (!url || url === 'file:') return { kind: 'fs', root: join(dataDir, 'artifacts') };
  if (url.startsWith('file:')) {
    const path = decodeURIComponent(url.replace(/^file:(\/\/)?/, ''));
    if (!path.startsWith('/')) throw new ConfigError([{ variable: 'ARTIFACTS_URL', message: 'a file: URL names an absolute folder (file:///srv/artifacts), or is just file: for DATA_DIR/artifacts' }]);
    return { kind: 'fs', root: resolve(path) };
  }
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(url)!;
  const [, bucket, rawPrefix] = m;
  const problems: { variable: string; message: string }[] = [];
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) problems.push({ variable: 'ARTIFACTS_URL', message: `"${bucket}" is not a bucket name (3–63 lower-case letters, digits, dots and hyphens)` });
  const prefix = rawPrefix.replace(/\/+$/, '');
  if (prefix.split('/').some((p) => p === '' || p === '.' || p === '..') && prefix !== '') problems.push({ variable: 'ARTIFACTS_URL', message: `the key prefix "${rawPrefix}" has an empty, "." or ".." segment` });
  const endpoint = e.AWS_ENDPOINT_URL_S3 ?? e.AWS_ENDPOINT_URL ?? null;
  if (!e.AWS_REGION && !endpoint) problems.push({ variable: 'AWS_REGION', message: 'set the bucket\'s region (or AWS_ENDPOINT_URL_S3 for an S3-compatible server) to use ARTIFACTS_URL=s3://…' });
  if (!!e.AWS_ACCESS_KEY_ID !== !!e.AWS_SECRET_ACCESS_KEY) {
    const missing = e.AWS_ACCESS_KEY_ID ? 'AWS_SECRET_ACCESS_KEY' : 'AWS_ACCESS_KEY_ID';
    problems.push({ variable: missing, message: `${missing} is needed with ${missing === 'AWS_SECRET_ACCESS_KEY' ? 'AWS_ACCESS_KEY_ID' : 'AWS_SECRET_ACCESS_KEY'}` });
  }
  if (problems.length) throw new ConfigError(problems);
  const cacheDir = resolve(e.ARTIFACT_CACHE_DIR ?? join(tmpdir(), 'sparsoup-artifact-cache'));
  return {
    kind: 's3',
    bucket,
    prefix: prefix ? `${prefix}/` : '',
    region: e.AWS_REGION ?? 'us-east-1',
    endpoint: endpoint ? endpoint.replace(/\/+$/, '') : null,
    credentials: e.AWS_ACCESS_KEY_ID && e.AWS_SECRET_ACCESS_KEY ? { accessKeyId: e.AWS_ACCESS_KEY_ID, secretAccessKey: e.AWS_SECRET_ACCESS_KEY } : null,
    tmpDir: join(cacheDir, 'spool'),
    cache: { dir: cacheDir, maxBytes: e.ARTIFACT_CACHE_BYTES ?? DEFAULT_ARTIFACT_CACHE_BYTES },
  };
}

/** Reads and validates the configuration once; throws ConfigError naming every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): AppConfig {
  const raw: Record<string, string> = {};
  for (const name of KNOWN) {
    const value = env[name];
    if (value !== undefined && value !== '') raw[name] = value;
  }
  const parsed = plainToInstance(Environment, raw);
  const errors = validateSync(parsed, { forbidUnknownValues: false });
  if (errors.length > 0) {
    throw new ConfigError(
      errors.map((e) => ({ variable: e.property, message: Object.values(e.constraints ?? {}).join('; ') })),
    );
  }
  const apiKeys = parseApiKeys(parsed.API_KEYS);
  const dataDir = resolve(parsed.DATA_DIR ?? './data');
  const artifacts = artifactsConfig(parsed, dataDir);
  const maxUploadBytes = parsed.MAX_UPLOAD_BYTES ?? 8 * 1024 ** 3;
  return {
    port: parsed.PORT ?? 3000,
    host: parsed.HOST ?? '0.0.0.0',
    databaseUrl: parsed.DATABASE_URL ?? null,
    dataDir,
    apiKeys,
    workers: parsed.WORKERS ?? availableParallelism(),
    logLevel: parsed.LOG_LEVEL ?? 'info',
    maxUploadBytes,
    requestTimeoutMs: (parsed.REQUEST_TIMEOUT_SECONDS ?? Math.max(300, Math.ceil(maxUploadBytes / MIN_UPLOAD_BYTES_PER_SECOND))) * 1000,
    taskTimeoutMs: (parsed.TASK_TIMEOUT_SECONDS ?? 600) * 1000,
    taskLeaseMs: (parsed.TASK_LEASE_SECONDS ?? 60) * 1000,
    taskMaxAttempts: parsed.TASK_MAX_ATTEMPTS ?? 3,
    jobPollSeconds: parsed.JOB_POLL_SECONDS ?? (parsed.DATABASE_URL ? DEFAULT_JOB_POLL_SECONDS.postgres : DEFAULT_JOB_POLL_SECONDS.embedded),
    progressWriteMs: (parsed.PROGRESS_WRITE_SECONDS ?? DEFAULT_PROGRESS_WRITE_SECONDS) * 1000,
    backend: parsed.TFJS_BACKEND ?? 'auto',
    evalSparse: parsed.EVAL_SPARSE ?? 'auto',
    wasmThreads: parsed.WASM_THREADS ?? 1,
    wasmKernels: parsed.WASM_KERNELS ?? 'sparsoup',
    webhookSecret: parsed.WEBHOOK_SECRET ?? null,
    artifacts,
  };
}

function parseApiKeys(value: string | undefined): ApiKey[] {
  if (!value) return [];
  const keys = value.split(',').map((entry) => {
    const [name, key, scope] = entry.trim().split(':');
    return { name, key, scope: scope as ApiKeyScope };
  });
  const seen = new Set<string>();
  for (const k of keys) {
    if (seen.has(k.key)) throw new ConfigError([{ variable: 'API_KEYS', message: `key of "${k.name}" is listed twice` }]);
    seen.add(k.key);
  }
  return keys;
}

/** For process entry points: the configuration, or a message naming each bad variable and exit code 2. */
export function loadConfigOrExit(env: NodeJS.ProcessEnv = process.env): AppConfig {
  try {
    return loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(2);
    }
    throw err;
  }
}
