import * as tf from '@tensorflow/tfjs';
import { CoreInputError } from '../errors.js';
import { checkSeed } from '../random.js';

import { ARCHITECTURES, type Architecture } from './architectures.js';
import { batchNormalization } from './batch-norm-train.js';
import { conv2d } from './conv-layer.js';

export { ARCHITECTURES, type Architecture };

export interface TemplateOptions {
  /** [height, width, channels] of one sample. */
  inputShape: [number, number, number];
  classes: number;
  /** Same seed → bit-identical initial weights (on the same backend). */
  seed: number;
}

/** BN as PyTorch defaults it (momentum 0.1 there is 0.9 here, eps 1e-5), so peers compare. */
const BN = { axis: -1, momentum: 0.9, epsilon: 1e-5 } as const;

/**
 * Builds a fresh, seeded model. Every layer has an explicit name, so weight names (`fc1/kernel`,
 * `conv1/kernel`, `bn1/moving_mean`, …) are the same in every process: masks and soups line up.
 * The output is logits (no softmax); training and evaluation apply softmax cross-entropy.
 *
 * Initialisation: He-normal kernels for layers followed by ReLU, Glorot-uniform for the output
 * layer, zero biases; each layer's initializer gets its own seed derived from `seed`.
 */
export function buildTemplate(architecture: string, options: TemplateOptions): tf.LayersModel {
  const { inputShape, classes, seed } = options;
  if (!Number.isInteger(classes) || classes < 2) throw new CoreInputError('bad-template', `classes must be an integer ≥ 2, got ${classes}`);
  if (inputShape.length !== 3 || inputShape.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new CoreInputError('bad-template', `inputShape must be [height, width, channels], got ${JSON.stringify(inputShape)}`);
  }
  checkSeed(seed);
  let layerSeed = 0;
  // Distinct, deterministic seed per initializer; the multiplier keeps seeds of neighbouring runs apart.
  const next = () => (seed * 7919 + ++layerSeed) >>> 0;
  const he = () => tf.initializers.heNormal({ seed: next() });
  const glorot = () => tf.initializers.glorotUniform({ seed: next() });
  const input = tf.input({ shape: inputShape, name: 'input' });

  const conv = (x: tf.SymbolicTensor, name: string, filters: number, kernelSize: number, strides = 1) =>
    conv2d({ name, filters, kernelSize, strides, padding: 'same', useBias: false, kernelInitializer: he() }).apply(x) as tf.SymbolicTensor;
  const bn = (x: tf.SymbolicTensor, name: string) => batchNormalization({ name, ...BN }).apply(x) as tf.SymbolicTensor;
  const relu = (x: tf.SymbolicTensor, name: string) => tf.layers.reLU({ name }).apply(x) as tf.SymbolicTensor;
  const dense = (x: tf.SymbolicTensor, name: string, units: number, last = false) =>
    tf.layers
      .dense({ name, units, activation: last ? 'linear' : 'relu', kernelInitializer: last ? glorot() : he() })
      .apply(x) as tf.SymbolicTensor;

  let out: tf.SymbolicTensor;
  switch (architecture as Architecture) {
    case 'lenet-300-100': {
      let x = tf.layers.flatten({ name: 'flatten' }).apply(input) as tf.SymbolicTensor;
      x = dense(x, 'fc1', 300);
      x = dense(x, 'fc2', 100);
      out = dense(x, 'fc3', classes, true);
      break;
    }
    case 'cnn-bn': {
      // conv-BN-ReLU ×2 with 2×2 max pooling after each, then a small dense head.
      let x = relu(bn(conv(input, 'conv1', 32, 3), 'bn1'), 'relu1');
      x = tf.layers.maxPooling2d({ name: 'pool1', poolSize: 2, strides: 2 }).apply(x) as tf.SymbolicTensor;
      x = relu(bn(conv(x, 'conv2', 64, 3), 'bn2'), 'relu2');
      x = tf.layers.maxPooling2d({ name: 'pool2', poolSize: 2, strides: 2 }).apply(x) as tf.SymbolicTensor;
      x = tf.layers.flatten({ name: 'flatten' }).apply(x) as tf.SymbolicTensor;
      x = dense(x, 'fc1', 128);
      out = dense(x, 'fc2', classes, true);
      break;
    }
    case 'resnet-small': {
      // A CIFAR-style ResNet cut down: stem, three basic blocks (16, 32/2, 64/2 channels),
      // 1×1 projection shortcuts where the shape changes, global average pooling, dense.
      let x = relu(bn(conv(input, 'stem_conv', 16, 3), 'stem_bn'), 'stem_relu');
      const block = (h: tf.SymbolicTensor, name: string, filters: number, strides: number) => {
        let y = relu(bn(conv(h, `${name}_conv1`, filters, 3, strides), `${name}_bn1`), `${name}_relu1`);
        y = bn(conv(y, `${name}_conv2`, filters, 3), `${name}_bn2`);
        const inChannels = h.shape[h.shape.length - 1];
        const shortcut =
          strides !== 1 || inChannels !== filters ? bn(conv(h, `${name}_proj`, filters, 1, strides), `${name}_proj_bn`) : h;
        const sum = tf.layers.add({ name: `${name}_add` }).apply([y, shortcut]) as tf.SymbolicTensor;
        return relu(sum, `${name}_relu2`);
      };
      x = block(x, 'block1', 16, 1);
      x = block(x, 'block2', 32, 2);
      x = block(x, 'block3', 64, 2);
      x = tf.layers.globalAveragePooling2d({ name: 'gap' }).apply(x) as tf.SymbolicTensor;
      out = dense(x, 'fc', classes, true);
      break;
    }
    default:
      throw new CoreInputError('unknown-architecture', `unknown architecture "${architecture}"`, {
        architecture,
        known: [...ARCHITECTURES],
      });
  }
  return tf.model({ inputs: input, outputs: out, name: architecture });
}
