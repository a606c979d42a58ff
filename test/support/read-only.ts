import { execFile } from 'node:child_process';
import { chmodSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * Makes a folder read-only and writable again while processes use it. chmod does not stop root
 * (CI runs as root), so as root the folder is bind-mounted on itself and that mount is remounted
 * read-only (writes fail with EROFS, for every process, root included); otherwise its folders lose
 * their write bits (EACCES). `prepare` answers why neither works here, or the switch.
 */
export interface ReadOnlySwitch {
  how: 'bind mount' | 'chmod';
  /** Read-only (true) or writable (false). Answers once the change holds (a probe write fails or succeeds). */
  set: (readOnly: boolean) => Promise<void>;
  /** Writable again and, for a bind mount, unmounted. */
  release: () => Promise<void>;
}

export async function prepareReadOnlySwitch(dir: string): Promise<ReadOnlySwitch | { reason: string }> {
  const probe = () => {
    const p = join(dir, `.probe-${process.pid}`);
    try {
      writeFileSync(p, 'x');
      rmSync(p);
      return true;
    } catch {
      return false;
    }
  };
  if (userInfo().uid === 0) {
    try {
      await run('mount', ['--bind', dir, dir]);
    } catch (err) {
      return { reason: `running as root, where chmod does not stop writes, and a bind mount is not allowed here: ${(err as Error).message.split('\n')[0]}` };
    }
    const remount = async (mode: 'ro' | 'rw') => {
      // A remount read-only fails (EBUSY) while a file on it is open for writing: try again.
      for (let i = 0; ; i++) {
        try {
          await run('mount', ['-o', `remount,${mode},bind`, dir]);
          return;
        } catch (err) {
          if (i >= 200) throw err;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    };
    const sw: ReadOnlySwitch = {
      how: 'bind mount',
      set: async (readOnly) => {
        await remount(readOnly ? 'ro' : 'rw');
        if (probe() === readOnly) throw new Error(`the folder did not become ${readOnly ? 'read-only' : 'writable'}`);
      },
      release: async () => {
        await remount('rw').catch(() => {});
        await run('umount', ['-l', dir]).catch(() => {});
      },
    };
    try {
      await sw.set(true);
      await sw.set(false);
    } catch (err) {
      await sw.release();
      return { reason: `a read-only bind mount does not stop writes here: ${(err as Error).message}` };
    }
    return sw;
  }
  const folders = (): string[] => [dir, ...readdirSync(dir, { recursive: true }).map((f) => join(dir, String(f))).filter((p) => statSync(p, { throwIfNoEntry: false })?.isDirectory())];
  const sw: ReadOnlySwitch = {
    how: 'chmod',
    set: async (readOnly) => {
      for (const f of folders()) chmodSync(f, readOnly ? 0o555 : 0o755);
      if (probe() === readOnly) throw new Error(`the folder did not become ${readOnly ? 'read-only' : 'writable'}`);
    },
    release: async () => {
      for (const f of folders()) chmodSync(f, 0o755);
    },
  };
  try {
    await sw.set(true);
    await sw.set(false);
  } catch (err) {
    await sw.release();
    return { reason: (err as Error).message };
  }
  return sw;
}
