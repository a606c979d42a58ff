import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from './support/app.js';

const CHROMIUM = '/usr/bin/chromium';
const OUT = resolve('test-results');
const WRITE_KEY = 'ui-writer-key';
const READ_KEY = 'ui-reader-key';
const FAST = { epochs: 0.03, batchSize: 64, learningRate: 0.05, schedule: 'constant' };

// CI installs Debian's chromium and sets SPARSOUP_REQUIRE_CHROMIUM, so there a missing browser fails.
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.SPARSOUP_REQUIRE_CHROMIUM) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium`);

describe.skipIf(!haveChromium)('dashboard /ui in Chromium', () => {
  let t: TestApp;
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];
  let runId: string;
  let soupId: string;
  let template: { id: string; name: string };

  const call = async <T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<T> => {
    const res = await fetch(`${t.url}${path}`, { method, headers: { 'content-type': 'application/json', authorization: `Bearer ${WRITE_KEY}` }, body: body === undefined ? undefined : JSON.stringify(body) });
    const json = await res.json();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
    return json as T;
  };
  const until = async <T>(f: () => Promise<T | false>, ms = 120_000): Promise<T> => {
    const start = Date.now();
    for (;;) {
      const v = await f();
      if (v) return v;
      if (Date.now() - start > ms) throw new Error('timed out');
      await new Promise((r) => setTimeout(r, 250));
    }
  };

  beforeAll(async () => {
    mkdirSync(OUT, { recursive: true });
    t = await startTestApp({ WORKERS: '2', API_KEYS: `ci:${WRITE_KEY}:write,viewer:${READ_KEY}:read` }, { listen: true });
    // A finished run to show: template → prune → retrain two candidates → greedy soup of them.
    template = await call('POST', '/models/templates', { architecture: 'lenet-300-100', datasetId: 'mnist', seed: 2, name: 'lenet-ui' });
    const pruned = await call<{ model: { id: string }; mask: { id: string } }>('POST', `/models/${template.id}/prune`, { method: 'magnitude-global', sparsity: 0.8 });
    runId = (await call<{ id: string }>('POST', '/runs', { kind: 'retrain', modelId: pruned.model.id, maskId: pruned.mask.id, datasetId: 'mnist', training: FAST, m: 2, vary: 'seed' })).id;
    const run = await until(async () => {
      const r = await call<{ status: string; candidates: { resultModelId: string }[] }>('GET', `/runs/${runId}`);
      return ['succeeded', 'failed', 'cancelled'].includes(r.status) && r;
    });
    expect(run.status).toBe('succeeded');
    soupId = (await call<{ id: string }>('POST', '/soups', { modelIds: run.candidates.map((c) => c.resultModelId), method: 'greedy', datasetId: 'mnist' })).id;
    await until(async () => (await call<{ status: string }>('GET', `/soups/${soupId}`)).status === 'succeeded');

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('pageerror', (err) => pageErrors.push(err.message));
  });
  afterAll(async () => {
    await browser?.close();
    await t?.close();
  });

  it('serves the page without a key, then asks for one and lists the runs', async () => {
    const res = await page.goto(`${t.url}/ui`);
    expect(res?.status()).toBe(200);
    expect(res?.headers()['content-type']).toMatch(/^text\/html/);
    expect(res?.headers()['content-security-policy']).toContain("script-src 'self'");
    // The API refuses without a key: the page shows the key form.
    await page.locator('#key-form').waitFor({ state: 'visible' });
    await page.fill('#key', READ_KEY);
    await page.click('#key-form button');
    const rows = page.locator('#runs-table tbody tr');
    await rows.first().waitFor();
    expect(await rows.count()).toBe(1);
    expect(await rows.first().textContent()).toContain('succeeded');
    expect(await rows.first().textContent()).toContain('2 / 2');
    await expect.poll(() => page.locator('#health').textContent()).toMatch(/^ok · v/);
  });

  it("shows a finished run's candidate table and its accuracy-against-sparsity plot", async () => {
    await page.click(`#runs-table a[href="#/runs/${runId}"]`);
    await page.locator('#candidates-table').waitFor();
    const rows = page.locator('#candidates-table tbody tr');
    expect(await rows.count()).toBe(2);
    for (const text of await rows.allTextContents()) {
      expect(text).toContain('succeeded');
      expect(text).toMatch(/\d+\.\d{2}%/);
    }
    const plot = page.locator('#report-plot');
    await plot.waitFor();
    await expect.poll(() => plot.evaluate((el) => {
      const img = el as unknown as { complete: boolean; naturalWidth: number };
      return img.complete && img.naturalWidth;
    })).toBeGreaterThan(100);
    expect(await page.locator('#report-table tbody tr').count()).toBeGreaterThanOrEqual(1);
    await page.screenshot({ path: join(OUT, 'dashboard-run.png'), fullPage: true });
  });

  it('draws model lineage: template → pruned → candidates → soup', async () => {
    await page.goto(`${t.url}/ui#/models`);
    await page.locator('#lineage').waitFor();
    const root = page.locator(`#lineage > li[data-model="${template.id}"]`);
    expect(await root.count()).toBe(1);
    expect(await root.locator(':scope > a').textContent()).toBe('lenet-ui');
    // The soup's result sits three levels below the template (pruned model, candidate, soup).
    const soup = await call<{ resultModelId: string }>('GET', `/soups/${soupId}`);
    expect(await root.locator(`ul > li > ul > li > ul > li[data-model="${soup.resultModelId}"]`).count()).toBeGreaterThanOrEqual(1);
    await page.screenshot({ path: join(OUT, 'dashboard-models.png'), fullPage: true });
  });

  it("shows a greedy soup's acceptance trace", async () => {
    await page.goto(`${t.url}/ui#/soups/${soupId}`);
    await page.locator('table#trace-table').waitFor();
    const rows = await page.locator('#trace-table tbody tr').allTextContents();
    expect(rows).toHaveLength(2);
    // Greedy starts from the best candidate, which is always accepted.
    expect(rows[0]).toMatch(/yes$/);
    await page.screenshot({ path: join(OUT, 'dashboard-soup.png'), fullPage: true });
    expect(pageErrors).toEqual([]);
  });
});
