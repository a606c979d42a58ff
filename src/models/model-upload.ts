import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { type FileHandle, mkdir, open, rm } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import busboy from 'busboy';
import { SafetensorsIngest, type SafetensorsIngestResult, safetensorsLayout } from '../core/checkpoint/safetensors.js';
import { checkShardAgainstIndex, type ModelShard, parseSafetensorsIndex, SAFETENSORS_INDEX, type SafetensorsIndex } from '../core/checkpoint/sharded.js';
import { type ParsedModelJson, parseModelJson, storedModelJson, WeightsIngest } from '../core/checkpoint/tfjs.js';
import { TfjsWeightsDecoder } from '../core/checkpoint/tfjs-quantization.js';
import { CoreInputError } from '../core/errors.js';
import { ImpliedMaskFollower, ImpliedMaskStream } from '../core/masks/implied-stream.js';
import type { TensorEntry, TensorStats } from '../core/tensors.js';
import type { ArtifactStore, StoredArtifact } from '../storage/artifact-store.js';
import { UploadTooLargeError } from '../storage/artifact-store.js';

/** What an upload produced: committed artifacts and the facts about every tensor. */
export interface IngestedCheckpoint {
  format: 'safetensors' | 'tfjs-layers' | 'tfjs-graph';
  weights: StoredArtifact;
  topology: StoredArtifact | null;
  entries: TensorEntry[];
  stats: TensorStats[];
  metadata: Record<string, string>;
  /** Hash of the exact-zero pattern on the prunable tensors, computed as the bytes arrived (null when none is prunable). */
  impliedMaskHash: string | null;
  /** A sharded safetensors upload: its files and which tensors lie in each (null: one file). */
  shards?: ModelShard[] | null;
}

const MODEL_JSON_LIMIT = 64 * 1024 * 1024;

/**
 * Streams a safetensors body into the artifact store while the parser checks it: a bad header is
 * refused as soon as it has arrived, and a body over the limit is cut off, not read to the end.
 */
