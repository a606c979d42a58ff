import type { IncomingMessage } from 'node:http';
import busboy from 'busboy';
import type { ArtifactStore, ArtifactWriter, StoredArtifact } from '../storage/artifact-store.js';
import { UploadTooLargeError } from '../storage/artifact-store.js';
import { SafetensorsIngest } from '../core/checkpoint/safetensors.js';
import { parseModelJson, WeightsIngest } from '../core/checkpoint/tfjs.js';
import { CoreInputError } from '../core/errors.js';
import { ImpliedMaskFollower, ImpliedMaskStream } from '../core/masks/implied-stream.js';
import type { TensorEntry, TensorStats } from '../core/tensors.js';

/** What an upload produced: committed artifacts and the facts about every tensor. */
export interface IngestedCheckpoint {
  format: 'safetensors' | 'tfjs-layers';
  weights: StoredArtifact;
  topology: StoredArtifact | null;
  entries: TensorEntry[];
  stats: TensorStats[];
  metadata: Record<string, string>;
  /** Hash of the exact-zero pattern on the prunable tensors, computed as the bytes arrived (null when none is prunable). */
  impliedMaskHash: string | null;
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

/**
 * The multipart body `model.save(tf.io.http(url))` sends: a `model.json` part (topology and weights
 * manifest) and a `model.weights.bin` part. tf.io.http sends model.json first, so the weights are
 * checked against the manifest as they stream.
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
      bb = busboy({ headers: req.headers, limits: { files: 3, fields: 4, fileSize: maxBytes } });
    } catch (err) {
      reject(new CoreInputError('invalid-multipart', `not a multipart body: ${(err as Error).message}`));
      return;
    }
    let modelJson: ReturnType<typeof parseModelJson> | null = null;
    let topology: StoredArtifact | null = null;
    let weights: StoredArtifact | null = null;
    let weightsWriter: ArtifactWriter | null = null;
    let stats: TensorStats[] | null = null;
    let impliedMaskHash: string | null = null;
    let failed: unknown = null;
    const work: Promise<void>[] = [];
    // Parts arrive in order, but their handlers run concurrently: the weights wait for model.json.
    let modelJsonRead: Promise<void> | null = null;

    const fail = (err: unknown) => {
      if (failed) return;
      failed = err;
      req.unpipe(bb);
      reject(err);
    };

    bb.on('file', (field, stream) => {
      const job = (async () => {
        if (field === 'model.json') {
          if (modelJsonRead) throw new CoreInputError('invalid-multipart', 'more than one model.json part');
          const chunks: Buffer[] = [];
          let size = 0;
          for await (const c of stream as AsyncIterable<Buffer>) {
            size += c.length;
            if (size > MODEL_JSON_LIMIT) throw new CoreInputError('invalid-tfjs-model', `model.json is larger than ${MODEL_JSON_LIMIT} bytes`, {}, 413);
            chunks.push(c);
          }
          const bytes = Buffer.concat(chunks);
          modelJson = parseModelJson(bytes, { maxBytes: MODEL_JSON_LIMIT });
          topology = await store.put(bytes);
          committed.push(topology);
        } else if (field === 'model.weights.bin') {
          if (weightsWriter) throw new CoreInputError('invalid-multipart', 'more than one model.weights.bin part');
          await modelJsonRead?.catch(() => {});
          if (failed) return;
          if (!modelJson) throw new CoreInputError('invalid-multipart', 'the model.json part must come before model.weights.bin (tf.io.http sends it first)');
          const ingest = new WeightsIngest(modelJson.entries, modelJson.weightBytes);
          const implied = new ImpliedMaskStream(modelJson.entries);
          weightsWriter = await store.createWriter({ maxBytes });
          for await (const c of stream as AsyncIterable<Buffer>) {
            ingest.push(c);
            implied.push(c, weightsWriter.bytesWritten);
            await weightsWriter.write(c);
          }
          if ((stream as unknown as { truncated?: boolean }).truncated) throw new UploadTooLargeError(maxBytes);
          stats = ingest.finish().stats;
          impliedMaskHash = implied.hash();
          weights = await weightsWriter.commit();
          committed.push(weights);
        } else {
          stream.resume();
          throw new CoreInputError('invalid-multipart', `unexpected part "${field}": send model.json and model.weights.bin`);
        }
      })();
      if (field === 'model.json') modelJsonRead = job;
      work.push(job.catch((err) => {
        stream.resume();
        fail(err);
      }));
    });
    bb.on('filesLimit', () => fail(new CoreInputError('invalid-multipart', 'too many parts: send model.json and model.weights.bin')));
    bb.on('field', (name) => fail(new CoreInputError('invalid-multipart', `unexpected field "${name}": send model.json and model.weights.bin as files`)));
    bb.on('error', (err) => fail(new CoreInputError('invalid-multipart', `malformed multipart body: ${(err as Error).message}`)));
    bb.on('close', async () => {
      await Promise.all(work);
      if (failed) {
        await weightsWriter?.abort();
        return;
      }
      if (!modelJson || !topology) return fail(new CoreInputError('invalid-multipart', 'the model.json part is missing'));
      const mj = modelJson as ReturnType<typeof parseModelJson>;
      if (!weights || !stats) {
        if (mj.entries.length > 0) return fail(new CoreInputError('invalid-multipart', 'the model.weights.bin part is missing'));
        return fail(new CoreInputError('invalid-tfjs-model', 'the model has no weights'));
      }
      resolve({ format: 'tfjs-layers', weights, topology, entries: mj.entries, stats, metadata: {}, impliedMaskHash });
    });
    req.pipe(bb);
  });
}
