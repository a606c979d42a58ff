import { readFileSync } from 'node:fs';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { generateSpec, SPEC_PATH, sortKeys } from '../scripts/openapi.js';
import { startTestApp } from './support/app.js';

describe('openapi/openapi.json', () => {
  it('is what the code generates (run `npm run openapi` when this fails)', async () => {
    const spec = await generateSpec();
    expect(readFileSync(SPEC_PATH, 'utf8')).toBe(spec);
  });

  it('names operations after the controller methods', async () => {
    const spec = JSON.parse(await generateSpec());
    expect(spec.paths['/health'].get.operationId).toBe('getHealth');
    expect(spec.paths['/artifacts'].get.operationId).toBe('getAllArtifacts');
  });

  it('declares /health without a key (it is public) and everything else behind the bearer key', async () => {
    const spec = JSON.parse(await generateSpec());
    expect(spec.paths['/health'].get.security).toEqual([]);
    expect(spec.paths['/artifacts'].get.security).toBeUndefined();
    expect(spec.security).toEqual([{ bearer: [] }]);
  });

  it('describes POST /runs as one schema per kind, told apart by kind, each with the fields of its kind', async () => {
    const spec = JSON.parse(await generateSpec());
    const body = spec.paths['/runs'].post.requestBody.content['application/json'].schema;
    const ref = (name: string) => `#/components/schemas/${name}`;
    expect(body.discriminator).toEqual({ propertyName: 'kind', mapping: { train: ref('TrainRunDto'), retrain: ref('RetrainRunDto'), imp: ref('ImpRunDto'), sms: ref('SmsRunDto') } });
    expect(body.oneOf.map((o: { $ref: string }) => o.$ref).sort()).toEqual(Object.values(body.discriminator.mapping).sort());
    const schema = (name: string) => spec.components.schemas[name];
    for (const [kind, name] of Object.entries({ train: 'TrainRunDto', retrain: 'RetrainRunDto', imp: 'ImpRunDto', sms: 'SmsRunDto' })) {
      expect(schema(name).properties.kind.enum).toEqual([kind]);
      expect(schema(name).required).toContain('kind');
    }
    const has = (name: string, field: string) => field in schema(name).properties;
    expect(['TrainRunDto', 'RetrainRunDto', 'ImpRunDto', 'SmsRunDto'].filter((n) => has(n, 'maskId'))).toEqual(['RetrainRunDto']);
    expect(['TrainRunDto', 'RetrainRunDto', 'ImpRunDto', 'SmsRunDto'].filter((n) => has(n, 'soup'))).toEqual(['SmsRunDto']);
    expect(['TrainRunDto', 'RetrainRunDto', 'ImpRunDto', 'SmsRunDto'].filter((n) => has(n, 'goalSparsity'))).toEqual(['ImpRunDto', 'SmsRunDto']);
    expect(schema('ImpRunDto').required).toEqual(expect.arrayContaining(['goalSparsity', 'phases']));
    expect(has('TrainRunDto', 'm')).toBe(false);
  });

  it('sorts keys so that the file never reorders', () => {
    expect(JSON.stringify(sortKeys({ b: 1, a: { d: 2, c: [{ f: 1, e: 2 }] } }))).toBe('{"a":{"c":[{"e":2,"f":1}],"d":2},"b":1}');
  });

  it('is served raw at /openapi.json and /docs/openapi.json, without a key', async () => {
    const t = await startTestApp({ API_KEYS: 'reader:openapi-test-key:read' });
    try {
      const committed = JSON.parse(readFileSync(SPEC_PATH, 'utf8'));
      for (const path of ['/openapi.json', '/docs/openapi.json']) {
        const res = await request(t.http).get(path).expect(200);
        expect(res.headers['content-type']).toMatch(/application\/json/);
        expect(Object.keys(res.body.paths).sort()).toEqual(Object.keys(committed.paths).sort());
      }
    } finally {
      await t.close();
    }
  });
});