export async function ingestSafetensors(req: AsyncIterable<Uint8Array>, store: ArtifactStore, maxBytes: number): Promise<IngestedCheckpoint> {
  const writer = await store.createWriter({ maxBytes });
  try {
    const ingest = new SafetensorsIngest();
    const implied = new ImpliedMaskFollower(() => ingest.header?.entries);
    for await (const chunk of req) {
      ingest.push(chunk);
      implied.push(chunk);
      await writer.write(chunk);
    }
    const parsed = ingest.finish();
    const weights = await writer.commit();
    return { format: 'safetensors', weights, topology: null, entries: parsed.entries, stats: parsed.stats, metadata: parsed.metadata, impliedMaskHash: implied.hash() };
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

/** The part tf.io.http sends: every weight file of the manifest, concatenated in manifest order. */
export const CONCATENATED_WEIGHTS_PART = 'model.weights.bin';

const multipartError = (message: string, details: Record<string, unknown> = {}) => new CoreInputError('invalid-multipart', message, details);

/** A weight file as the manifest names it: "./group1-shard1of2" and "group1-shard1of2" are one file. */
function fileName(path: string): string {
  return path.replace(/^(\.\/)+/, '');
}

/** A part spooled to a temporary file in the store's tmp folder (collected there after a crash). */
interface Spool {
  path: string;
  handle: FileHandle | null;
  size: number;
  /** A safetensors shard: its header and statistics, checked as it streamed in. */
  shard?: SafetensorsIngestResult;
}

/**
 * A TensorFlow.js model as multipart: a `model.json` part first (tf.io.http sends it first; a curl
 * `-F` list is sent in its order), then either the weight files its manifest names, one part each
 * and named as the manifest names them, in any order (the converter's folder as it lies on disk),
 * or one `model.weights.bin` part holding all of them concatenated (tf.io.http, the CLI).
 *
 * Weight parts are spooled to temporary files, checked against the manifest (no part missing, extra,
 * twice, or with more or fewer bytes than its group needs), then streamed in manifest order through
 * the dequantizer into one stored float32 weights file. Whatever goes wrong (a refused part, a body
 * over the limit, a multipart body that never ends, a client that goes away), every temporary file
 * and handle is gone before the promise rejects; `committed` holds what the caller must discard.
 */
export function ingestTfjsMultipart(
  req: IncomingMessage,
  store: ArtifactStore,
  maxBytes: number,
  /** Artifacts committed so far, so the caller can discard them when the upload fails. */
  committed: StoredArtifact[],
): Promise<IngestedCheckpoint> {
  return new Promise<IngestedCheckpoint>((resolve, reject) => {
    let bb: busboy.Busboy;
    try {
      // fileSize one over the limit: busboy then truncates a part only past the limit, and we refuse it.
      bb = busboy({ headers: req.headers, limits: { fileSize: maxBytes + 1, fields: 1, parts: 10_000, files: 10_000 } });
    } catch (err) {
      reject(multipartError(`not a multipart body: ${(err as Error).message}`));
      return;
    }
    let parsed: ParsedModelJson | null = null;
    let hfIndex: SafetensorsIndex | null = null;
    /** Reading model.json: parts after it wait for it (busboy announces a part before the previous one is consumed). */
    let modelJsonRead: Promise<void> | null = null;
    /** Manifest file name → its group; filled when model.json has arrived. */
    const groupOf = new Map<string, number>();
    const spools = new Map<string, Spool>();
    const seen = new Set<string>();
    const streams = new Set<Readable>();
    const jobs: Promise<void>[] = [];
    let failure: unknown = null;
    let bodyBytes = 0;

    const cleanup = async () => {
      for (const s of spools.values()) {
        await s.handle?.close().catch(() => {});
        s.handle = null;
        await rm(s.path, { force: true });
      }
    };
    const fail = (err: unknown) => {
      if (failure) return;
      failure = err;
      req.unpipe(bb);
      // Ends the part loops now (their streams would otherwise wait for bytes that never come).
      for (const s of streams) s.destroy();
      void Promise.allSettled(jobs).then(async () => {
        await cleanup();
        reject(err);
      });
    };

    req.on('data', (chunk: Buffer) => {
      // Counts the whole body, chunked ones included (Content-Length was checked before).
      bodyBytes += chunk.length;
      if (bodyBytes > maxBytes) fail(new UploadTooLargeError(maxBytes));
    });
    req.on('close', () => {
      if (!req.complete) fail(multipartError('the client closed the connection before the upload was complete'));
    });

    const spoolPart = async (name: string, stream: Readable, maxPartBytes: number, what: string, check?: SafetensorsIngest) => {
      const spool: Spool = { path: join(store.tmpDir, `${Date.now()}-${randomBytes(8).toString('hex')}.part`), handle: null, size: 0 };
      spools.set(name, spool);
      await mkdir(store.tmpDir, { recursive: true });
      spool.handle = await open(spool.path, 'wx');
      for await (const c of stream as AsyncIterable<Buffer>) {
        spool.size += c.length;
        if (spool.size > maxPartBytes) throw new CoreInputError('invalid-tfjs-weights', `${what} has more bytes than the manifest names (${maxPartBytes})`, { part: name, expectedBytes: maxPartBytes });
        check?.push(c);
        let off = 0;
        while (off < c.length) off += (await spool.handle.write(c, off, c.length - off)).bytesWritten;
      }
      if ((stream as unknown as { truncated?: boolean }).truncated) throw new UploadTooLargeError(maxBytes);
      if (check) {
        spool.shard = check.finish();
        checkShardAgainstIndex(hfIndex!, name, spool.shard.entries);
      }
      await spool.handle.close();
      spool.handle = null;
    };

    const handlePart = async (field: string, stream: Readable) => {
      if (field.includes('/') || field.includes('\\')) {
        throw multipartError(`part "${field}" has a path separator in its name: name each part as its file (e.g. group1-shard1of2)`, { part: field });
      }
      if (field === SAFETENSORS_INDEX) {
        const chunks: Buffer[] = [];
        for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c);
        hfIndex = parseSafetensorsIndex(Buffer.concat(chunks));
        return;
      }
      if (field === 'model.json') {
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const c of stream as AsyncIterable<Buffer>) {
          size += c.length;
          if (size > MODEL_JSON_LIMIT) throw new CoreInputError('invalid-tfjs-model', `model.json is larger than ${MODEL_JSON_LIMIT} bytes`, {}, 413);
          chunks.push(c);
        }
        const p = parseModelJson(Buffer.concat(chunks), { maxBytes: MODEL_JSON_LIMIT });
        if (p.entries.length === 0) throw new CoreInputError('invalid-tfjs-model', 'the model has no weights');
        p.groups.forEach((g, i) => {
          for (const path of g.paths) groupOf.set(fileName(path), i);
        });
        parsed = p;
        return;
      }
      if (!modelJsonRead) throw multipartError(`part "${field}" came before model.json (or ${SAFETENSORS_INDEX}): send it first (tf.io.http does)`, { part: field });
      if (seen.has(field)) throw multipartError(`part "${field}" was sent twice`, { part: field });
      seen.add(field);
      await modelJsonRead;
      if (failure) return;
      if (hfIndex) {
        if (!hfIndex.shards.includes(field)) throw multipartError(`part "${field}" is not a shard the index names (it names ${hfIndex.shards.map((n) => `"${n}"`).join(', ')})`, { part: field });
        return spoolPart(field, stream, maxBytes, `shard "${field}"`, new SafetensorsIngest());
      }
      if (!parsed) return;
      const p = parsed as ParsedModelJson;
      if (field === CONCATENATED_WEIGHTS_PART && !groupOf.has(field)) {
        if (spools.size > 0) throw multipartError(`part "${field}" (all weight files concatenated) cannot come beside single weight files`, { part: field });
        return spoolPart(field, stream, p.groups.reduce((n, g) => n + g.sourceBytes, 0), `part "${field}"`);
      }
      const group = groupOf.get(field);
      if (group === undefined) {
        throw multipartError(`part "${field}" is not a weight file the manifest names (it names ${[...groupOf.keys()].map((n) => `"${n}"`).join(', ')})`, { part: field });
      }
      if (spools.has(CONCATENATED_WEIGHTS_PART)) throw multipartError(`part "${field}" cannot come beside "${CONCATENATED_WEIGHTS_PART}" (all weight files concatenated)`, { part: field });
      return spoolPart(field, stream, p.groups[group].sourceBytes, `weight file "${field}"`);
    };

    bb.on('file', (field, stream) => {
      streams.add(stream);
      // An error on a part is answered through its loop (or fail); never an unhandled 'error' event.
      stream.on('error', () => {});
      if (failure) {
        stream.resume();
        return;
      }
      const first = field === 'model.json' || field === SAFETENSORS_INDEX;
      if (first && modelJsonRead) {
        stream.resume();
        fail(multipartError(`more than one model.json or ${SAFETENSORS_INDEX} part`, { part: field }));
        return;
      }
      const job = handlePart(field, stream).catch((err) => {
        stream.resume();
        fail(err);
      });
      if (first) modelJsonRead = job;
      jobs.push(job.finally(() => streams.delete(stream)));
    });
    bb.on('partsLimit', () => fail(multipartError('too many parts')));
    bb.on('filesLimit', () => fail(multipartError('too many parts')));
    bb.on('fieldsLimit', () => fail(multipartError('unexpected form field: send model.json and the weight files as file parts')));
    bb.on('field', (name) => fail(multipartError(`unexpected field "${name}": send model.json and the weight files as file parts`, { part: name })));
    bb.on('error', (err) => fail(multipartError(`malformed multipart body: ${(err as Error).message}`)));
    bb.on('close', async () => {
      await Promise.allSettled(jobs);
      if (failure) return;
      try {
        const result = await assemble();
        if (failure) return;
        resolve(result);
      } catch (err) {
        fail(err);
      }
    });

    /** Every weight file present with its group's bytes, then streamed in manifest order into the store. */
    const assemble = async (): Promise<IngestedCheckpoint> => {
      if (hfIndex) return assembleShards(hfIndex);
      if (!parsed) throw multipartError('the model.json part is missing');
      const p = parsed as ParsedModelJson;
      let files: string[];
      if (spools.has(CONCATENATED_WEIGHTS_PART) && !groupOf.has(CONCATENATED_WEIGHTS_PART)) {
        files = [CONCATENATED_WEIGHTS_PART];
      } else {
        const missing = [...groupOf.keys()].filter((n) => !spools.has(n));
        if (missing.length === spools.size + missing.length) throw multipartError(`no weight files: send ${missing.map((n) => `"${n}"`).join(', ')} (or "${CONCATENATED_WEIGHTS_PART}")`, { missing });
        if (missing.length) throw multipartError(`the manifest names weight ${missing.length === 1 ? 'file' : 'files'} ${missing.map((n) => `"${n}"`).join(', ')}, which did not come`, { missing });
        p.groups.forEach((g) => {
          const names = g.paths.map(fileName);
          const got = names.reduce((n, name) => n + spools.get(name)!.size, 0);
          if (got !== g.sourceBytes) {
            const which = names.length === 1 ? `weight file "${names[0]}" has` : `weight files ${names.map((n) => `"${n}"`).join(', ')} have`;
            throw new CoreInputError('invalid-tfjs-weights', `${which} ${got} bytes; the manifest names ${g.sourceBytes}`, { files: names, expectedBytes: g.sourceBytes, actualBytes: got });
          }
        });
        files = p.groups.flatMap((g) => g.paths.map(fileName));
      }
      const decoder = new TfjsWeightsDecoder(p.sourceWeights);
      const ingest = new WeightsIngest(p.entries, p.weightBytes);
      const implied = new ImpliedMaskStream(p.entries);
      const writer = await store.createWriter({ maxBytes: Math.max(maxBytes, p.weightBytes) });
      let weights: StoredArtifact;
      let stats: TensorStats[];
      try {
        for (const f of files) {
          for await (const c of createReadStream(spools.get(f)!.path) as AsyncIterable<Buffer>) {
            await decoder.push(c, async (out) => {
              ingest.push(out);
              implied.push(out, writer.bytesWritten);
              await writer.write(out);
            });
          }
        }
        decoder.finish();
        stats = ingest.finish().stats;
        weights = await writer.commit();
      } catch (err) {
        await writer.abort();
        throw err;
      }
      committed.push(weights);
      await cleanup();
      const topology = await store.put(Buffer.from(JSON.stringify(storedModelJson(p))));
      committed.push(topology);
      return { format: p.graph ? 'tfjs-graph' : 'tfjs-layers', weights, topology, entries: p.entries, stats, metadata: {}, impliedMaskHash: implied.hash() };
    };
    /** Every shard present and checked: one safetensors file, shard after shard, and the layout. */
    const assembleShards = async (index: SafetensorsIndex): Promise<IngestedCheckpoint> => {
      const missing = index.shards.filter((n) => !spools.has(n));
      if (missing.length) throw multipartError(`the index names ${missing.length === 1 ? 'shard' : 'shards'} ${missing.map((n) => `"${n}"`).join(', ')}, which did not come`, { missing });
      const shards: ModelShard[] = index.shards.map((name) => ({ name, tensors: spools.get(name)!.shard!.entries.map((e) => e.name) }));
      const specs = index.shards.flatMap((name) => spools.get(name)!.shard!.entries.map(({ name: n, dtype, shape }) => ({ name: n, dtype, shape })));
      const metadata = spools.get(index.shards[0])!.shard!.metadata;
      const { header } = safetensorsLayout(specs, metadata);
      const ingest = new SafetensorsIngest();
      const implied = new ImpliedMaskFollower(() => ingest.header?.entries);
      let result: SafetensorsIngestResult | null = null;
      // The joined file, checked as it goes; store.put aborts the write if the check throws.
      async function* joined(): AsyncIterable<Uint8Array> {
        const seen = (c: Uint8Array) => {
          ingest.push(c);
          implied.push(c);
          return c;
        };
        yield seen(header);
        for (const name of index.shards) {
          const { path, shard } = spools.get(name)!;
          // A shard's tensor data lies back to back after its header, in the order its entries list.
          if (shard!.dataBytes === 0) continue;
          for await (const c of createReadStream(path, { start: shard!.dataStart }) as AsyncIterable<Buffer>) yield seen(c);
        }
        result = ingest.finish();
      }
      const weights = await store.put(joined());
      committed.push(weights);
      await cleanup();
      const { entries, stats, metadata: joinedMetadata } = result!;
      return { format: 'safetensors', weights, topology: null, entries, stats, metadata: joinedMetadata, shards, impliedMaskHash: implied.hash() };
    };
    req.pipe(bb);
  });
}
