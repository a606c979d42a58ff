import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from './config.js';

describe('loadConfig', () => {
  it('gives the documented defaults for an empty environment', () => {
    const c = loadConfig({});
    expect(c.port).toBe(3000);
    expect(c.databaseUrl).toBeNull();
    expect(c.dataDir.endsWith('/data')).toBe(true);
    expect(c.apiKeys).toEqual([]);
    expect(c.workers).toBeGreaterThanOrEqual(1);
    expect(c.logLevel).toBe('info');
    expect(c.backend).toBe('auto');
    expect(c.wasmThreads).toBe(1);
  });

  it('takes WASM_THREADS, the XNNPACK threads of each worker thread', () => {
    expect(loadConfig({ WASM_THREADS: '2' }).wasmThreads).toBe(2);
  });

  it('polls job queues every 10 s on the embedded database and every 2 s on Postgres, and writes progress every 5 s, unless told otherwise', () => {
    expect(loadConfig({}).jobPollSeconds).toBe(10);
    expect(loadConfig({ DATABASE_URL: 'postgres://x/y' }).jobPollSeconds).toBe(2);
    expect(loadConfig({ JOB_POLL_SECONDS: '0.5' }).jobPollSeconds).toBe(0.5);
    expect(loadConfig({}).progressWriteMs).toBe(5000);
    expect(loadConfig({ PROGRESS_WRITE_SECONDS: '0' }).progressWriteMs).toBe(0);
    expect(loadConfig({ PROGRESS_WRITE_SECONDS: '1.5' }).progressWriteMs).toBe(1500);
  });

  it('parses API_KEYS entries with their scopes', () => {
    const c = loadConfig({ API_KEYS: 'ci:abc123:write, dash:zzz:read' });
    expect(c.apiKeys).toEqual([
      { name: 'ci', key: 'abc123', scope: 'write' },
      { name: 'dash', key: 'zzz', scope: 'read' },
    ]);
  });

  it.each([
    ['PORT', 'eighty'],
    ['PORT', '70000'],
    ['WORKERS', '-1'],
    ['ARTIFACTS_URL', 'ftp://x'],
    ['ARTIFACTS_URL', 'file:relative/dir'],
    ['AWS_ENDPOINT_URL_S3', 'localhost:9000'],
    ['ARTIFACT_CACHE_BYTES', 'lots'],
    ['DATABASE_URL', 'mysql://x'],
    ['API_KEYS', 'ci:abc:admin'],
    ['API_KEYS', 'missing-scope'],
    ['LOG_LEVEL', 'loud'],
    ['TFJS_BACKEND', 'cuda'],
    ['WASM_THREADS', '0'],
    ['WASM_THREADS', '9'],
    ['MAX_UPLOAD_BYTES', '12'],
    ['JOB_POLL_SECONDS', '0.1'],
    ['JOB_POLL_SECONDS', 'soon'],
    ['PROGRESS_WRITE_SECONDS', '-1'],
  ])('refuses %s=%s with a message that names the variable', (variable, value) => {
    let error: unknown;
    try {
      loadConfig({ [variable]: value });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems.map((p) => p.variable)).toEqual([variable]);
    expect((error as Error).message).toContain(variable);
  });

  it('reports every bad variable at once', () => {
    expect(() => loadConfig({ PORT: 'x', WORKERS: '-1' })).toThrowError(/PORT[\s\S]*WORKERS|WORKERS[\s\S]*PORT/);
  });

  it('keeps artifacts in DATA_DIR/artifacts without ARTIFACTS_URL or with file:, and takes WORKERS=0', () => {
    expect(loadConfig({ DATA_DIR: '/srv/d' }).artifacts).toEqual({ kind: 'fs', root: '/srv/d/artifacts' });
    expect(loadConfig({ DATA_DIR: '/srv/d', ARTIFACTS_URL: 'file:' }).artifacts).toEqual({ kind: 'fs', root: '/srv/d/artifacts' });
    expect(loadConfig({ ARTIFACTS_URL: 'file:///mnt/shared/artifacts' }).artifacts).toEqual({ kind: 'fs', root: '/mnt/shared/artifacts' });
    expect(loadConfig({ WORKERS: '0' }).workers).toBe(0);
  });

  it('reads s3://bucket/prefix with the AWS variables; a custom endpoint is addressed path-style', () => {
    const c = loadConfig({
      ARTIFACTS_URL: 's3://my-bucket/team/sparsoup/',
      AWS_ENDPOINT_URL: 'http://minio:9000/',
      AWS_ACCESS_KEY_ID: 'id',
      AWS_SECRET_ACCESS_KEY: 'secret',
      ARTIFACT_CACHE_BYTES: '1000000',
      ARTIFACT_CACHE_DIR: '/var/cache/sparsoup',
    });
    expect(c.artifacts).toMatchObject({
      kind: 's3',
      bucket: 'my-bucket',
      prefix: 'team/sparsoup/',
      region: 'us-east-1',
      endpoint: 'http://minio:9000',
      credentials: { accessKeyId: 'id', secretAccessKey: 'secret' },
      cache: { dir: '/var/cache/sparsoup', maxBytes: 1_000_000 },
    });
    // AWS_ENDPOINT_URL_S3 wins over AWS_ENDPOINT_URL, as in the AWS tools.
    expect(loadConfig({ ARTIFACTS_URL: 's3://b-1', AWS_ENDPOINT_URL: 'http://a:1', AWS_ENDPOINT_URL_S3: 'http://s3:2' }).artifacts).toMatchObject({ endpoint: 'http://s3:2', prefix: '' });
    expect(loadConfig({ ARTIFACTS_URL: 's3://b-1/p', AWS_REGION: 'eu-west-1' }).artifacts).toMatchObject({ region: 'eu-west-1', endpoint: null, credentials: null });
  });

  it.each([
    [{ ARTIFACTS_URL: 's3://bucket/p' }, 'AWS_REGION'],
    [{ ARTIFACTS_URL: 's3://bucket/p', AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'id' }, 'AWS_SECRET_ACCESS_KEY'],
    [{ ARTIFACTS_URL: 's3://bucket/p', AWS_REGION: 'us-east-1', AWS_SECRET_ACCESS_KEY: 's' }, 'AWS_ACCESS_KEY_ID'],
    [{ ARTIFACTS_URL: 's3://bucket/a//b', AWS_REGION: 'us-east-1' }, 'ARTIFACTS_URL'],
    [{ ARTIFACTS_URL: 's3://Bad_Bucket/x', AWS_REGION: 'us-east-1' }, 'ARTIFACTS_URL'],
  ])('refuses an incomplete bucket configuration %o, naming %s', (env, variable) => {
    let error: unknown;
    try {
      loadConfig(env);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems.map((p) => p.variable)).toEqual([variable]);
  });

  it('refuses the same key listed twice', () => {
    expect(() => loadConfig({ API_KEYS: 'a:k:read,b:k:write' })).toThrowError(/API_KEYS/);
  });
});
