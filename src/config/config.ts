import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { plainToInstance, Transform } from 'class-transformer';
import { IsIn, IsInt, IsOptional, IsString, Matches, Max, Min, validateSync } from 'class-validator';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const BACKEND_NAMES = ['auto', 'tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendPreference = (typeof BACKEND_NAMES)[number];

/** read: GET only; write: everything; worker: the task protocol only (lease, heartbeat, result, fail, and the downloads a task names). */
export type ApiKeyScope = 'read' | 'write' | 'worker';
export interface ApiKey {
  name: string;
  key: string;
  scope: ApiKeyScope;
}

const toInt = ({ value }: { value: unknown }) =>
  typeof value === 'string' && /^-?\d+$/.test(value.trim()) ? Number(value) : value;

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

  @IsOptional() @Transform(toInt) @IsInt() @Min(1) @Max(256)
  WORKERS?: number;

  @IsOptional() @IsIn(LOG_LEVELS)
  LOG_LEVEL?: LogLevel;

  @IsOptional() @Transform(toInt) @IsInt() @Min(1024)
  MAX_UPLOAD_BYTES?: number;

  @IsOptional() @IsIn(BACKEND_NAMES)
  TFJS_BACKEND?: BackendPreference;

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
  webhookSecret: string | null;
  /** How long a request may take to arrive in full (headers and body), in ms. */
  requestTimeoutMs: number;
  /** Time bound of one worker task other than training, in ms. */
  taskTimeoutMs: number;
  /** How long an external trainer's lease on a task lasts without a heartbeat, in ms. */
  taskLeaseMs: number;
  /** Leases of one external task before it (and its run) fails. */
  taskMaxAttempts: number;
}

export class ConfigError extends Error {
  constructor(readonly problems: { variable: string; message: string }[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  ${p.variable}: ${p.message}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

const KNOWN = new Set(Object.keys(new Environment()).concat([
  'PORT', 'HOST', 'DATABASE_URL', 'DATA_DIR', 'API_KEYS', 'WORKERS', 'LOG_LEVEL', 'MAX_UPLOAD_BYTES',
  'TFJS_BACKEND', 'WEBHOOK_SECRET', 'REQUEST_TIMEOUT_SECONDS', 'TASK_TIMEOUT_SECONDS',
  'TASK_LEASE_SECONDS', 'TASK_MAX_ATTEMPTS',
]));

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
  const maxUploadBytes = parsed.MAX_UPLOAD_BYTES ?? 8 * 1024 ** 3;
  return {
    port: parsed.PORT ?? 3000,
    host: parsed.HOST ?? '0.0.0.0',
    databaseUrl: parsed.DATABASE_URL ?? null,
    dataDir: resolve(parsed.DATA_DIR ?? './data'),
    apiKeys,
    workers: parsed.WORKERS ?? availableParallelism(),
    logLevel: parsed.LOG_LEVEL ?? 'info',
    maxUploadBytes,
    requestTimeoutMs: (parsed.REQUEST_TIMEOUT_SECONDS ?? Math.max(300, Math.ceil(maxUploadBytes / MIN_UPLOAD_BYTES_PER_SECOND))) * 1000,
    taskTimeoutMs: (parsed.TASK_TIMEOUT_SECONDS ?? 600) * 1000,
    taskLeaseMs: (parsed.TASK_LEASE_SECONDS ?? 60) * 1000,
    taskMaxAttempts: parsed.TASK_MAX_ATTEMPTS ?? 3,
    backend: parsed.TFJS_BACKEND ?? 'auto',
    webhookSecret: parsed.WEBHOOK_SECRET ?? null,
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
