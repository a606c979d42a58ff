/** Durable work, one queue per kind. Payloads carry ids, never tensors. */
export enum JobName {
  /** Train one candidate of a run (dense training or a masked retrain). */
  TrainCandidate = 'train-candidate',
  /** Advance a run's state machine (SMS / IMP phases: prune, fan out, soup, evaluate). */
  AdvanceRun = 'advance-run',
  /** Build a soup that needs evaluation (greedy) or BN recalibration. */
  BuildSoup = 'build-soup',
  /** Evaluate a model on a dataset split. */
  Evaluate = 'evaluate',
  /** POST a signed event to a callback URL. */
  DeliverWebhook = 'deliver-webhook',
}

export interface JobPayloads {
  [JobName.TrainCandidate]: { runId: string; candidateId: string };
  [JobName.AdvanceRun]: { runId: string };
  [JobName.BuildSoup]: { soupId: string };
  [JobName.Evaluate]: { evaluationId: string };
  [JobName.DeliverWebhook]: { deliveryId: string };
}

/**
 * Queues whose jobs compute in worker threads (training, phase steps, greedy soups). A process with
 * WORKERS=0 (an API process beside `npm run worker` processes) does not work them.
 */
export const COMPUTE_QUEUES: ReadonlySet<JobName> = new Set([JobName.TrainCandidate, JobName.AdvanceRun, JobName.BuildSoup, JobName.Evaluate]);

export interface QueuePolicy {
  retryLimit: number;
  retryDelay: number;
  retryBackoff: boolean;
  expireInSeconds: number;
}

/** Retries with back-off; expiry long enough for a training job (liveness is tracked separately by
 * worker heartbeats, which fail the job of a dead worker long before it expires). */
export const QUEUE_POLICIES: Record<JobName, QueuePolicy> = {
  [JobName.TrainCandidate]: { retryLimit: 3, retryDelay: 2, retryBackoff: true, expireInSeconds: 6 * 3600 },
  [JobName.AdvanceRun]: { retryLimit: 5, retryDelay: 2, retryBackoff: true, expireInSeconds: 6 * 3600 },
  [JobName.BuildSoup]: { retryLimit: 3, retryDelay: 2, retryBackoff: true, expireInSeconds: 2 * 3600 },
  [JobName.Evaluate]: { retryLimit: 3, retryDelay: 2, retryBackoff: true, expireInSeconds: 2 * 3600 },
  [JobName.DeliverWebhook]: { retryLimit: 8, retryDelay: 1, retryBackoff: true, expireInSeconds: 60 },
};
