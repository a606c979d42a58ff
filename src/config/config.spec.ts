import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from './config.js';

describe('loadConfig', () => {
  it('gives the documented defaults for an empty environment', () => {
    const c = loadConfig({});
    expect(c.port).toBe(3000);
    expect(c.databaseUrl).toBeNull();
    expect(c.dataDir.endsWith('/data')).toBe(true);
    expect(c.apiKeys).toEqual([]);
    expect(c.workers).toBeGreaterThanOrEqual(1);
    expect(c.logLevel).toBe('info');
    expect(c.backend).toBe('auto');
  });

  it('parses API_KEYS entries with their scopes', () => {
    const c = loadConfig({ API_KEYS: 'ci:abc123:write, dash:zzz:read' });
    expect(c.apiKeys).toEqual([
      { name: 'ci', key: 'abc123', scope: 'write' },
      { name: 'dash', key: 'zzz', scope: 'read' },
    ]);
  });

  it.each([
    ['PORT', 'eighty'],
    ['PORT', '70000'],
    ['WORKERS', '0'],
    ['DATABASE_URL', 'mysql://x'],
    ['API_KEYS', 'ci:abc:admin'],
    ['API_KEYS', 'missing-scope'],
    ['LOG_LEVEL', 'loud'],
    ['TFJS_BACKEND', 'cuda'],
    ['MAX_UPLOAD_BYTES', '12'],
  ])('refuses %s=%s with a message that names the variable', (variable, value) => {
    let error: unknown;
    try {
      loadConfig({ [variable]: value });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems.map((p) => p.variable)).toEqual([variable]);
    expect((error as Error).message).toContain(variable);
  });

  it('reports every bad variable at once', () => {
    expect(() => loadConfig({ PORT: 'x', WORKERS: '-1' })).toThrowError(/PORT[\s\S]*WORKERS|WORKERS[\s\S]*PORT/);
  });

  it('refuses the same key listed twice', () => {
    expect(() => loadConfig({ API_KEYS: 'a:k:read,b:k:write' })).toThrowError(/API_KEYS/);
  });
});
