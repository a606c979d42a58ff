import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import {
  ArrayMaxSize,
  ArrayMinSize,
  IsArray,
  IsBoolean,
  IsIn,
  IsInt,
  IsNumber,
  IsOptional,
  IsString,
  IsUrl,
  MaxLength,
  IsUUID,
  Max,
  Min,
  ValidateIf,
  ValidateNested,
} from 'class-validator';
import { PageMetaDto, PageQueryDto } from '../common/paging.dto.js';
import type { RunCandidateEntity, RunEntity, RunPhaseEntity } from './run.entity.js';
import { IsDbText } from '../common/validation.js';
import { MAX_PATTERN_LENGTH, MAX_PATTERNS } from '../core/pruning/prunable.js';

export const RUN_KINDS = ['train', 'retrain', 'imp', 'sms'] as const;
export const RUN_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export const VARY = ['seed', 'weightDecay', 'epochs', 'learningRate', 'schedule'] as const;
export const SCHEDULES = ['constant', 'linear', 'cosine', 'allr'] as const;
export const AUGMENTATIONS = ['none', 'crop-flip'] as const;

const finite = { allowNaN: false, allowInfinity: false };

/** One candidate's training configuration. Every field has the default shown. */
export class TrainingConfigDto {
  @ApiPropertyOptional({ default: 0, description: 'fixes batch order and any other randomness' })
  @IsOptional() @IsInt() @Min(0) @Max(2 ** 31 - 1)
  seed?: number;

  @ApiPropertyOptional({ default: 1, description: 'fractional allowed (0.5 = half an epoch)' })
  @IsOptional() @IsNumber(finite) @Min(0.001) @Max(10_000)
  epochs?: number;

  @ApiPropertyOptional({ default: 128 })
  @IsOptional() @IsInt() @Min(1) @Max(65_536)
  batchSize?: number;

  @ApiPropertyOptional({ enum: ['sgd', 'adam'], default: 'sgd' })
  @IsOptional() @IsIn(['sgd', 'adam'])
  optimizer?: 'sgd' | 'adam';

  @ApiPropertyOptional({ default: 0.9 })
  @IsOptional() @IsNumber(finite) @Min(0) @Max(0.999999)
  momentum?: number;

  @ApiPropertyOptional({ default: false })
  @IsOptional() @IsBoolean()
  nesterov?: boolean;

  @ApiPropertyOptional({ default: 0.1, description: 'the peak learning rate η_max' })
  @IsOptional() @IsNumber(finite) @Min(0) @Max(100)
  learningRate?: number;

  @ApiPropertyOptional({ enum: SCHEDULES, default: 'linear', description: 'constant (FT), linear decay (LLR), cosine (CLR), or ALLR (SMS); all but constant warm up' })
  @IsOptional() @IsIn(SCHEDULES)
  schedule?: (typeof SCHEDULES)[number];

  @ApiPropertyOptional({ default: 0.1 })
  @IsOptional() @IsNumber(finite) @Min(0) @Max(0.99)
  warmupFraction?: number;

  @ApiPropertyOptional({ default: 0.0001 })
  @IsOptional() @IsNumber(finite) @Min(0) @Max(1)
  weightDecay?: number;

  @ApiPropertyOptional({ enum: AUGMENTATIONS, default: 'none', description: 'crop-flip: each training sample is zero-padded by 4 pixels, cropped back to its size at a random offset and mirrored left–right with probability ½ (the SMS code\'s CNN training); seeded by `seed`' })
  @IsOptional() @IsIn(AUGMENTATIONS)
  augment?: (typeof AUGMENTATIONS)[number];

  @ApiPropertyOptional({ default: false, description: 'evaluate val and test accuracy after every epoch: the candidate\'s metrics.train.epochCurve (a pretraining plateau check)' })
  @IsOptional() @IsBoolean()
  evaluateEachEpoch?: boolean;
}

export type FullTrainingConfig = Required<TrainingConfigDto>;

