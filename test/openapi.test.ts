import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { generateSpec, SPEC_PATH, sortKeys } from '../scripts/openapi.js';

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
});
