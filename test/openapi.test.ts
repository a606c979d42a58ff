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
