import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { FileTypeValidator } from '@nestjs/common';
import { describe, expect, it } from 'vitest';

const require = createRequire(import.meta.url);

describe('the file-type override (package.json "overrides": @nestjs/common pins a Node 22 file-type)', () => {
  it('installs a file-type whose engines accept Node 20, so npm ci does not warn EBADENGINE', () => {
    const pkg = JSON.parse(readFileSync(require.resolve('file-type/package.json', { paths: [require.resolve('@nestjs/common')] }), 'utf8'));
    expect(pkg.engines.node).toBe('>=20');
  });

  it("still serves @nestjs/common's only use of it, FileTypeValidator's magic-number check", async () => {
    const png = Buffer.from('89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489', 'hex');
    const validator = new FileTypeValidator({ fileType: 'image/png' });
    expect(await validator.isValid({ mimetype: 'image/png', buffer: png } as never)).toBe(true);
    expect(await validator.isValid({ mimetype: 'image/png', buffer: Buffer.from('%PDF-1.4 not a png at all') } as never)).toBe(false);
  });
});
