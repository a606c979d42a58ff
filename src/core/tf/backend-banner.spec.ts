import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

// In a fresh process (the banner prints once per process), as the service's worker threads load it.
function stderrOf(prelude: string): string {
  const script = `${prelude}\nconst tf = await import('@tensorflow/tfjs');\nawait tf.setBackend('cpu');\ntf.tensor([1, 2]).dataSync();\n`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  expect(r.status).toBe(0);
  return r.stderr;
}

describe('the TensorFlow.js "running in Node.js" banner', () => {
  it('is printed by the cpu backend on its own (so the check below can fail)', () => {
    expect(stderrOf('')).toMatch(/running TensorFlow\.js in Node\.js/);
  });

  it('is not printed once sparsoup chose the backends', () => {
    expect(stderrOf("await import('./dist/src/core/tf/backend.js');")).not.toMatch(/TensorFlow\.js in Node\.js/);
  });
});
