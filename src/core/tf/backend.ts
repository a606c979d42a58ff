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
  /** XNNPACK threads of the wasm backend in this thread (1 for the single-threaded build and other backends). */
  wasmThreads: number;
  /** Why the threaded wasm build was asked for (`wasmThreads` > 1) but not used. */
  wasmThreadsError?: string;
  /**
   * What runs dense matrix products in the thread that answered: 'fma' (wasm, the Relaxed SIMD
   * kernel of gemm.ts), 'xnnpack' (wasm, WASM_KERNELS=tfjs or no Relaxed SIMD), 'native' (libtensorflow,
   * or the cpu backend's JS). Set by the worker's `info` task, which knows the thread's WASM_KERNELS.
   */
  matMul?: 'fma' | 'xnnpack' | 'native';
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

async function setWasm(): Promise<void> {
  if (!(await tf.setBackend('wasm'))) throw new Error('the wasm backend did not initialise');
  await tf.ready();
}

/** Returns the wasm threads it started with, and why not the ones asked for. */
async function tryBackend(name: BackendName, wasmThreads: number): Promise<{ threads: number; error?: string }> {
  switch (name) {
    case 'tensorflow-gpu':
    case 'tensorflow':
      // The native packages are optional dependencies: absent where their binaries could not be
      // downloaded. Loading one registers the `tensorflow` backend.
      require(PACKAGES[name]);
      if (!(await tf.setBackend('tensorflow'))) throw new Error('the tensorflow backend did not initialise');
      return { threads: 1 };
    case 'wasm': {
      await import('@tensorflow/tfjs-backend-wasm');
      let result: { threads: number; error?: string } = { threads: 1 };
      let started = false;
      if (wasmThreads > 1) {
        try {
          result = await (await import('./wasm-threads.js')).initThreadedWasm(wasmThreads, setWasm);
          started = true;
          if (result.threads !== wasmThreads) result.error = `XNNPACK started ${result.threads} thread(s)`;
        } catch (err) {
          // The single-threaded build, as without the setting.
          tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
          result = { threads: 1, error: err instanceof Error ? err.message.split('\n')[0] : String(err) };
        }
      }
      if (!started) await setWasm();
      // Loaded only here: the fixes are wasm kernels, and importing them elsewhere costs nothing.
      (await import('./wasm-kernels.js')).registerWasmKernelFixes();
      return result;
    }
    case 'cpu':
      if (!(await tf.setBackend('cpu'))) throw new Error('the cpu backend did not initialise');
      return { threads: 1 };
  }
}

/**
 * Picks the best TensorFlow.js backend this process can run: CUDA, native CPU, wasm, pure JS.
 * A preference other than `auto` is taken or fails loudly (it is a deliberate choice).
 * `wasmThreads` > 1 starts the wasm backend's threaded-SIMD build with that many XNNPACK threads
 * (see wasm-threads.ts); where it cannot start, the single-threaded build runs and
 * `wasmThreadsError` says why.
 * Idempotent: every caller in a thread gets the same answer (the first call's options count).
 */
export function initBackend(preference: BackendPreference = 'auto', wasmThreads = 1): Promise<BackendInfo> {
  current ??= (async () => {
    const skipped: BackendInfo['skipped'] = [];
    const candidates = preference === 'auto' ? ORDER : [preference];
    for (const name of candidates) {
      try {
        const wasm = await tryBackend(name, wasmThreads);
        await tf.ready();
        return {
          name,
          tfBackend: tf.getBackend(),
          package: PACKAGES[name],
          tfjsVersion: tf.version.tfjs,
          skipped,
          wasmThreads: wasm.threads,
          ...(wasm.error ? { wasmThreadsError: wasm.error } : {}),
        };
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
