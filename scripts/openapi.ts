/**
 * Writes openapi/openapi.json from the code. The app is built in preview mode (no database, no
 * listening) and the document is key-sorted so it never reorders. `--check` fails when the committed
 * file differs from what the code produces.
 */
import 'reflect-metadata';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PROJECT_ROOT } from '../src/paths.js';
import { createApp, createOpenApiDocument } from '../src/app.factory.js';
import { loadConfig } from '../src/config/config.js';

export const SPEC_PATH = join(PROJECT_ROOT, 'openapi', 'openapi.json');

export function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((k) => [k, sortKeys((value as Record<string, unknown>)[k])]),
    );
  }
  return value;
}

export async function generateSpec(): Promise<string> {
  const config = { ...loadConfig({}), logLevel: 'silent' as const };
  const app = await createApp(config, { preview: true });
  const doc = createOpenApiDocument(app);
  await app.close();
  return `${JSON.stringify(sortKeys(doc), null, 2)}\n`;
}

async function main() {
  const spec = await generateSpec();
  if (process.argv.includes('--check')) {
    let committed = '';
    try {
      committed = readFileSync(SPEC_PATH, 'utf8');
    } catch {}
    if (committed !== spec) {
      console.error('openapi/openapi.json is stale: run `npm run openapi` and commit the result.');
      process.exit(1);
    }
    console.log('openapi/openapi.json is current.');
    return;
  }
  writeFileSync(SPEC_PATH, spec);
  console.log(`wrote ${SPEC_PATH}`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().then(
    () => process.exit(0),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
