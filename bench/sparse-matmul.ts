/**
 * The crossover of the sparse `_FusedMatMul` (src/core/tf/sparse-matmul.ts) against the dense ones
 * (XNNPACK's, and the Relaxed SIMD FMA kernel of src/core/tf/gemm.ts, which WASM_KERNELS=sparsoup runs),
 * per layer shape and sparsity, on the wasm backend, one thread: CPU ms per call (median), and the
 * largest difference of the outputs.
 *
 *   npm run build && node dist/bench/sparse-matmul.js [-- --batch 512 --reps 20]
 */
import os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/core/tf/backend.js';
import { gemmAvailable } from '../src/core/tf/gemm.js';
import { setWasmKernels } from '../src/core/tf/kernel-set.js';
import { type SparseMatMulMode, withSparseMatMul } from '../src/core/tf/sparse-matmul.js';
import { printMachine } from './machine.js';

const args = process.argv.slice(2);
const arg = (n: string, d: string) => (args.indexOf(`--${n}`) >= 0 ? args[args.indexOf(`--${n}`) + 1] : d);
const B = Number(arg('batch', '512'));
const REPS = Number(arg('reps', '20'));
const SHAPES = arg('shapes', '784x300,300x100,100x10,3136x128').split(',').map((s) => s.split('x').map(Number));
const SPARSITIES = arg('sparsities', '0,0.3,0.5,0.6,0.7,0.8,0.9,0.95,0.98').split(',').map(Number);

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

function median(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main() {
  await initBackend('wasm');
  console.log(`# bench sparse-matmul — batch ${B}, median of ${REPS} calls, load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  printMachine();
  if (!gemmAvailable()) throw new Error('the FMA kernel is unavailable here (Relaxed SIMD)');
  console.log('| K×N | sparsity | XNNPACK CPU ms | FMA CPU ms | sparse CPU ms | XNNPACK ÷ sparse | FMA ÷ sparse | max |Δ| |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const [K, N] of SHAPES) {
    for (const s of SPARSITIES) {
      const x = tf.randomUniform([B, K], 0, 1, 'float32', 1);
      const wv = tf.randomNormal([K, N], 0, 0.05, 'float32', 2).dataSync() as Float32Array;
      const keep = tf.randomUniform([K * N], 0, 1, 'float32', 3).dataSync();
      for (let i = 0; i < wv.length; i++) if (keep[i] < s) wv[i] = 0;
      const w = tf.tensor2d(wv, [K, N]);
      const bias = tf.randomNormal([N], 0, 0.1, 'float32', 4);
      // dataSync outside tf.tidy: a typed array returned from a tidy is walked element by element.
      const run = (m: SparseMatMulMode | 'xnnpack') => {
        setWasmKernels(m === 'xnnpack' ? 'tfjs' : 'sparsoup');
        const y = withSparseMatMul(m === 'xnnpack' ? 'dense' : m, () => tf.fused.matMul({ a: x, b: w, bias, activation: 'relu' }));
        const v = y.dataSync();
        y.dispose();
        setWasmKernels('sparsoup');
        return v;
      };
      const xn = run('xnnpack');
      const d = run('dense');
      const sp = run('sparse');
      let diff = 0;
      for (let i = 0; i < d.length; i++) diff = Math.max(diff, Math.abs(d[i] - sp[i]), Math.abs(xn[i] - sp[i]));
      // Interleaved: the machine is shared, so all paths see the same moments.
      const times = { xnnpack: [] as number[], dense: [] as number[], sparse: [] as number[] };
      for (let i = 0; i < REPS; i++) {
        for (const m of ['xnnpack', 'dense', 'sparse'] as const) {
          const t0 = cpuMs();
          run(m);
          times[m].push(cpuMs() - t0);
        }
      }
      const [tx, td, ts] = [median(times.xnnpack), median(times.dense), median(times.sparse)];
      console.log(`| ${K}×${N} | ${s} | ${tx.toFixed(2)} | ${td.toFixed(2)} | ${ts.toFixed(2)} | ${(tx / ts).toFixed(2)}× | ${(td / ts).toFixed(2)}× | ${diff.toExponential(1)} |`);
      tf.dispose([x, w, bias]);
    }
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
