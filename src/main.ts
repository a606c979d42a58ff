import 'reflect-metadata';
import { createApp } from './app.factory.js';
import { loadConfigOrExit } from './config/config.js';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const app = await createApp(config);
  await app.listen(config.port, config.host);
  const db = config.databaseUrl ? 'postgres' : `embedded PGlite in ${config.dataDir}/pglite`;
  console.log(`sparsoup listening on http://${config.host === '0.0.0.0' ? 'localhost' : config.host}:${config.port} (${db}); API docs at /docs`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
