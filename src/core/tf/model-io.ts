import * as tf from '@tensorflow/tfjs';
import { CoreInputError } from '../errors.js';
import type { TensorEntry } from '../tensors.js';
// Register the BatchNormalization and Conv2D classes saved models deserialise into (faster training on wasm).
import './batch-norm-train.js';
import './conv-layer.js';

/** The two parts of a TensorFlow.js layers checkpoint, as `model.save(tf.io.http(…))` sends them. */
export interface SavedLayersModel {
  /** model.json: `{ format, generatedBy, convertedBy, modelTopology, weightsManifest }`. */
  modelJson: ModelJson;
  /** The concatenated weights (`model.weights.bin`), in `weightsManifest[0].weights` order. */
  weightData: ArrayBuffer;
}

export interface ModelJson {
  format?: string;
  generatedBy?: string;
  convertedBy?: string | null;
  modelTopology: object;
  trainingConfig?: object;
  weightsManifest: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
}

export const WEIGHTS_FILE = 'model.weights.bin';

/** Serialises a model in memory (there is no file handler without tfjs-node). Weight names are kept. */
export async function saveModel(model: tf.LayersModel): Promise<SavedLayersModel> {
  let saved: SavedLayersModel | null = null;
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const weightData = artifacts.weightData == null ? new ArrayBuffer(0) : tf.io.CompositeArrayBuffer.join(artifacts.weightData);
      saved = {
        modelJson: {
          format: artifacts.format ?? 'layers-model',
          generatedBy: artifacts.generatedBy ?? `TensorFlow.js tfjs-layers v${tf.version['tfjs-layers']}`,
          convertedBy: artifacts.convertedBy ?? null,
          modelTopology: artifacts.modelTopology as object,
          ...(artifacts.trainingConfig ? { trainingConfig: artifacts.trainingConfig as object } : {}),
          weightsManifest: [{ paths: [WEIGHTS_FILE], weights: artifacts.weightSpecs ?? [] }],
        },
        weightData,
      };
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    }),
  );
  if (!saved) throw new Error('the model save handler was not called');
  return saved;
}

function parseModelJson(input: ModelJson | string | Uint8Array): ModelJson {
  let json: unknown = input;
  if (typeof input === 'string' || input instanceof Uint8Array) {
    try {
      json = JSON.parse(typeof input === 'string' ? input : new TextDecoder().decode(input));
    } catch (err) {
      throw new CoreInputError('bad-model-json', `model.json is not JSON: ${(err as Error).message}`);
    }
  }
  const j = json as Partial<ModelJson> | null;
  if (!j || typeof j !== 'object' || !j.modelTopology || typeof j.modelTopology !== 'object') {
    throw new CoreInputError('bad-model-json', 'model.json has no modelTopology (only TensorFlow.js layers models can be loaded)');
  }
  if (!Array.isArray(j.weightsManifest)) throw new CoreInputError('bad-model-json', 'model.json has no weightsManifest');
  return j as ModelJson;
}

function toArrayBuffer(data: ArrayBuffer | Uint8Array): ArrayBuffer {
  if (data instanceof ArrayBuffer) return data;
  return data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) as ArrayBuffer;
}

/**
 * Loads a layers model from model.json (object, text or bytes) and its weight bytes. Weight groups
 * of a multi-file manifest must be concatenated in manifest order (as the weights files are).
 */
export async function loadModel(modelJson: ModelJson | string | Uint8Array, weightData: ArrayBuffer | Uint8Array): Promise<tf.LayersModel> {
  const json = parseModelJson(modelJson);
  const weightSpecs = json.weightsManifest.flatMap((group) => group.weights);
  const buffer = toArrayBuffer(weightData);
  // Size check for the plain dtypes only (quantised and string weights have no fixed width).
  const checkable = weightSpecs.every((w) => !w.quantization && w.dtype !== 'string');
  const expected = weightSpecs.reduce((sum, w) => sum + w.shape.reduce((a, b) => a * b, 1) * (w.dtype === 'bool' ? 1 : 4), 0);
  if (checkable && buffer.byteLength !== expected) {
    throw new CoreInputError('bad-weights', `the weights are ${buffer.byteLength} bytes; model.json describes ${expected}`, {
      actualBytes: buffer.byteLength,
      expectedBytes: expected,
    });
  }
  try {
    return await tf.loadLayersModel(
      tf.io.fromMemory({
        modelTopology: json.modelTopology,
        weightSpecs,
        weightData: buffer,
        ...(json.trainingConfig ? { trainingConfig: json.trainingConfig as tf.io.TrainingConfig } : {}),
      }),
    );
  } catch (err) {
    throw new CoreInputError('bad-model', `the layers model could not be built: ${(err as Error).message}`, {}, 422);
  }
}

/** The model's weights by their stable name (`fc1/kernel`), in model order. */
export function namedWeights(model: tf.LayersModel): Map<string, tf.LayerVariable> {
  const out = new Map<string, tf.LayerVariable>();
  for (const w of model.weights) out.set(w.originalName, w);
  return out;
}

/** Assigns weights bytes laid out as `entries` (TensorFlow.js weights, offsets from 0) to a model's variables. */
export function setWeightsFromBytes(variables: Map<string, tf.LayerVariable>, entries: readonly TensorEntry[], bytes: Uint8Array): void {
  tf.tidy(() => {
    for (const e of entries) {
      const v = variables.get(e.name);
      if (!v) throw new Error(`the scratch model has no weight ${e.name}`);
      const at = bytes.byteOffset + e.byteOffset;
      // Views where aligned (tf.tensor copies them onto its backend), a copy otherwise.
      const raw = at % 4 === 0 ? bytes.buffer : bytes.slice(e.byteOffset, e.byteOffset + e.byteLength).buffer;
      const base = at % 4 === 0 ? at : 0;
      const n = e.byteLength / (e.dtype === 'F32' || e.dtype === 'I32' ? 4 : 1);
      const values = e.dtype === 'F32' ? new Float32Array(raw, base, n) : e.dtype === 'I32' ? new Int32Array(raw, base, n) : new Uint8Array(raw, base, n);
      v.write(tf.tensor(values, e.shape, e.dtype === 'F32' ? 'float32' : e.dtype === 'I32' ? 'int32' : 'bool'));
    }
  });
}