export const TRAINING_DEFAULTS: FullTrainingConfig = {
  seed: 0,
  epochs: 1,
  batchSize: 128,
  optimizer: 'sgd',
  momentum: 0.9,
  nesterov: false,
  learningRate: 0.1,
  schedule: 'linear',
  warmupFraction: 0.1,
  weightDecay: 1e-4,
  augment: 'none',
  evaluateEachEpoch: false,
};

export class PhasePruningDto {
  @ApiPropertyOptional({ enum: ['magnitude-global', 'magnitude-layerwise', 'random'], default: 'magnitude-global' })
  @IsOptional() @IsIn(['magnitude-global', 'magnitude-layerwise', 'random'])
  method?: 'magnitude-global' | 'magnitude-layerwise' | 'random';

  @ApiPropertyOptional({ type: [String] })
  @IsOptional() @IsArray() @ArrayMaxSize(MAX_PATTERNS) @IsDbText(MAX_PATTERN_LENGTH, { each: true })
  include?: string[];

  @ApiPropertyOptional({ type: [String] })
  @IsOptional() @IsArray() @ArrayMaxSize(MAX_PATTERNS) @IsDbText(MAX_PATTERN_LENGTH, { each: true })
  exclude?: string[];
}

export class PhaseSoupDto {
  @ApiPropertyOptional({ enum: ['uniform', 'greedy'], default: 'uniform' })
  @IsOptional() @IsIn(['uniform', 'greedy'])
  method?: 'uniform' | 'greedy';

  @ApiPropertyOptional({ enum: ['>=', '>'], default: '>=' })
  @IsOptional() @IsIn(['>=', '>'])
  comparison?: '>=' | '>';
}

export class PretrainDto {
  @ApiProperty({ enum: ['lenet-300-100', 'cnn-bn', 'resnet-small'], description: 'a template sized for the dataset' })
  @IsIn(['lenet-300-100', 'cnn-bn', 'resnet-small'])
  architecture: 'lenet-300-100' | 'cnn-bn' | 'resnet-small';

  @ApiPropertyOptional({ default: 0 })
  @IsOptional() @IsInt() @Min(0) @Max(2 ** 31 - 1)
  seed?: number;

  @ApiPropertyOptional({ type: TrainingConfigDto, description: 'the dense training before phase 1' })
  @IsOptional() @ValidateNested() @Type(() => TrainingConfigDto)
  training?: TrainingConfigDto;
}

export class CreateRunDto {
  @ApiProperty({
    enum: RUN_KINDS,
    description:
      'train: dense training; retrain: m candidates under one mask, in parallel; imp: T prune–retrain phases (m = 1); ' +
      'sms: T phases, each pruning once, retraining m candidates and merging them into a soup',
  })
  @IsIn(RUN_KINDS)
  kind: (typeof RUN_KINDS)[number];

  @ApiPropertyOptional({ format: 'uuid', description: 'a TensorFlow.js layers model (it carries the architecture); imp / sms may send pretrain instead' })
  @ValidateIf((o: CreateRunDto) => !o.pretrain || o.modelId !== undefined)
  @IsUUID()
  modelId: string;

  @ApiPropertyOptional({ type: PretrainDto, description: 'imp / sms: start from a template and train it densely first (instead of modelId)' })
  @IsOptional() @ValidateNested() @Type(() => PretrainDto)
  pretrain?: PretrainDto;

  @ApiProperty({ example: 'mnist' })
  @IsDbText(100)
  datasetId: string;

  @ApiPropertyOptional({
    enum: ['builtin', 'external'],
    default: 'builtin',
    description:
      'external: train, evaluate and recalibrate become tasks that external trainers lease (POST /tasks/lease); the model is safetensors and the dataset has source "external". ' +
      'retrain, imp and sms runs (uniform soups); pruning, masks, merging and reports stay here.',
  })
  @IsOptional() @IsIn(['builtin', 'external'])
  trainer?: 'builtin' | 'external';

  @ApiPropertyOptional({ format: 'uuid', description: 'retrain: the mask to enforce (default: the model\'s own zero pattern)' })
  @IsOptional() @IsUUID()
  maskId?: string;

