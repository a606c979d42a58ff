// A local S3 server for the tests and the benchmarks: s3rver (S3's REST API over HTTP, objects as
// files), started on a free port with one bucket. Prints {"port": N} on stdout once it listens.
//
//   node --openssl-legacy-provider scripts/s3rver.mjs --dir /tmp/s3 --bucket artifacts [--address 127.0.0.1] [--port 0]
//
// --openssl-legacy-provider: s3rver encrypts ListObjectsV2 continuation tokens with DES, which
// OpenSSL 3 only offers through its legacy provider (without it, paging answers 500).
// s3rver answers AbortMultipartUpload with 405; this launcher adds it (the parts of the upload are
// removed, as S3 does), so that a test can see that an aborted write leaves no parts behind.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import S3rver from 's3rver';

const { values } = parseArgs({
  options: {
    dir: { type: 'string' },
    bucket: { type: 'string', multiple: true },
    address: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
  },
});
if (!values.dir || !values.bucket?.length) {
  console.error('usage: node --openssl-legacy-provider scripts/s3rver.mjs --dir DIR --bucket NAME [--address A] [--port N]');
  process.exit(2);
}
const server = new S3rver({
  address: values.address,
  port: Number(values.port),
  silent: true,
  directory: values.dir,
  configureBuckets: values.bucket.map((name) => ({ name })),
});
// AbortMultipartUpload: DELETE /bucket/key?uploadId=ID (s3rver keeps parts in <dir>/<bucket>/.../uploads/ID).
server.middleware.unshift(async (ctx, next) => {
  const m = /^\/([^/]+)\/.+/.exec(ctx.path);
  if (ctx.method === 'DELETE' && m && typeof ctx.query.uploadId === 'string' && /^[\w-]+$/.test(ctx.query.uploadId)) {
    await rm(join(server.store.getResourcePath(m[1], undefined, 'uploads'), ctx.query.uploadId), { recursive: true, force: true });
    ctx.status = 204;
    return;
  }
  await next();
});
const { port } = await server.run();
process.stdout.write(`${JSON.stringify({ port })}\n`);
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close().finally(() => process.exit(0)));
