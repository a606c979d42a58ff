/**
 * Starts @tensorflow/tfjs-backend-wasm 4.22's threaded-SIMD build (XNNPACK's thread pool) in Node,
 * inside whatever thread calls it (a piscina worker thread in the service).
 *
 * tfjs switches that build off in Node (`WASM_HAS_MULTITHREAD_SUPPORT` is false when `IS_NODE`,
 * tfjs issue 3830) because Emscripten's pthread pool cannot start there as shipped:
 * - the pthread workers are started from `URL.createObjectURL(new Blob([workerScript]))`, and
 *   Node's `Worker` refuses `blob:` URLs (`ERR_WORKER_PATH`);
 * - the main script is handed to each pthread as a Blob (`mainScriptUrlOrBlob`), which the worker
 *   script turns into a `blob:` URL and reads with `fs.readFileSync` (ENOENT);
 * - that main script is `factory.toString()` of a function from tfjs's rollup bundle, so it refers to
 *   the bundle's module-level names (`require$$0`…, `commonjsGlobal`, tslib's `__values`…), which
 *   do not exist where the pthread evaluates it;
 * - the C++ side caps the pool at `emscripten_num_logical_cores() / 2`, i.e. `os.cpus().length / 2`
 *   (1 on a 2-core machine, whatever `setThreadsCount` asked for).
 *
 * What this does, only while the backend initialises and only in this thread: records the text of
 * the Blobs tfjs makes; answers the global `Worker` that Emscripten assigns and constructs with a
 * subclass of `worker_threads.Worker` that starts a `blob:` worker from the recorded script text
 * (`eval: true`; nothing is written to disk) with the main script in `workerData`, read back by a
 * small prelude instead of the blob; and makes `os.cpus()` report at least 2 × threads entries.
 * Everything but the global `Worker` (which Emscripten's own code sets for good in Node) is put
 * back afterwards. The pthread workers are unref'd, so they never keep their thread alive; Node
 * stops them when that thread ends (normally or by `terminate()`).
 *
 * Tied to the pinned tfjs 4.22 bundle: if its scripts are not found where expected, this throws
 * and the caller falls back to the single-threaded build.
 */
import { createRequire } from 'node:module';
import * as os from 'node:os';
import { Worker as NodeWorker, type WorkerOptions } from 'node:worker_threads';

const require = createRequire(import.meta.url);

const MAIN_PREFIX = 'var WasmBackendModuleThreadedSimd = ';
const WORKER_MARK = 'WasmBackendModuleThreadedSimd(Module)';

// Names the bundle's factory uses from the bundle's own scope (found by listing the identifiers
// the factory's text uses but never declares), defined again where a pthread evaluates it.
const MAIN_PRELUDE = `var commonjsGlobal = globalThis;
var require$$0 = require("fs"), require$$1 = require("path"), require$$3 = require("perf_hooks"), require$$4 = require("os");
var __dirname = require("worker_threads").workerData.dirname;
var _scriptDir = __dirname + "/tf-backend-wasm.node.js";
function __values(o){var s=typeof Symbol==="function"&&Symbol.iterator,m=s&&o[s],i=0;if(m)return m.call(o);if(o&&typeof o.length==="number")return{next:function(){if(o&&i>=o.length)o=void 0;return{value:o&&o[i++],done:!o}}};throw new TypeError(s?"Object is not iterable.":"Symbol.iterator is not defined.")}
function __read(o,n){var m=typeof Symbol==="function"&&o[Symbol.iterator];if(!m)return o;var i=m.call(o),r,ar=[],e;try{while((n===void 0||n-->0)&&!(r=i.next()).done)ar.push(r.value)}catch(error){e={error:error}}finally{try{if(r&&!r.done&&(m=i["return"]))m.call(i)}finally{if(e)throw e.error}}return ar}
function __spreadArray(to,from,pack){if(pack||arguments.length===2)for(var i=0,l=from.length,ar;i<l;i++){if(ar||!(i in from)){if(!ar)ar=Array.prototype.slice.call(from,0,i);ar[i]=from[i]}}return to.concat(ar||Array.prototype.slice.call(from))}
`;

