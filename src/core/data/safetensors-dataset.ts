import { openSafetensors } from '../checkpoint/safetensors.js';
import { CoreInputError } from '../errors.js';
import type { DType } from '../tensors.js';
import type { ImageDataset } from './dataset.js';
import { datasetFromArrays, type LabelInput, type SplitOptions } from './upload.js';

const LABEL_ARRAYS: Partial<Record<DType, (b: ArrayBuffer) => LabelInput>> = {
  U8: (b) => new Uint8Array(b),
  I8: (b) => new Int8Array(b),
  U16: (b) => new Uint16Array(b),
  I16: (b) => new Int16Array(b),
  U32: (b) => new Uint32Array(b),
  I32: (b) => new Int32Array(b),
  I64: (b) => new BigInt64Array(b),
  U64: (b) => new BigUint64Array(b),
};

/**
 * A dataset uploaded as safetensors: tensors `x` (N × …, U8 or a float dtype) and `y` (N integer
 * labels), optionally `x_test` and `y_test`; other tensors are ignored. Validation is
 * `datasetFromArrays`'s, like every other upload.
 */
export async function datasetFromSafetensors(u: SplitOptions & { id: string; path: string; classes?: number }): Promise<ImageDataset> {
  const reader = await openSafetensors(u.path);
  try {
    const byName = new Map(reader.tensors.map((t) => [t.name, t]));
    const images = async (name: string) => {
      const e = byName.get(name)!;
      if (e.dtype === 'U8') return new Uint8Array(await reader.readRaw(name));
      if (e.dtype === 'F32' || e.dtype === 'F16' || e.dtype === 'BF16' || e.dtype === 'F64') return reader.readFloat32(name);
      throw new CoreInputError('invalid-dataset', `safetensors tensor '${name}' must be U8 or a float dtype, got ${e.dtype}`, { tensor: name }, 400);
    };
    const labels = async (name: string) => {
      const e = byName.get(name)!;
      const make = LABEL_ARRAYS[e.dtype];
      if (!make) throw new CoreInputError('invalid-dataset', `safetensors tensor '${name}' must hold integer labels, got ${e.dtype}`, { tensor: name }, 400);
      if (e.shape.length !== 1) throw new CoreInputError('invalid-dataset', `safetensors tensor '${name}' must be 1-D (N labels), got [${e.shape}]`, { tensor: name }, 400);
      const raw = await reader.readRaw(name);
      return make(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength) as ArrayBuffer);
    };
    for (const k of ['x', 'y']) {
      if (!byName.has(k)) throw new CoreInputError('invalid-dataset', `safetensors file has no tensor '${k}' (expected x, y and optionally x_test, y_test)`, { missing: k }, 400);
    }
    if (byName.has('x_test') !== byName.has('y_test')) throw new CoreInputError('invalid-dataset', 'test tensors come as a pair: x_test and y_test', {}, 400);
    const hasTest = byName.has('x_test');
    return datasetFromArrays({
      ...u,
      x: await images('x'),
      xShape: byName.get('x')!.shape,
      y: await labels('y'),
      ...(hasTest ? { xTest: await images('x_test'), xTestShape: byName.get('x_test')!.shape, yTest: await labels('y_test') } : {}),
    });
  } finally {
    await reader.close();
  }
}
