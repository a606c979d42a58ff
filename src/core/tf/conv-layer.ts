import * as tf from '@tensorflow/tfjs';

/**
 * tfjs-layers' Conv2D, with one change: a 2-D convolution without bias and with a linear activation
 * (the templates' convolutions before batch norm) runs as `tf.conv2d` instead of `tf.fused.conv2d`.
 * Same kernel and the same values; the difference is the gradient. The fused op's gradient
 * (tfjs-core's `customGrad`) computes the input's gradient eagerly, even where nothing needs it: for
 * a model's first convolution that is a whole `Conv2DBackpropInput` per step thrown away (for cnn-bn
 * at batch 128, ~10 % of a step). `tf.conv2d`'s registered gradient computes each input's gradient
 * only when the tape asks for it. Registered under tfjs-layers' class name, so saved models load into
 * it; everything else (config, weights, other cases) is the original's.
 */

interface ConvInternals {
  rank: number;
  bias: tf.LayerVariable | null;
  kernel: tf.LayerVariable;
  strides: number[];
  padding: string;
  dataFormat: string;
  dilationRate: number[];
  activation: { getClassName(): string } | null;
}

type LayerClass = new (args: object) => tf.layers.Layer;
const TfjsConv2D = Object.getPrototypeOf(tf.layers.conv2d({ filters: 1, kernelSize: 1 })).constructor as LayerClass;

export class FastConv2D extends TfjsConv2D {
  static className = 'Conv2D';

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>): tf.Tensor | tf.Tensor[] {
    const self = this as unknown as ConvInternals;
    const input = Array.isArray(inputs) ? inputs[0] : inputs;
    const linear = self.activation == null || self.activation.getClassName() === 'linear';
    if (
      (Array.isArray(inputs) && inputs.length !== 1) || self.rank !== 2 || self.bias != null || !linear ||
      self.dataFormat !== 'channelsLast' || (self.padding !== 'same' && self.padding !== 'valid') || input.rank !== 4
    ) {
      return super.call(inputs, kwargs);
    }
    return tf.tidy(() =>
      tf.conv2d(input as tf.Tensor4D, self.kernel.read() as tf.Tensor4D, self.strides as [number, number], self.padding as 'same' | 'valid', 'NHWC', self.dilationRate as [number, number]),
    );
  }
}
tf.serialization.registerClass(FastConv2D as unknown as tf.serialization.SerializableConstructor<tf.serialization.Serializable>);

/** A Conv2D layer (the templates' constructor). */
export function conv2d(args: Record<string, unknown>): tf.layers.Layer {
  return new FastConv2D(args);
}
