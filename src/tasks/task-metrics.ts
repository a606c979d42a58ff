import { ProblemException } from '../common/problem.js';
import type { TaskKind } from './task.entity.js';
import type { TaskMetrics } from './tasks.dto.js';

const refused = (detail: string, extensions: Record<string, unknown> = {}) => new ProblemException(422, detail, { slug: 'invalid-task-result', extensions });

/**
 * The `metrics` part of a task result, checked: `{ valAccuracy, testAccuracy, loss?, ece?,
 * perClassAccuracy?, samples?, durationMs?, ensembleTestAccuracy? }` (accuracies required for train and evaluate tasks;
 * accuracies and ECE in [0, 1]; no other field). Anything else is a 422 naming each problem.
 */
export function parseTaskMetrics(kind: TaskKind, raw: unknown): TaskMetrics | null {
  if (raw === null || raw === undefined) {
    if (kind === 'recalibrate') return null;
    throw refused('the "metrics" part is missing: send { valAccuracy, testAccuracy, loss, ece?, perClassAccuracy? }');
  }
  if (typeof raw !== 'object' || Array.isArray(raw)) throw refused('"metrics" must be a JSON object');
  const m = raw as Record<string, unknown>;
  const problems: string[] = [];
  const known = new Set(['valAccuracy', 'testAccuracy', 'loss', 'ece', 'perClassAccuracy', 'samples', 'durationMs', 'ensembleTestAccuracy']);
  for (const k of Object.keys(m)) if (!known.has(k)) problems.push(`metrics.${k}: unknown field`);
  const num = (k: string, lo: number, hi: number, required: boolean) => {
    const v = m[k];
    if (v === undefined || v === null) {
      if (required) problems.push(`metrics.${k}: required`);
      return;
    }
    if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi) problems.push(`metrics.${k}: must be a finite number in [${lo}, ${hi}]`);
  };
  const required = kind !== 'recalibrate';
  num('valAccuracy', 0, 1, required);
  num('testAccuracy', 0, 1, required);
  num('loss', 0, Number.MAX_VALUE, false);
  num('ece', 0, 1, false);
  num('ensembleTestAccuracy', 0, 1, false);
  num('samples', 0, Number.MAX_SAFE_INTEGER, false);
  num('durationMs', 0, Number.MAX_SAFE_INTEGER, false);
  if (m.perClassAccuracy !== undefined && m.perClassAccuracy !== null) {
    const p = m.perClassAccuracy;
    if (!Array.isArray(p) || p.length > 10_000 || p.some((x) => x !== null && (typeof x !== 'number' || !Number.isFinite(x) || x < 0 || x > 1))) {
      problems.push('metrics.perClassAccuracy: must be an array of accuracies in [0, 1] (or null for a class with no examples)');
    }
  }
  if (problems.length) throw refused(problems.join('; '), { problems });
  return m as unknown as TaskMetrics;
}

