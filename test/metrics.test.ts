import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MetricsService } from '../src/metrics/metrics.service.js';
import { startTestApp, type TestApp } from './support/app.js';
import { safetensorsBytes, seededWeights } from './support/checkpoints.js';
import { waitForRun } from './support/runs.js';

/** Prometheus text → `name{labels}` → value (labels as printed, in the order prom-client prints them). */
function parse(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^(\S+?(?:\{.*\})?) (\S+)$/.exec(line);
    if (m) out.set(m[1], Number(m[2]));
  }
  return out;
}

describe('GET /metrics', () => {
  let t: TestApp;
  const scrape = async () => {
    const res = await request(t.http).get('/metrics').expect(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    return { text: res.text, series: parse(res.text) };
  };

  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(() => t?.close());

  it('exposes the named series in Prometheus text format', async () => {
    const { text, series } = await scrape();
    for (const name of [
      'sparsoup_http_requests_total',
      'sparsoup_http_request_duration_seconds',
      'sparsoup_jobs',
      'sparsoup_runs',
      'sparsoup_soups',
      'sparsoup_worker_pool_utilization',
      'sparsoup_worker_pool_busy',
      'sparsoup_worker_pool_queued',
      'sparsoup_training_samples_per_second',
      'sparsoup_training_samples_total',
      'sparsoup_ingested_bytes_total',
      'process_cpu_seconds_total',
    ]) {
      expect(text).toContain(`# TYPE ${name} `);
    }
    expect(series.get('sparsoup_worker_pool_threads')).toBe(1);
    expect(series.get('sparsoup_runs{status="succeeded"}')).toBe(0);
    expect(series.get('sparsoup_jobs{queue="train-candidate",state="created"}')).toBe(0);
  });

  it('counts requests by route template and status, with latency', async () => {
    const id = '00000000-0000-4000-8000-000000000000';
    await request(t.http).get(`/models/${id}`).expect(404);
    await request(t.http).get(`/models/${id}`).expect(404);
    await request(t.http).get('/models').expect(200);
    await request(t.http).get('/no/such/route').expect(404);
    const { series } = await scrape();
    expect(series.get('sparsoup_http_requests_total{method="GET",route="/models/:id",status="404"}')).toBe(2);
    expect(series.get('sparsoup_http_requests_total{method="GET",route="/models",status="200"}')).toBe(1);
    expect(series.get('sparsoup_http_requests_total{method="GET",route="unmatched",status="404"}')).toBe(1);
    expect(series.get('sparsoup_http_request_duration_seconds_count{method="GET",route="/models/:id",status="404"}')).toBe(2);
    expect(series.get('sparsoup_http_request_duration_seconds_sum{method="GET",route="/models/:id",status="404"}')).toBeGreaterThan(0);
  });

  it('counts the bytes of accepted uploads, not rejected ones', async () => {
    const body = await safetensorsBytes([{ name: 'dense/kernel', shape: [16, 8], data: seededWeights(128, 1) }]);
    await request(t.http).post('/models?name=tiny').set('content-type', 'application/octet-stream').send(body).expect(201);
    await request(t.http).post('/models?name=broken').set('content-type', 'application/octet-stream').send(Buffer.from('not a checkpoint at all')).expect((r) => expect(r.status).toBeGreaterThanOrEqual(400));
    const { series } = await scrape();
    expect(series.get('sparsoup_ingested_bytes_total{kind="model"}')).toBe(body.length);
  });

  it('moves the job, run, pool and training series when a run trains', async () => {
    const template = (await request(t.http).post('/models/templates').send({ architecture: 'lenet-300-100', datasetId: 'mnist', seed: 1 }).expect(201)).body;
    const training = { epochs: 0.02, batchSize: 64, learningRate: 0.05, schedule: 'constant' };
    const res = await request(t.http).post('/runs').send({ kind: 'train', modelId: template.id, datasetId: 'mnist', training }).expect(202);
    const run = await waitForRun(t, res.body.id);
    expect(run.status).toBe('succeeded');
    const { series } = await scrape();
    expect(series.get('sparsoup_runs{status="succeeded"}')).toBe(1);
    expect(series.get('sparsoup_jobs{queue="train-candidate",state="completed"}')).toBeGreaterThanOrEqual(1);
    expect(series.get('sparsoup_worker_pool_tasks{result="completed"}')).toBeGreaterThanOrEqual(1);
    expect(series.get('sparsoup_worker_pool_utilization')).toBeGreaterThan(0);
    // The run processor reports each candidate's training: samples seen and seconds spent.
    expect(series.get('sparsoup_training_samples_total')).toBeGreaterThanOrEqual(64);
    expect(series.get('sparsoup_training_seconds_total')).toBeGreaterThan(0);
    // Direct calls add to the same counters.
    const before = series.get('sparsoup_training_samples_total')!;
    t.app.get(MetricsService).observeTraining(1000, 0.25);
    expect((await scrape()).series.get('sparsoup_training_samples_total')).toBe(before + 1000);
    expect(series.get('sparsoup_http_requests_total{method="POST",route="/runs",status="202"}')).toBe(1);
  });
});

describe('GET /metrics with API keys', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ API_KEYS: 'prometheus:scrape-key:read' });
  });
  afterAll(() => t?.close());

  it('needs a key like any other read; a read key is enough', async () => {
    const denied = await request(t.http).get('/metrics').expect(401);
    expect(denied.headers['content-type']).toMatch(/application\/problem\+json/);
    const res = await request(t.http).get('/metrics').set('authorization', 'Bearer scrape-key').expect(200);
    expect(res.text).toContain('sparsoup_http_requests_total{method="GET",route="/metrics",status="401"} 1');
  });
});
