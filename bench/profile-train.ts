/**
 * Kernel-by-kernel profile of training steps on the current backend (tf.profile): where a step's
 * time goes, for each template. Wall time on a shared machine is noisy; the shares are what to read.
 *
 *   npm run bench:profile [-- --steps 4 --arch cnn-bn]
 */
import os from 'node:os';
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { type BackendPreference, initBackend } from '../src/core/tf/backend.js';
import { buildTemplate } from '../src/core/tf/templates.js';
import { trainModel } from '../src/core/tf/train.js';
import { benchTrainingConfig, loadMnistForBench } from './train.js';

async function main() {
  const args = process.argv.slice(2);
  const arg = (name: string, fallback: string) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : fallback;
  };
  const steps = Number(arg('steps', '4'));
  const archs = arg('arch', 'lenet-300-100,cnn-bn').split(',');
  const info = await initBackend(arg('backend', 'wasm') as BackendPreference);
  if (args.includes('--im2col')) (await import('../src/core/tf/wasm-kernels.js')).internals.setIm2colMaxChannels(Number(arg('im2col', '4')));
  const ds = loadMnistForBench(10000);
  console.log(`# bench:profile — ${steps} training steps per template, batch 128, backend ${info.name}, load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  for (const arch of archs) {
    const model = buildTemplate(arch, { inputShape: [28, 28, 1], classes: 10, seed: 1 });
    await trainModel(model, ds, benchTrainingConfig(ds, 128, 3, 0)); // warm-up
    const t0 = performance.now();
    const profile = await tf.profile(async () => {
      await trainModel(model, ds, benchTrainingConfig(ds, 128, steps, 1));
    });
    const wall = performance.now() - t0;
    const byKernel = new Map<string, { ms: number; calls: number }>();
    for (const k of profile.kernels) {
      if (k.name.endsWith('__op')) continue; // an op's span includes its kernels
      const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
      const e = byKernel.get(k.name) ?? { ms: 0, calls: 0 };
      e.ms += ms;
      e.calls++;
      byKernel.set(k.name, e);
    }
    const total = [...byKernel.values()].reduce((a, b) => a + b.ms, 0);
    console.log(`\n## ${arch}: ${(wall / steps).toFixed(1)} ms/step wall under the profiler, kernels ${(total / steps).toFixed(1)} ms/step, ${(profile.kernels.length / steps).toFixed(0)} kernel calls/step`);
    console.log('| kernel | ms/step | share | calls/step |');
    console.log('| --- | ---: | ---: | ---: |');
    for (const [name, e] of [...byKernel].sort((a, b) => b[1].ms - a[1].ms).slice(0, 25)) {
      console.log(`| ${name} | ${(e.ms / steps).toFixed(2)} | ${((100 * e.ms) / total).toFixed(1)} % | ${(e.calls / steps).toFixed(0)} |`);
    }
    model.dispose();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
