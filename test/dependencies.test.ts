import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { FileTypeValidator } from '@nestjs/common';
import { describe, expect, it } from 'vitest';

/** The package.json of the file-type that @nestjs/common loads (node's lookup: its own node_modules, then upward). */
function fileTypePackage(): { engines: { node: string } } {
  for (let dir = join(process.cwd(), 'node_modules', '@nestjs', 'common'); dir !== dirname(dir); dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', 'file-type', 'package.json');
    if (existsSync(candidate)) return JSON.parse(readFileSync(candidate, 'utf8'));
  }
  throw new Error('file-type is not installed');
}

describe('the file-type override (package.json "overrides": @nestjs/common pins a Node 22 file-type)', () => {
  it('installs a file-type whose engines accept Node 20, so npm ci does not warn EBADENGINE', () => {
    expect(fileTypePackage().engines.node).toBe('>=20');
  });

  it("still serves @nestjs/common's only use of it, FileTypeValidator's magic-number check", async () => {
    const png = Buffer.from('89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489', 'hex');
    const validator = new FileTypeValidator({ fileType: 'image/png' });
    expect(await validator.isValid({ mimetype: 'image/png', buffer: png } as never)).toBe(true);
    expect(await validator.isValid({ mimetype: 'image/png', buffer: Buffer.from('%PDF-1.4 not a png at all') } as never)).toBe(false);
  });
});