  @ApiPropertyOptional({ type: TrainingConfigDto, description: 'train: the configuration; retrain: the base configuration that `vary` changes' })
  @IsOptional() @ValidateNested() @Type(() => TrainingConfigDto)
  training?: TrainingConfigDto;

  @ApiPropertyOptional({ type: [TrainingConfigDto], description: 'retrain: explicit candidate configurations (instead of m + vary)' })
  @IsOptional() @IsArray() @ArrayMinSize(1) @ArrayMaxSize(64) @ValidateNested({ each: true }) @Type(() => TrainingConfigDto)
  candidates?: TrainingConfigDto[];

  @ApiPropertyOptional({ minimum: 1, maximum: 64, description: 'retrain / sms: number of candidates (imp: 1)' })
  @ValidateIf((o: CreateRunDto) => o.m !== undefined || o.kind === 'sms' || (o.kind === 'retrain' && !o.candidates))
  @IsInt() @Min(1) @Max(64)
  m?: number;

  @ApiPropertyOptional({ enum: VARY, default: 'seed', description: 'what differs between the m candidates' })
  @IsOptional() @IsIn(VARY)
  vary?: (typeof VARY)[number];

  @ApiPropertyOptional({ type: 'array', items: { oneOf: [{ type: 'number' }, { type: 'string' }] }, description: 'the m values of `vary` (default for seed: base seed + i)' })
  @IsOptional() @IsArray() @ArrayMaxSize(64)
  values?: (number | string)[];

  @ApiPropertyOptional({ description: 'ALLR: the epochs of the dense (pre)training, for E_retrain / E_pretrain (default: read from the lineage)' })
  @IsOptional() @IsNumber(finite) @Min(0.001)
  pretrainEpochs?: number;

  @ApiPropertyOptional({ description: 'imp / sms: the goal sparsity S reached after the last phase', example: 0.9 })
  @ValidateIf((o: CreateRunDto) => o.kind === 'imp' || o.kind === 'sms' || o.goalSparsity !== undefined)
  @IsNumber(finite) @Min(0.000001) @Max(0.999999)
  goalSparsity?: number;

  @ApiPropertyOptional({ description: 'imp / sms: the number of phases T; phase k prunes to 1 − (1 − S)^(k/T)', example: 3 })
  @ValidateIf((o: CreateRunDto) => o.kind === 'imp' || o.kind === 'sms' || o.phases !== undefined)
  @IsInt() @Min(1) @Max(50)
  phases?: number;

  @ApiPropertyOptional({ type: PhasePruningDto, description: 'imp / sms: how each phase prunes' })
  @IsOptional() @ValidateNested() @Type(() => PhasePruningDto)
  pruning?: PhasePruningDto;

  @ApiPropertyOptional({ type: PhaseSoupDto, description: 'sms: how each phase merges its candidates' })
  @IsOptional() @ValidateNested() @Type(() => PhaseSoupDto)
  soup?: PhaseSoupDto;

  @ApiPropertyOptional({ description: 'imp: multiplies the retraining epochs (IMP m× is the same compute as SMS with m candidates)', default: 1 })
  @IsOptional() @IsNumber(finite) @Min(0.01) @Max(100)
  epochsMultiplier?: number;

  @ApiPropertyOptional({ description: 'POSTed a signed event when the run finishes' })
  @IsOptional() @IsUrl({ require_tld: false, protocols: ['http', 'https'], require_protocol: true }) @MaxLength(2000)
  callbackUrl?: string;
}

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
    request: r.request,
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

export class ReportCandidateDto {
  @ApiProperty() id: string;
  @ApiProperty() index: number;
  @ApiProperty({ type: Number, nullable: true }) seed: number | null;
  @ApiProperty({ type: 'object', additionalProperties: true }) config: Record<string, unknown>;
  @ApiProperty() status: string;
  @ApiProperty({ type: Number, nullable: true }) valAccuracy: number | null;
  @ApiProperty({ type: Number, nullable: true }) testAccuracy: number | null;
  @ApiProperty({ type: String, nullable: true }) resultModelId: string | null;
}

export class AccuracyPairDto {
  @ApiProperty({ type: Number, nullable: true }) valAccuracy: number | null;
  @ApiProperty({ type: Number, nullable: true }) testAccuracy: number | null;
}

