import { PGlite } from '@electric-sql/pglite';
const m = (l) => { const u = process.memoryUsage(); console.log(l, 'rss', (u.rss/1e6)|0, 'ext', (u.external/1e6)|0, 'ab', (u.arrayBuffers/1e6)|0, 'heap', (u.heapUsed/1e6)|0); };
m('start');
const db = await PGlite.create(process.argv[2]);
m('pglite created');
await db.query('select 1');
m('q');
await import('@tensorflow/tfjs'); m('tfjs imported');
