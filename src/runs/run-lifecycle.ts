import { Injectable, Logger } from '@nestjs/common';
import { type EntityManager, Not } from 'typeorm';
import { WebhooksService } from '../webhooks/webhooks.service.js';
import { RunCandidateEntity, RunEntity, RunEventEntity, RunPhaseEntity, type RunStatus } from './run.entity.js';

/**
 * The one owner of a run's status: every transition of a run (queued → running → succeeded /
 * failed / cancelled), and the ends of its candidates, is made here, inside the caller's
 * transaction, together with the event that announces it. `run-finished` is emitted only by
 * `finish`, at most once per run, and its webhook is queued in the same transaction.
 */
@Injectable()
export class RunLifecycle {
  private readonly logger = new Logger(RunLifecycle.name);

  constructor(private readonly webhooks: WebhooksService) {}

  /** Appends an event to the run's log. */
  async event(tx: EntityManager, runId: string, type: string, data: Record<string, unknown>, candidateId: string | null = null): Promise<void> {
    await tx.save(tx.create(RunEventEntity, { runId, type, data, candidateId }));
  }

  /**
   * A running candidate's progress and its `progress` event, in one statement (no transaction of
   * its own: this is written every few seconds per candidate). A candidate that is no longer
   * running takes neither.
   */
  async progress(manager: EntityManager, runId: string, candidateId: string, progress: object, data: Record<string, unknown>): Promise<void> {
    await manager.query(
      `WITH c AS (UPDATE run_candidate SET progress = $3::jsonb WHERE id = $2 AND run_id = $1 AND status = 'running' RETURNING id)
       INSERT INTO run_event (run_id, type, candidate_id, data) SELECT $1, 'progress', id, $4::jsonb FROM c`,
      [runId, candidateId, JSON.stringify(progress), JSON.stringify(data)],
    );
  }

  /** queued → running (a no-op for a run that already started or ended). */
  async start(tx: EntityManager, runId: string): Promise<void> {
    await tx.update(RunEntity, { id: runId, status: 'queued' }, { status: 'running', startedAt: new Date() });
  }

  /**
   * Ends a run, once: `succeeded` or `failed` (a run already ended, or cancelled, stays as it is),
   * or `cancelled` (the end of a cancelled run, announced when nothing of it runs any more).
   * Answers whether this call ended it.
   */
  async finish(tx: EntityManager, runId: string, status: RunStatus, error: string | null): Promise<boolean> {
    // The row lock serialises the candidates, phases and cancellations that end a run at once.
    const run = await tx.findOne(RunEntity, { where: { id: runId }, lock: { mode: 'pessimistic_write' } });
    if (!run) return false;
    if (await tx.exists(RunEventEntity, { where: { runId, type: 'run-finished' } })) return false;
    if (run.status === 'succeeded' || run.status === 'failed') return false;
    if (run.status === 'cancelled' && status !== 'cancelled') return false;
    await tx.update(RunEntity, { id: runId }, { status, error, finishedAt: run.finishedAt ?? new Date() });
    if (status === 'failed') {
      // A failed run's later phases never start: they end cancelled rather than stay queued; a phase
      // soup left queued for a retry (its write failed, say) or running ends failed with its error.
      await tx.update(RunPhaseEntity, { runId, status: 'queued' }, { status: 'cancelled', finishedAt: new Date() });
      await tx.query(
        `UPDATE soup SET status = 'failed', error = COALESCE(error, 'its run failed'), finished_at = now()
          WHERE status IN ('queued', 'running') AND id IN (SELECT soup_id FROM run_phase WHERE run_id = $1 AND soup_id IS NOT NULL)`,
        [runId],
      );
    }
    await this.event(tx, runId, 'run-finished', { status, error });
    await this.webhooks.notify({ resource: 'run', id: runId, status, callbackUrl: run.callbackUrl, data: { status, error, kind: run.kind } }, { manager: tx });
    this.logger.log({ run: runId, status }, 'run finished');
    return true;
  }

  /**
   * Cancels a run: it is `cancelled` at once; phases not yet succeeded and queued candidates are
   * cancelled with it. Answers the queued candidates (their jobs are the caller's to cancel).
   */
  async cancel(tx: EntityManager, runId: string): Promise<RunCandidateEntity[]> {
    await tx.update(RunEntity, { id: runId }, { status: 'cancelled', finishedAt: new Date() });
    // Finished phases keep their results; the rest will not run.
    await tx.update(RunPhaseEntity, { runId, status: Not('succeeded') }, { status: 'cancelled', finishedAt: new Date() });
    // A phase's soup still being scored (an external greedy soup waits on trainers) ends with its run.
    await tx.query(
      `UPDATE soup SET status = 'cancelled', error = 'its run was cancelled', finished_at = now()
        WHERE status IN ('queued', 'running') AND id IN (SELECT soup_id FROM run_phase WHERE run_id = $1 AND soup_id IS NOT NULL)`,
      [runId],
    );
    const queued = await tx.findBy(RunCandidateEntity, { runId, status: 'queued' });
    await tx.update(RunCandidateEntity, { runId, status: 'queued' }, { status: 'cancelled', finishedAt: new Date() });
    await this.event(tx, runId, 'run-cancelled', {});
    // With nothing running, nothing else will announce the end: do it here.
    if (!(await tx.exists(RunCandidateEntity, { where: { runId, status: 'running' } }))) await this.finish(tx, runId, 'cancelled', null);
    return queued;
  }

  /** A candidate's end (succeeded rows are claimed by the result's landing; this records the others). */
  async finishCandidate(tx: EntityManager, candidate: RunCandidateEntity, status: RunStatus, error: string | null): Promise<void> {
    await tx.update(RunCandidateEntity, { id: candidate.id }, { status, error, finishedAt: new Date(), workerId: null });
    await this.event(tx, candidate.runId, `candidate-${status}`, { phase: candidate.phase, index: candidate.index, ...(error ? { error } : {}) }, candidate.id);
  }
}
