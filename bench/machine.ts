import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';

/** The machine a benchmark ran on, for its printout. */
export interface MachineInfo {
  cpu: string;
  /** Logical cores Node sees (what the process may use). */
  cores: number;
  memoryGiB: number;
  node: string;
  v8: string;
  platform: string;
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  let cpu = cpus[0]?.model?.trim() || 'unknown';
  if (cpu === 'unknown' || cpu.length < 4) {
    // Some virtual CPUs report an empty model to libuv; /proc/cpuinfo may still say more.
    try {
      const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
      if (m) cpu = m[1].trim();
    } catch {
      // not Linux
    }
  }
  return {
    cpu,
    cores: typeof os.availableParallelism === 'function' ? os.availableParallelism() : cpus.length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    v8: process.versions.v8,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
  };
}

/** One line: `machine: <cpu>, <n> cores, <m> GiB, node <v> (<platform>)`. */
export function machineLine(info = machineInfo()): string {
  return `machine: ${info.cpu}, ${info.cores} cores, ${info.memoryGiB} GiB, node ${info.node} (v8 ${info.v8}, ${info.platform})`;
}

export function printMachine(): MachineInfo {
  const info = machineInfo();
  console.log(machineLine(info));
  return info;
}

const OPENBLAS_DIR = '/usr/lib/x86_64-linux-gnu/openblas-pthread';

/**
 * Why a PyTorch or NumPy peer would not be a fair one here, or null: without Debian's OpenBLAS
 * (package libopenblas0-pthread) torch falls back to the reference BLAS, 10× slower than OpenBLAS on
 * lenet-300-100, and any ratio against it would flatter sparsoup.
 */
export function peerBlasMissing(): string | null {
  return existsSync(join(OPENBLAS_DIR, 'libblas.so.3'))
    ? null
    : `no OpenBLAS in ${OPENBLAS_DIR} (the peer would run on the reference BLAS): apt-get install libopenblas0-pthread`;
}

/**
 * The environment for a Python peer with `threads` threads: Debian's pthread OpenBLAS instead of the
 * reference BLAS, and passive waiting so OpenBLAS's and torch's threads do not fight over the cores.
 */
export function openblasPeerEnv(threads: number): NodeJS.ProcessEnv {
  return {
    ...process.env,
    LD_LIBRARY_PATH: OPENBLAS_DIR,
    OMP_NUM_THREADS: String(threads),
    OPENBLAS_NUM_THREADS: String(threads),
    OMP_WAIT_POLICY: 'PASSIVE',
  };
}
