import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';

export type BackendName = 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu';
export type BackendPreference = BackendName | 'auto';

export interface BackendInfo {
  /** What sparsoup calls it. */
  name: BackendName;
  /** What TensorFlow.js calls it (`tensorflow`, `wasm`, `cpu`). */
  tfBackend: string;
  package: string;
  tfjsVersion: string;
  /** Backends tried before this one, with why each was passed over. */
  skipped: { name: BackendName; reason: string }[];
}

const ORDER: BackendName[] = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];
const PACKAGES: Record<BackendName, string> = {
  'tensorflow-gpu': '@tensorflow/tfjs-node-gpu',
  tensorflow: '@tensorflow/tfjs-node',
  wasm: '@tensorflow/tfjs-backend-wasm',
  cpu: '@tensorflow/tfjs-backend-cpu',
};

const require = createRequire(import.meta.url);

// The cpu backend prints a "you are running TensorFlow.js in Node.js, install our node backend"
// banner on its first tensor; sparsoup picks its backend deliberately (and reports it in /health), so
// the banner only clutters logs. findBackend creates the (cheap) cpu instance without selecting it.
const cpuBackend = tf.findBackend('cpu') as { firstUse?: boolean } | null;
if (cpuBackend) cpuBackend.firstUse = false;
let current: Promise<BackendInfo> | null = null;

async function tryBackend(name: BackendName): Promise<void> {
  switch (name) {
    case 'tensorflow-gpu':
    case 'tensorflow':
      // The native packages are optional dependencies: absent where their binaries could not be
      // downloaded. Loading one registers the `tensorflow` backend.
      require(PACKAGES[name]);
      if (!(await tf.setBackend('tensorflow'))) throw new Error('the tensorflow backend did not initialise');
      return;
    case 'wasm':
      await import('@tensorflow/tfjs-backend-wasm');
      if (!(await tf.setBackend('wasm'))) throw new Error('the wasm backend did not initialise');
      await tf.ready();
      // Loaded only here: the fixes are wasm kernels, and importing them elsewhere costs nothing.
      (await import('./wasm-kernels.js')).registerWasmKernelFixes();
      return;
    case 'cpu':
      if (!(await tf.setBackend('cpu'))) throw new Error('the cpu backend did not initialise');
      return;
  }
}

/**
 * Picks the best TensorFlow.js backend this process can run: CUDA, native CPU, wasm, pure JS.
 * A preference other than `auto` is taken or fails loudly (it is a deliberate choice).
 * Idempotent: every caller in a thread gets the same answer.
 */
export function initBackend(preference: BackendPreference = 'auto'): Promise<BackendInfo> {
  current ??= (async () => {
    const skipped: BackendInfo['skipped'] = [];
    const candidates = preference === 'auto' ? ORDER : [preference];
    for (const name of candidates) {
      try {
        await tryBackend(name);
        await tf.ready();
        return { name, tfBackend: tf.getBackend(), package: PACKAGES[name], tfjsVersion: tf.version.tfjs, skipped };
      } catch (err) {
        skipped.push({ name, reason: err instanceof Error ? err.message.split('\n')[0] : String(err) });
      }
    }
    throw new Error(`no TensorFlow.js backend could start: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
  })();
  current.catch(() => {
    current = null;
  });
  return current;
}
