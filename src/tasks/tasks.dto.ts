import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import { ArrayMaxSize, ArrayMinSize, IsArray, IsIn, IsInt, IsNumber, IsOptional, IsUUID, Max, MaxLength, Min, ValidateNested } from 'class-validator';
import { PageMetaDto, PageQueryDto } from '../common/paging.dto.js';
import { IsDbText } from '../common/validation.js';
import { TASK_KINDS, TASK_STATUSES, type TaskKind, type TaskStatus } from './task.entity.js';

const finite = { allowNaN: false, allowInfinity: false };

/** The longest a lease request waits for work before answering 204. */
export const MAX_LEASE_WAIT_SECONDS = 60;

export class LeaseTaskDto {
  @ApiProperty({ example: 'gpu-box-1:0', description: 'names the trainer (shown on the task while it holds the lease)' })
  @IsDbText(200) @MaxLength(200)
  workerId: string;

  @ApiProperty({ enum: TASK_KINDS, isArray: true, example: ['train', 'evaluate', 'recalibrate'] })
  @IsArray() @ArrayMinSize(1) @ArrayMaxSize(3) @IsIn(TASK_KINDS, { each: true })
  kinds: TaskKind[];

  @ApiPropertyOptional({ default: 0, minimum: 0, maximum: MAX_LEASE_WAIT_SECONDS, description: 'long poll: wait up to this long for a task before answering 204' })
  @IsOptional() @IsNumber(finite) @Min(0) @Max(MAX_LEASE_WAIT_SECONDS)
  waitSeconds?: number;
}

export class TaskProgressDto {
  @ApiProperty() @IsNumber(finite) @Min(0) epoch: number;
  @ApiProperty() @IsInt() @Min(0) step: number;
  @ApiProperty() @IsInt() @Min(0) steps: number;
  @ApiPropertyOptional() @IsOptional() @IsNumber(finite) loss?: number;
  @ApiPropertyOptional() @IsOptional() @IsNumber(finite) @Min(0) samplesPerSecond?: number;
  @ApiPropertyOptional() @IsOptional() @IsNumber(finite) @Min(0) learningRate?: number;
}

export class HeartbeatDto {
  @ApiPropertyOptional({ type: TaskProgressDto })
  @IsOptional() @ValidateNested() @Type(() => TaskProgressDto)
  progress?: TaskProgressDto;
}

export class HeartbeatResultDto {
  @ApiProperty({ nullable: true, type: Date, description: 'the new lease deadline (null once the task is cancelled)' }) leaseExpiresAt: Date | null;
  @ApiProperty({ description: 'true: the run was cancelled; stop, and send nothing more for this task' }) cancelled: boolean;
}

export class FailTaskDto {
  @ApiProperty({ example: 'CUDA out of memory' })
  @IsDbText(4000) @MaxLength(4000)
  error: string;
}

export class TaskModelRefDto {
  @ApiProperty() id: string;
  @ApiProperty({ example: '/models/0b6c…/safetensors', description: 'path on this service: the model as safetensors' }) url: string;
}

export class TaskMaskRefDto {
  @ApiProperty() id: string;
  @ApiProperty() hash: string;
  @ApiProperty({ example: '/masks/5e1d…/safetensors', description: 'path on this service: one U8 tensor per masked tensor (1 kept, 0 pruned); tensors it does not name are unmasked. Pruned weights stay exactly zero.' }) url: string;
}

export class TaskDatasetRefDto {
  @ApiProperty() id: string;
  @ApiProperty({ description: 'the name the trainer knows the data by' }) name: string;
}

export class TaskDto {
  @ApiProperty() id: string;
  @ApiProperty({ enum: TASK_KINDS }) kind: TaskKind;
  @ApiProperty({ enum: TASK_STATUSES }) status: TaskStatus;
  @ApiProperty() attempts: number;
  @ApiProperty() maxAttempts: number;
  @ApiProperty({ nullable: true, type: Date }) leaseExpiresAt: Date | null;
  @ApiProperty({ nullable: true, type: String }) workerId: string | null;
  @ApiProperty({ nullable: true, type: String, description: 'the run the task serves; null for the scoring of a greedy soup made with POST /soups' }) runId: string | null;
  @ApiProperty({ nullable: true, type: String }) soupId: string | null;
  @ApiProperty({ nullable: true, type: [Number], description: "greedy soups: the candidate set being scored (indices into the soup's modelIds); model is that set's uniform mean, as the service merged it (or its recalibration)" }) members: number[] | null;
  @ApiProperty({
    type: [TaskModelRefDto],
    nullable: true,
    description: "a phase's candidates: besides its own work, the trainer may evaluate their prediction ensemble (the mean of their softmax outputs) on test and send it as metrics.ensembleTestAccuracy",
  })
  ensemble: TaskModelRefDto[] | null;
  @ApiProperty({ nullable: true, type: String }) candidateId: string | null;
  @ApiProperty({ description: 'the run phase (0: a retrain run)' }) phase: number;
  @ApiProperty({ type: TaskModelRefDto }) model: TaskModelRefDto;
  @ApiProperty({ type: TaskMaskRefDto, nullable: true }) mask: TaskMaskRefDto | null;
  @ApiProperty({
    type: 'object',
    additionalProperties: true,
    nullable: true,
    description: 'train: the full training configuration (seed, epochs, batchSize, optimizer, momentum, nesterov, learningRate, schedule, warmupFraction, weightDecay, augment) and initialLearningRate: η₀ (ALLR: the rate the service computed; other schedules: learningRate)',
  })
  training: Record<string, unknown> | null;
  @ApiProperty({ type: TaskDatasetRefDto }) dataset: TaskDatasetRefDto;
  @ApiProperty({ enum: ['train', 'val', 'test'], description: 'train and recalibrate: the training split; evaluate: test for a phase result, val for a greedy soup set (report valAccuracy and testAccuracy both)' }) split: string;
  @ApiProperty({ type: 'object', additionalProperties: true, nullable: true, description: 'the accepted result: metrics, and resultModelId' }) result: Record<string, unknown> | null;
  @ApiProperty({ nullable: true, type: String }) error: string | null;
  @ApiProperty() createdAt: Date;
  @ApiProperty({ nullable: true, type: Date }) finishedAt: Date | null;
}

export class TaskPageDto extends PageMetaDto {
  @ApiProperty({ type: [TaskDto] }) items: TaskDto[];
}

export class TaskQueryDto extends PageQueryDto {
  @ApiPropertyOptional({ enum: TASK_STATUSES }) @IsOptional() @IsIn(TASK_STATUSES) status?: TaskStatus;
  @ApiPropertyOptional({ enum: TASK_KINDS }) @IsOptional() @IsIn(TASK_KINDS) kind?: TaskKind;
  @ApiPropertyOptional() @IsOptional() @IsUUID() runId?: string;
}

/** The `metrics` part of a result. */
export interface TaskMetrics {
  valAccuracy: number | null;
  testAccuracy: number | null;
  loss: number | null;
  ece?: number;
  perClassAccuracy?: (number | null)[];
  /** The task's `ensemble`: test accuracy of the mean of the candidates' softmax outputs. */
  ensembleTestAccuracy?: number;
}
