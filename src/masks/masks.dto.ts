import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { ArrayMaxSize, IsArray, IsIn, IsInt, IsNumber, IsOptional, IsString, IsUUID, Length, Matches, Max, Min, ValidateIf } from 'class-validator';
import { PageMetaDto, PageQueryDto } from '../common/paging.dto.js';
import { IsDbText } from '../common/validation.js';
import { MAX_PATTERN_LENGTH, MAX_PATTERNS } from '../core/pruning/prunable.js';
import { MODEL_NAME, ModelDto } from '../models/models.dto.js';
import type { MaskEntity } from './mask.entity.js';

export const PRUNE_METHODS = ['magnitude-global', 'magnitude-layerwise', 'random', 'n-of-m'] as const;

export class PruneModelDto {
  @ApiProperty({ enum: PRUNE_METHODS, description: 'magnitude-global is the SMS default: one L1 threshold over all prunable tensors' })
  @IsIn(PRUNE_METHODS)
  method: (typeof PRUNE_METHODS)[number];

  @ApiPropertyOptional({ minimum: 0, exclusiveMaximum: true, maximum: 1, description: 'fraction of prunable weights to prune, in [0, 1); required except for n-of-m', example: 0.9 })
  @ValidateIf((o: PruneModelDto) => o.method !== 'n-of-m' || o.sparsity !== undefined)
  @IsNumber({ allowNaN: false, allowInfinity: false }) @Min(0) @Max(0.999999999)
  sparsity?: number;

  @ApiPropertyOptional({ description: 'n-of-m: keep n of every m consecutive weights along the input dimension', example: 2 })
  @ValidateIf((o: PruneModelDto) => o.method === 'n-of-m' || o.n !== undefined)
  @IsInt() @Min(1) @Max(256)
  n?: number;

  @ApiPropertyOptional({ example: 4 })
  @ValidateIf((o: PruneModelDto) => o.method === 'n-of-m' || o.m !== undefined)
  @IsInt() @Min(1) @Max(256)
  m?: number;

  @ApiPropertyOptional({ type: [String], description: 'glob patterns on tensor names selecting the prunable tensors (replaces the default rule)', example: ['conv*/kernel'] })
  @IsOptional() @IsArray() @ArrayMaxSize(MAX_PATTERNS) @IsDbText(MAX_PATTERN_LENGTH, { each: true })
  include?: string[];

  @ApiPropertyOptional({ type: [String], description: 'glob patterns removed from the selection', example: ['fc3/*'] })
  @IsOptional() @IsArray() @ArrayMaxSize(MAX_PATTERNS) @IsDbText(MAX_PATTERN_LENGTH, { each: true })
  exclude?: string[];

  @ApiPropertyOptional({ description: 'random: the seed', default: 0 })
  @IsOptional() @IsInt() @Min(0) @Max(Number.MAX_SAFE_INTEGER)
  seed?: number;

  @ApiPropertyOptional({ enum: ['tfjs', 'torch'], description: 'n-of-m: kernel layout fixing the input axis; defaults to tfjs for TensorFlow.js models, torch for safetensors' })
  @IsOptional() @IsIn(['tfjs', 'torch'])
  layout?: 'tfjs' | 'torch';

  @ApiPropertyOptional({ description: 'name of the pruned model; defaults to "<source>-<method>-<sparsity>"' })
  @IsOptional() @IsString() @Length(1, 200) @Matches(MODEL_NAME)
  name?: string;
}

export class MaskTensorDto {
  @ApiProperty() name: string;
  @ApiProperty({ type: [Number] }) shape: number[];
  @ApiProperty() size: number;
  @ApiProperty() kept: number;
  @ApiProperty() sparsity: number;
}

export class MaskDto {
  @ApiProperty({ format: 'uuid' }) id: string;
  @ApiProperty({ description: 'canonical sha256 over tensor names, shapes and bits: equal masks have equal hashes' }) hash: string;
  @ApiProperty({ enum: [...PRUNE_METHODS, 'implied'] }) method: string;
  @ApiProperty({ type: 'object', additionalProperties: true }) params: Record<string, unknown>;
  @ApiProperty() sparsity: number;
  @ApiProperty() prunableCount: number;
  @ApiProperty() keptCount: number;
  @ApiProperty({ type: String, nullable: true, format: 'uuid' }) sourceModelId: string | null;
  @ApiProperty({ type: [MaskTensorDto] }) tensors: MaskTensorDto[];
  @ApiProperty() createdAt: Date;
}

export class MaskPageDto extends PageMetaDto {
  @ApiProperty({ type: [MaskDto] }) items: MaskDto[];
}

export class MaskQueryDto extends PageQueryDto {
  @ApiPropertyOptional({ description: 'only masks with this hash' })
  @IsOptional() @IsString() @Matches(/^[0-9a-f]{64}$/)
  hash?: string;

  @ApiPropertyOptional({ format: 'uuid' })
  @IsOptional() @IsUUID()
  sourceModelId?: string;
}

export class PruneResultDto {
  @ApiProperty() model: ModelDto;
  @ApiProperty() mask: MaskDto;
}

export class ApplyMaskDto {
  @ApiProperty({ format: 'uuid', description: 'the model to apply the mask to; its prunable tensors must have the mask\'s names and shapes' })
  @IsUUID()
  modelId: string;

  @ApiPropertyOptional({ description: 'name of the new model' })
  @IsOptional() @IsString() @Length(1, 200) @Matches(MODEL_NAME)
  name?: string;
}

export class MaskTensorDiffDto {
  @ApiProperty() name: string;
  @ApiProperty() differing: boolean;
  @ApiProperty({ description: 'positions that differ' }) hamming: number;
  @ApiProperty({ description: 'kept in this mask, pruned in the other' }) keptOnlyInA: number;
  @ApiProperty({ description: 'kept in the other, pruned in this one' }) keptOnlyInB: number;
}

export class ShapeDifferenceDto {
  @ApiProperty() name: string;
  @ApiProperty({ type: [Number] }) a: number[];
  @ApiProperty({ type: [Number] }) b: number[];
}

export class MaskDiffDto {
  @ApiProperty() equal: boolean;
  @ApiProperty({ type: [MaskTensorDiffDto] }) tensors: MaskTensorDiffDto[];
  @ApiProperty({ type: [String], description: 'tensors of this mask absent from the other' }) missing: string[];
  @ApiProperty({ type: [String], description: 'tensors of the other absent from this one' }) extra: string[];
  @ApiProperty({ type: [ShapeDifferenceDto] }) shapeDifferences: ShapeDifferenceDto[];
  @ApiProperty() hamming: number;
}

export function mapMask(e: MaskEntity): MaskDto {
  return {
    id: e.id,
    hash: e.hash,
    method: e.method,
    params: e.params,
    sparsity: e.sparsity,
    prunableCount: e.prunableCount,
    keptCount: e.keptCount,
    sourceModelId: e.sourceModelId,
    tensors: e.tensors,
    createdAt: e.createdAt,
  };
}