// Runs first in each pthread worker: the worker script's `importScripts` (which it assigns to the
// global itself) reads a file; this one evaluates the main script handed over in workerData.
const WORKER_PRELUDE = `(function(){var wd=require("worker_threads").workerData;var main=wd.main;
Object.defineProperty(globalThis,"importScripts",{configurable:true,get:function(){return function(){(0,eval)(main)}},set:function(){}});
URL.createObjectURL=function(){return "sparsoup:wasm-main"};URL.revokeObjectURL=function(){};})();
`;

interface PThreadApi {
  unusedWorkers: NodeWorker[];
  runningWorkers: NodeWorker[];
}

export interface ThreadedWasmResult {
  /** XNNPACK's thread count as the backend reports it (`getThreadsCount()`). */
  threads: number;
}

/** Why the threaded build cannot run in this process, or null when it can. */
export function threadedWasmUnavailable(): string | null {
  if (typeof SharedArrayBuffer === 'undefined') return 'SharedArrayBuffer is not available';
  try {
    new MessageChannel().port1.postMessage(new SharedArrayBuffer(1));
  } catch {
    return 'a SharedArrayBuffer cannot be posted to another thread';
  }
  return null;
}

/**
 * Initialises the wasm backend with `threads` XNNPACK threads (the calling thread and threads − 1
 * pthreads). `setBackend` is the caller's `tf.setBackend('wasm')` + `tf.ready()`.
 */
export async function initThreadedWasm(threads: number, setBackend: () => Promise<void>): Promise<ThreadedWasmResult> {
  if (!Number.isInteger(threads) || threads < 2 || threads > 8) throw new Error(`wasm threads must be 2..8, not ${threads}`);
  const unavailable = threadedWasmUnavailable();
  if (unavailable) throw new Error(`the threaded wasm build cannot run: ${unavailable}`);
  const tf = await import('@tensorflow/tfjs');
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  const dirname = require.resolve('@tensorflow/tfjs-backend-wasm').replace(/\/[^/]*$/, '');

  const texts = { main: null as string | null, worker: null as string | null };
  const NativeBlob = globalThis.Blob;
  class RecordingBlob extends NativeBlob {
    constructor(...args: ConstructorParameters<typeof Blob>) {
      super(...args);
      const parts = args[0] as unknown[] | undefined;
      const text = parts?.length === 1 && typeof parts[0] === 'string' ? parts[0] : null;
      if (text?.startsWith(MAIN_PREFIX)) texts.main = text;
      else if (text?.includes(WORKER_MARK)) texts.worker = text;
    }
  }
  class PthreadWorker extends NodeWorker {
    constructor(filename: string | URL, options?: WorkerOptions) {
      if (typeof filename !== 'string' || !filename.startsWith('blob:') || !texts.main || !texts.worker) {
        super(filename, options);
        return;
      }
      URL.revokeObjectURL(filename);
      // The worker script starts with "use strict"; the prelude goes after it.
      const code = texts.worker.replace(/^"use strict";/, `"use strict";${WORKER_PRELUDE}`);
      super(code, { ...options, eval: true, workerData: { main: MAIN_PRELUDE + texts.main, dirname } });
    }
  }

  const cpus = os.cpus;
  const osModule = require('node:os') as typeof os;
  const hadWorker = Object.getOwnPropertyDescriptor(globalThis, 'Worker');
  globalThis.Blob = RecordingBlob as typeof Blob;
  osModule.cpus = () => {
    const list = cpus();
    while (list.length > 0 && list.length < 2 * threads) list.push(list[0]);
    return list;
  };
  Object.defineProperty(globalThis, 'Worker', {
    configurable: true,
    get: () => PthreadWorker,
    set: () => {},
  });
  try {
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
    wasm.setThreadsCount(threads);
    await setBackend();
  } finally {
    globalThis.Blob = NativeBlob;
    osModule.cpus = cpus;
    if (hadWorker) Object.defineProperty(globalThis, 'Worker', hadWorker);
    else Object.defineProperty(globalThis, 'Worker', { configurable: true, writable: true, value: PthreadWorker });
  }
  const backend = tf.backend() as unknown as { wasm?: { PThread?: PThreadApi } };
  const pthread = backend.wasm?.PThread;
  if (!pthread) throw new Error('the wasm backend started without its pthread pool');
  for (const w of [...pthread.unusedWorkers, ...pthread.runningWorkers]) w.unref();
  return { threads: wasm.getThreadsCount() };
}
