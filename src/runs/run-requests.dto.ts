import { ApiProperty, ApiPropertyOptional, getSchemaPath, PickType } from '@nestjs/swagger';
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
  IsUrl,
  IsUUID,
  Max,
  MaxLength,
  Min,
  ValidateIf,
  ValidateNested,
} from 'class-validator';
import { IsDbText } from '../common/validation.js';
import { MAX_PATTERN_LENGTH, MAX_PATTERNS } from '../core/pruning/prunable.js';
import {
  AUGMENTATIONS,
  type Augmentation,
  TRAINING_DEFAULTS as D,
  OPTIMIZERS,
  type Optimizer,
  TRAINING_RANGES as R,
  SCHEDULES,
  type Schedule,
} from '../core/tf/training-config.js';

export const RUN_KINDS = ['train', 'retrain', 'imp', 'sms'] as const;
export const VARY = ['seed', 'weightDecay', 'epochs', 'learningRate', 'schedule'] as const;

const finite = { allowNaN: false, allowInfinity: false };

/** One candidate's training configuration. Every field has the default shown (core/tf/training-config.ts). */
export class TrainingConfigDto {
  @ApiPropertyOptional({ default: D.seed, description: 'fixes batch order and any other randomness' })
  @IsOptional() @IsInt() @Min(R.seed.min) @Max(R.seed.max)
  seed?: number;

  @ApiPropertyOptional({ default: D.epochs, description: 'fractional allowed (0.5 = half an epoch)' })
  @IsOptional() @IsNumber(finite) @Min(R.epochs.min) @Max(R.epochs.max)
  epochs?: number;

  @ApiPropertyOptional({ default: D.batchSize })
  @IsOptional() @IsInt() @Min(R.batchSize.min) @Max(R.batchSize.max)
  batchSize?: number;

  @ApiPropertyOptional({ enum: OPTIMIZERS, default: D.optimizer })
  @IsOptional() @IsIn(OPTIMIZERS)
  optimizer?: Optimizer;

  @ApiPropertyOptional({ default: D.momentum })
  @IsOptional() @IsNumber(finite) @Min(R.momentum.min) @Max(R.momentum.max)
  momentum?: number;

  @ApiPropertyOptional({ default: D.nesterov })
  @IsOptional() @IsBoolean()
  nesterov?: boolean;

  @ApiPropertyOptional({ default: D.learningRate, description: 'the peak learning rate η_max' })
  @IsOptional() @IsNumber(finite) @Min(R.learningRate.min) @Max(R.learningRate.max)
  learningRate?: number;

  @ApiPropertyOptional({ enum: SCHEDULES, default: D.schedule, description: 'constant (FT), linear decay (LLR), cosine (CLR), or ALLR (SMS); all but constant warm up' })
  @IsOptional() @IsIn(SCHEDULES)
  schedule?: Schedule;

  @ApiPropertyOptional({ default: D.warmupFraction })
  @IsOptional() @IsNumber(finite) @Min(R.warmupFraction.min) @Max(R.warmupFraction.max)
  warmupFraction?: number;

  @ApiPropertyOptional({ default: D.weightDecay })
  @IsOptional() @IsNumber(finite) @Min(R.weightDecay.min) @Max(R.weightDecay.max)
  weightDecay?: number;

  @ApiPropertyOptional({ enum: AUGMENTATIONS, default: D.augment, description: 'crop-flip: each training sample is zero-padded by 4 pixels, cropped back to its size at a random offset and mirrored left–right with probability ½ (the SMS code\'s CNN training); seeded by `seed`' })
  @IsOptional() @IsIn(AUGMENTATIONS)
  augment?: Augmentation;

  @ApiPropertyOptional({ default: D.evaluateEachEpoch, description: 'evaluate val and test accuracy after every epoch: the candidate\'s metrics.train.epochCurve (a pretraining plateau check)' })
  @IsOptional() @IsBoolean()
  evaluateEachEpoch?: boolean;
}

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

  @ApiPropertyOptional({ default: D.seed })
  @IsOptional() @IsInt() @Min(R.seed.min) @Max(R.seed.max)
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

/** The fields every kind of run takes. */
const COMMON = ['modelId', 'datasetId', 'trainer', 'training', 'callbackUrl'] as const;
/** The fields of the phased kinds (imp, sms). */
const PHASED = ['pretrain', 'pretrainEpochs', 'goalSparsity', 'phases', 'pruning'] as const;

// One schema per kind for the OpenAPI document, so a client sees which fields go with which kind.
// Requests are validated by CreateRunDto above (one class, so a field sent with the wrong kind gets
// the service's explanation rather than a bare "should not exist"); these only describe them.

export class TrainRunDto extends PickType(CreateRunDto, COMMON) {
  @ApiProperty({ enum: ['train'], description: 'dense training of one configuration' })
  kind: 'train';

  @ApiProperty({ required: true, format: 'uuid', description: 'a TensorFlow.js layers model (it carries the architecture)' })
  declare modelId: string;
}

export class RetrainRunDto extends PickType(CreateRunDto, [...COMMON, 'maskId', 'candidates', 'm', 'vary', 'values', 'pretrainEpochs'] as const) {
  @ApiProperty({ enum: ['retrain'], description: 'm candidates under one mask, in parallel' })
  kind: 'retrain';

  @ApiProperty({ required: true, format: 'uuid', description: 'the pruned model to retrain' })
  declare modelId: string;
}

export class ImpRunDto extends PickType(CreateRunDto, [...COMMON, ...PHASED, 'm', 'epochsMultiplier'] as const) {
  @ApiProperty({ enum: ['imp'], description: 'T prune–retrain phases, one candidate each (m = 1)' })
  kind: 'imp';

  @ApiProperty({ required: true, description: 'the goal sparsity S reached after the last phase', example: 0.9 })
  declare goalSparsity: number;

  @ApiProperty({ required: true, description: 'the number of phases T; phase k prunes to 1 − (1 − S)^(k/T)', example: 3 })
  declare phases: number;
}

export class SmsRunDto extends PickType(CreateRunDto, [...COMMON, ...PHASED, 'candidates', 'm', 'vary', 'values', 'soup'] as const) {
  @ApiProperty({ enum: ['sms'], description: 'T phases, each pruning once, retraining m candidates and merging them into a soup' })
  kind: 'sms';

  @ApiProperty({ required: true, description: 'the goal sparsity S reached after the last phase', example: 0.9 })
  declare goalSparsity: number;

  @ApiProperty({ required: true, description: 'the number of phases T; phase k prunes to 1 − (1 − S)^(k/T)', example: 3 })
  declare phases: number;
}

export const RUN_REQUEST_MODELS = [TrainRunDto, RetrainRunDto, ImpRunDto, SmsRunDto];

/** POST /runs's body in the OpenAPI document: one of the four kinds, told apart by `kind`. */
export const CREATE_RUN_SCHEMA = {
  oneOf: RUN_REQUEST_MODELS.map((m) => ({ $ref: getSchemaPath(m) })),
  discriminator: {
    propertyName: 'kind',
    mapping: { train: getSchemaPath(TrainRunDto), retrain: getSchemaPath(RetrainRunDto), imp: getSchemaPath(ImpRunDto), sms: getSchemaPath(SmsRunDto) },
  },
};