export class ReportResultDto {
  @ApiProperty() modelId: string;
  @ApiProperty({ type: Number, nullable: true }) valAccuracy: number | null;
  @ApiProperty({ type: Number, nullable: true }) testAccuracy: number | null;
  @ApiProperty({ type: Number, nullable: true }) ece: number | null;
  @ApiProperty({ type: Number, nullable: true }) worstClassAccuracy: number | null;
  @ApiProperty({ type: Number, nullable: true, description: 'mean accuracy under the corruptions (OOD)' }) meanCorruptionAccuracy: number | null;
}

export class ReportSoupDto {
  @ApiProperty() id: string;
  @ApiProperty() method: string;
  @ApiProperty({ type: [Number] }) weights: number[];
  @ApiProperty({ type: Number, nullable: true }) valAccuracy: number | null;
}

export class RunReportPhaseDto {
  @ApiProperty({ description: '0 for train / retrain runs' }) index: number;
  @ApiProperty() sparsity: number;
  @ApiProperty() actualSparsity: number;
  @ApiProperty() status: string;
  @ApiProperty({ type: [ReportCandidateDto] }) candidates: ReportCandidateDto[];
  @ApiProperty() candidateMean: AccuracyPairDto;
  @ApiProperty() candidateBest: AccuracyPairDto;
  @ApiProperty({ type: ReportResultDto, nullable: true, description: 'the soup (SMS) or the single candidate (IMP)' }) result: ReportResultDto | null;
  @ApiProperty({ type: ReportSoupDto, nullable: true }) soup: ReportSoupDto | null;
  @ApiProperty({ type: Number, nullable: true, description: "test accuracy of the candidates' prediction ensemble (mean of their softmax outputs): the ceiling of what averaging can reach; null with one candidate" })
  ensembleTestAccuracy: number | null;
  @ApiProperty({ type: Number, nullable: true, description: 'mean pairwise L2 distance between the candidates' }) meanL2Distance: number | null;
  @ApiProperty({ type: Number, nullable: true }) meanAngleDegrees: number | null;
}

export class RunReportDto {
  @ApiProperty() id: string;
  @ApiProperty() kind: string;
  @ApiProperty() status: string;
  @ApiProperty() datasetId: string;
  @ApiProperty() modelId: string;
  @ApiProperty({ example: 'SMS m=3 (uniform)' }) label: string;
  @ApiProperty({ type: [RunReportPhaseDto] }) phases: RunReportPhaseDto[];
}

export class CompareCellDto {
  @ApiProperty() runId: string;
  @ApiProperty({ type: Number, nullable: true }) testAccuracy: number | null;
  @ApiProperty({ type: Number, nullable: true }) valAccuracy: number | null;
  @ApiProperty({ type: Number, nullable: true }) bestCandidateTestAccuracy: number | null;
}

export class CompareRowDto {
  @ApiProperty() phase: number;
  @ApiProperty({ type: Number, nullable: true }) sparsity: number | null;
  @ApiProperty({ type: [CompareCellDto] }) cells: CompareCellDto[];
}

export class CompareRunDto {
  @ApiProperty() id: string;
  @ApiProperty() kind: string;
  @ApiProperty() label: string;
  @ApiProperty() status: string;
}

export class RunCompareDto {
  @ApiProperty({ type: [CompareRunDto] }) runs: CompareRunDto[];
  @ApiProperty({ type: [CompareRowDto], description: 'one row per phase, one cell per run' }) rows: CompareRowDto[];
}

export class ReportSvgQueryDto {
  @ApiPropertyOptional({ description: 'comma-separated run ids drawn as baseline lines' })
  @IsOptional() @IsString()
  baselineIds?: string;

  @ApiPropertyOptional({ enum: ['test', 'val'], default: 'test' })
  @IsOptional() @IsIn(['test', 'val'])
  metric?: 'test' | 'val';
}

export class CompareQueryDto {
  @ApiProperty({ description: 'comma-separated run ids' })
  @IsString()
  ids: string;
}
