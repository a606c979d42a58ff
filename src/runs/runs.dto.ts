import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsIn, IsOptional } from 'class-validator';
import { PageMetaDto, PageQueryDto } from '../common/paging.dto.js';
import type { RunCandidateEntity, RunEntity, RunPhaseEntity } from './run.entity.js';
import { RUN_KINDS, TrainingConfigDto } from './run-requests.dto.js';

export const RUN_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;

export class RunQueryDto extends PageQueryDto {
  @ApiPropertyOptional({ enum: RUN_KINDS })
  @IsOptional() @IsIn(RUN_KINDS)
  kind?: string;

  @ApiPropertyOptional({ enum: RUN_STATUSES })
  @IsOptional() @IsIn(RUN_STATUSES)
  status?: string;
}

export class CandidateProgressDto {
  @ApiProperty() epoch: number;
  @ApiProperty() step: number;
  @ApiProperty() steps: number;
  @ApiPropertyOptional() loss?: number;
  @ApiPropertyOptional() learningRate?: number;
  @ApiPropertyOptional() samplesPerSecond?: number;
}

export class CandidateDto {
  @ApiProperty({ format: 'uuid' }) id: string;
  @ApiProperty() phase: number;
  @ApiProperty() index: number;
  @ApiProperty({ type: TrainingConfigDto }) config: Record<string, unknown>;
  @ApiProperty({ enum: RUN_STATUSES }) status: string;
  @ApiProperty() attempts: number;
  @ApiProperty({ type: CandidateProgressDto, nullable: true }) progress: CandidateProgressDto | null;
  @ApiProperty({ type: String, nullable: true, format: 'uuid' }) resultModelId: string | null;
  @ApiProperty({ type: Number, nullable: true }) valAccuracy: number | null;
  @ApiProperty({ type: Number, nullable: true }) testAccuracy: number | null;
  @ApiProperty({ type: 'object', nullable: true, additionalProperties: true }) metrics: Record<string, unknown> | null;
  @ApiProperty({ type: String, nullable: true }) error: string | null;
  @ApiProperty({ type: Date, nullable: true }) startedAt: Date | null;
  @ApiProperty({ type: Date, nullable: true }) finishedAt: Date | null;
}

export class PhaseDto {
  @ApiProperty({ description: '1-based' }) index: number;
  @ApiProperty({ description: 'the target sparsity of this phase' }) sparsity: number;
  @ApiProperty({ enum: ['queued', 'pruned', 'training', 'merging', 'succeeded', 'failed', 'cancelled'] }) status: string;
  @ApiProperty({ type: String, nullable: true }) inputModelId: string | null;
  @ApiProperty({ type: String, nullable: true }) prunedModelId: string | null;
  @ApiProperty({ type: String, nullable: true }) maskId: string | null;
  @ApiProperty({ type: [String] }) candidateIds: string[];
  @ApiProperty({ type: String, nullable: true }) soupId: string | null;
  @ApiProperty({ type: String, nullable: true }) resultModelId: string | null;
  @ApiProperty({ type: 'object', nullable: true, additionalProperties: true }) metrics: Record<string, unknown> | null;
}

export class RunDto {
  @ApiProperty({ format: 'uuid' }) id: string;
  @ApiProperty({ enum: RUN_KINDS }) kind: string;
  @ApiProperty({ enum: RUN_STATUSES }) status: string;
  @ApiProperty({ type: String, nullable: true, description: 'the TensorFlow.js backend that trained it ("external": external trainers did)' }) backend: string | null;
  @ApiProperty({ enum: ['builtin', 'external'], description: 'external: trainers lease its train / evaluate / recalibrate steps as tasks (GET /tasks?runId=…)' }) trainer: 'builtin' | 'external';
  @ApiProperty({ format: 'uuid' }) modelId: string;
  @ApiProperty() datasetId: string;
  @ApiProperty({ type: String, nullable: true, format: 'uuid' }) maskId: string | null;
  @ApiProperty({ type: 'object', additionalProperties: true, description: 'the request as validated' }) request: Record<string, unknown>;
  @ApiProperty({ type: () => [PhaseDto], description: 'IMP / SMS phases (empty for train and retrain runs)' }) phases: PhaseDto[];
  @ApiProperty({ type: [CandidateDto] }) candidates: CandidateDto[];
  @ApiProperty({ type: String, nullable: true }) error: string | null;
  @ApiProperty() createdAt: Date;
  @ApiProperty({ type: Date, nullable: true }) startedAt: Date | null;
  @ApiProperty({ type: Date, nullable: true }) finishedAt: Date | null;
}

export class RunPageDto extends PageMetaDto {
  @ApiProperty({ type: [RunDto] }) items: RunDto[];
}

export function mapCandidate(c: RunCandidateEntity): CandidateDto {
  return {
    id: c.id,
    phase: c.phase,
    index: c.index,
    config: c.config,
    status: c.status,
    attempts: c.attempts,
    progress: c.progress,
    resultModelId: c.resultModelId,
    valAccuracy: c.valAccuracy,
    testAccuracy: c.testAccuracy,
    metrics: c.metrics,
    error: c.error,
    startedAt: c.startedAt,
    finishedAt: c.finishedAt,
  };
}

export function mapRun(r: RunEntity, candidates: RunCandidateEntity[], phases: RunPhaseEntity[] = []): RunDto {
  return {
    id: r.id,
    kind: r.kind,
    status: r.status,
    backend: r.backend,
    trainer: r.request.trainer === 'external' ? 'external' : 'builtin',
    modelId: r.modelId,
    datasetId: r.datasetId,
    maskId: r.maskId,
    // The plan has its own column; answers keep it where clients have always found it.
    request: { ...r.request, plan: r.plan },
    phases: phases
      .sort((a, b) => a.index - b.index)
      .map((p) => ({
        index: p.index,
        sparsity: p.sparsity,
        status: p.status,
        inputModelId: p.inputModelId,
        prunedModelId: p.prunedModelId,
        maskId: p.maskId,
        candidateIds: candidates.filter((c) => c.phase === p.index).sort((a, b) => a.index - b.index).map((c) => c.id),
        soupId: p.soupId,
        resultModelId: p.resultModelId,
        metrics: p.metrics,
      })),
    candidates: candidates.sort((a, b) => a.phase - b.phase || a.index - b.index).map(mapCandidate),
    error: r.error,
    createdAt: r.createdAt,
    startedAt: r.startedAt,
    finishedAt: r.finishedAt,
  };
}
