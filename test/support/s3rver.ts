import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

/** A real S3 protocol server (s3rver) in a child process, on a free port, with one bucket. */
export interface S3Server {
  endpoint: string;
  bucket: string;
  /** Where s3rver keeps the bucket's objects (`<key>._S3rver_object` files) and multipart parts. */
  dir: string;
  /** The environment that points the service at the bucket under `prefix`. */
  env(prefix?: string): Record<string, string>;
  stop(): Promise<void>;
}

export async function startS3Server(opts: { address?: string; bucket?: string; netns?: string } = {}): Promise<S3Server> {
  const dir = mkdtempSync(join(tmpdir(), 'sparsoup-s3rver-'));
  const bucket = opts.bucket ?? 'artifacts';
  const address = opts.address ?? '127.0.0.1';
  const args = ['--openssl-legacy-provider', resolve('scripts/s3rver.mjs'), '--dir', dir, '--bucket', bucket, '--address', address, '--port', '0'];
  const child: ChildProcess = opts.netns ? spawn('ip', ['netns', 'exec', opts.netns, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }) : spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr?.on('data', (c) => (err += c));
  const port = await new Promise<number>((res, rej) => {
    const lines = createInterface({ input: child.stdout! });
    lines.once('line', (line) => res((JSON.parse(line) as { port: number }).port));
    child.once('exit', (code) => rej(new Error(`s3rver exited (${code}): ${err}`)));
  });
  const endpoint = `http://${address}:${port}`;
  return {
    endpoint,
    bucket,
    dir,
    env: (prefix = 'sparsoup') => ({
      ARTIFACTS_URL: `s3://${bucket}/${prefix}`,
      AWS_ENDPOINT_URL_S3: endpoint,
      AWS_ACCESS_KEY_ID: 'S3RVER',
      AWS_SECRET_ACCESS_KEY: 'S3RVER',
      AWS_REGION: 'us-east-1',
    }),
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
