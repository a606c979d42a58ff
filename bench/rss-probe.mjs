// Preloaded into the service by bench:rss (`node --import`): appends the main thread's
// process.memoryUsage() to RSS_PROBE_FILE every 200 ms, so the bench can say what the heap holds.
import { appendFileSync } from 'node:fs';
import { isMainThread } from 'node:worker_threads';

const file = process.env.RSS_PROBE_FILE;
if (file && isMainThread) {
  setInterval(() => {
    appendFileSync(file, `${JSON.stringify({ t: Date.now(), ...process.memoryUsage() })}\n`);
  }, 200).unref();
}
