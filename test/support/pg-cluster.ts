import { execFile } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { freePort } from './process.js';

const run = promisify(execFile);

/**
 * A Postgres cluster of the test's own: initdb into a temporary folder, its own port and socket
 * folder, trust auth on 127.0.0.1. The machine's cluster is never touched. As root (CI) the server
 * runs as the `postgres` OS user (through runuser), which Postgres requires.
 */
export interface PrivateCluster {
  /** postgres://postgres@127.0.0.1:PORT/sparsoup */
  url: string;
  /** Stops the server (fast: sessions are terminated, open transactions roll back) and starts it again after `downMs`. */
  restart: (downMs?: number) => Promise<void>;
  /** Stops the server and removes its folder (safe to call twice). */
  destroy: () => Promise<void>;
  log: () => string;
}

/** Where initdb and pg_ctl are, or why a private cluster cannot be made here (a reason to print). */
export function privateClusterSupport(): { bin: string; asPostgres: boolean } | { reason: string } {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a)) : [];
  if (!versions.length) return { reason: `no initdb under ${root}/*/bin` };
  const bin = join(root, versions[0], 'bin');
  if (userInfo().uid !== 0) return { bin, asPostgres: false };
  if (!existsSync('/usr/sbin/runuser') && !existsSync('/sbin/runuser')) return { reason: 'running as root without runuser (Postgres refuses to run as root)' };
  if (!postgresUser()) return { reason: 'running as root and there is no postgres OS user to run the server as' };
  return { bin, asPostgres: true };
}

/** The uid and gid of the `postgres` OS user, if there is one. */
function postgresUser(): { uid: number; gid: number } | null {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'));
  if (!line) return null;
  const f = line.split(':');
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

export async function startPrivateCluster(bin: string, asPostgres: boolean): Promise<PrivateCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'sparsoup-pg-'));
  const data = join(dir, 'data');
  const sockets = join(dir, 'sockets');
  mkdirSync(sockets);
  const logFile = join(dir, 'server.log');
  if (asPostgres) {
    const { uid, gid } = postgresUser()!;
    for (const p of [dir, sockets]) chownSync(p, uid, gid);
  }
  const pgRun = (cmd: string, args: string[]) => (asPostgres ? run('/usr/sbin/runuser', ['-u', 'postgres', '--', join(bin, cmd), ...args]) : run(join(bin, cmd), args));
  const port = await freePort();
  await pgRun('initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync', '--no-instructions']);
  const options = `-p ${port} -c listen_addresses=127.0.0.1 -k ${sockets} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=60`;
  const start = () => pgRun('pg_ctl', ['-D', data, '-l', logFile, '-w', '-t', '60', '-o', options, 'start']);
  const stop = () => pgRun('pg_ctl', ['-D', data, '-m', 'fast', '-w', '-t', '60', 'stop']);
  await start();
  let running = true;
  const admin = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
  await admin.connect();
  await admin.query('CREATE DATABASE sparsoup');
  await admin.end();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/sparsoup`,
    restart: async (downMs = 0) => {
      await stop();
      running = false;
      if (downMs) await new Promise((r) => setTimeout(r, downMs));
      await start();
      running = true;
    },
    destroy: async () => {
      if (running && existsSync(data)) await stop().catch(() => pgRun('pg_ctl', ['-D', data, '-m', 'immediate', 'stop']).catch(() => {}));
      running = false;
      rmSync(dir, { recursive: true, force: true });
    },
    log: () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : ''),
  };
}
