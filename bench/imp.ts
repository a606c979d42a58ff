/**
 * One candidate on two cores (an IMP phase): training throughput of a lone `trainModel` with a
 * gradient helper on the second core (src/workers/gradient-helper.ts, data-parallel, gradients
 * averaged) against the same model on one thread, alternating A/B windows in one process, MNIST,
 * batch 128. Goal ≥ 1.6×; the machine is shared, so read the ratio beside the load.
 *
 *   npm run bench:imp [-- --steps 30 --windows 3]
 */
import os from 'node:os';
import { pathToFileURL } from 'node:url';
import { initBackend } from '../src/core/tf/backend.js';
import { buildTemplate } from '../src/core/tf/templates.js';
import { trainModel } from '../src/core/tf/train.js';
import { startGradientHelper } from '../src/workers/gradient-helper.js';
import { printMachine } from './machine.js';
import { benchTrainingConfig, loadMnistForBench } from './train.js';

async function main() {
  const args = process.argv.slice(2);
  const arg = (name: string, fallback: string) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : fallback;
  };
  const steps = Number(arg('steps', '30'));
  const windows = Number(arg('windows', '3'));
  await initBackend('wasm');
  console.log('# bench:imp — one candidate: 1 thread vs 2 threads (gradient helper), MNIST, batch 128, SGD');
  printMachine();
  const ds = loadMnistForBench(20000);
  console.log('| model | 1 thread samples/s | 2 threads samples/s | ratio | load (1 min) at start / end |');
  console.log('| --- | ---: | ---: | ---: | --- |');
  for (const arch of (arg('arch', 'lenet-300-100,cnn-bn')).split(',')) {
    const n = arch === 'cnn-bn' ? Math.max(4, Math.round(steps / 6)) : steps;
    const model = buildTemplate(arch, { inputShape: [28, 28, 1], classes: 10, seed: 1 });
    const helper = await startGradientHelper(model, { backend: 'wasm', inputShape: [28, 28, 1], classes: 10 });
    const loadStart = os.loadavg()[0];
    try {
      await trainModel(model, ds, benchTrainingConfig(ds, 128, 3, 0));
      await trainModel(model, ds, benchTrainingConfig(ds, 128, 3, 0), { helper });
      const one: number[] = [];
      const two: number[] = [];
      for (let w = 0; w < windows; w++) {
        one.push((await trainModel(model, ds, benchTrainingConfig(ds, 128, n, w + 1))).samplesPerSecond);
        two.push((await trainModel(model, ds, benchTrainingConfig(ds, 128, n, w + 1), { helper })).samplesPerSecond);
      }
      const med = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
      console.log(`| ${arch} | ${med(one).toFixed(0)} | ${med(two).toFixed(0)} | ${(med(two) / med(one)).toFixed(2)}× | ${loadStart.toFixed(1)} / ${os.loadavg()[0].toFixed(1)} |`);
    } finally {
      await helper.close();
      model.dispose();
    }
  }
  console.log('\nmedians of alternating windows; each window re-sends the weights to the helper every step.');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
