import { type EntityManager, In } from 'typeorm';
import { RunCandidateEntity } from '../runs/run.entity.js';
import type { RunLifecycle } from '../runs/run-lifecycle.js';
import { TaskEntity } from './task.entity.js';

/**
 * A cancelled run's tasks, in the run's cancelling transaction: queued and leased ones are
 * cancelled (a leased one's trainer hears it on its next heartbeat; its result gets 409), and the
 * candidates they held end cancelled. Answers whether any candidate was still running.
 */
export async function cancelRunTasks(tx: EntityManager, lifecycle: RunLifecycle, runId: string): Promise<void> {
  const open = await tx.findBy(TaskEntity, { runId, status: In(['queued', 'leased']) });
  if (!open.length) return;
  await tx.update(TaskEntity, { runId, status: In(['queued', 'leased']) }, { status: 'cancelled', leaseExpiresAt: null, finishedAt: new Date() });
  for (const t of open) {
    if (!t.candidateId) continue;
    const c = await tx.findOneBy(RunCandidateEntity, { id: t.candidateId });
    if (c && c.status === 'running') await lifecycle.finishCandidate(tx, c, 'cancelled', null);
  }
}
