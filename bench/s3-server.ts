import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** s3rver (scripts/s3rver.mjs) in a child process on a free port: the benches' S3 server. */
export async function startS3Server(bucket = 'bench'): Promise<{ endpoint: string; bucket: string; dir: string; env: (prefix: string) => Record<string, string>; stop: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'sparsoup-bench-s3-'));
  const child: ChildProcess = spawn(process.execPath, ['--openssl-legacy-provider', join(ROOT, 'scripts', 's3rver.mjs'), '--dir', dir, '--bucket', bucket], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((res, rej) => {
    createInterface({ input: child.stdout! }).once('line', (l) => res((JSON.parse(l) as { port: number }).port));
    child.once('exit', (code) => rej(new Error(`s3rver exited (${code})`)));
  });
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint,
    bucket,
    dir,
    env: (prefix) => ({ ARTIFACTS_URL: `s3://${bucket}/${prefix}`, AWS_ENDPOINT_URL_S3: endpoint, AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' }),
    stop: async () => {
      if (child.exitCode === null) {
        const done = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await done;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
