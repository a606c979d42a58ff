import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import { ArrayMaxSize, IsArray, IsIn, IsInt, IsOptional, Max, Min, ValidateNested } from 'class-validator';
import { PageMetaDto } from '../common/paging.dto.js';
import { IsDbText } from '../common/validation.js';
import { CORRUPTIONS } from '../core/data/corruptions.js';
import type { EvaluationEntity } from './evaluation.entity.js';

export const CORRUPTION_NAMES = CORRUPTIONS.map((c) => c.name);

export class CorruptionRequestDto {
  @ApiProperty({ enum: CORRUPTION_NAMES, example: 'gaussian-noise' })
  @IsIn(CORRUPTION_NAMES)
  name: string;

  @ApiProperty({ minimum: 1, maximum: 5, example: 3 })
  @IsInt() @Min(1) @Max(5)
  severity: number;
}

export class CreateEvaluationDto {
  @ApiProperty({ example: 'mnist' })
  @IsDbText(100)
  datasetId: string;

  @ApiProperty({ enum: ['train', 'val', 'test'] })
  @IsIn(['train', 'val', 'test'])
  split: 'train' | 'val' | 'test';

  @ApiPropertyOptional({ type: [CorruptionRequestDto], description: 'accuracy under these corruptions of the split (robustness, MNIST-C in spirit)' })
  @IsOptional() @IsArray() @ArrayMaxSize(50) @ValidateNested({ each: true }) @Type(() => CorruptionRequestDto)
  corruptions?: CorruptionRequestDto[];

  @ApiPropertyOptional({ description: 'seeds the corruptions: the same seed gives the same corrupted images', default: 0 })
  @IsOptional() @IsInt() @Min(0) @Max(2 ** 31 - 1)
  seed?: number;
}

export class CorruptionAccuracyDto {
  @ApiProperty() name: string;
  @ApiProperty() severity: number;
  @ApiProperty() accuracy: number;
}

export class EvaluationDto {
  @ApiProperty({ format: 'uuid' }) id: string;
  @ApiProperty({ format: 'uuid' }) modelId: string;
  @ApiProperty() datasetId: string;
  @ApiProperty({ enum: ['train', 'val', 'test'] }) split: string;
  @ApiProperty({ description: 'samples evaluated' }) count: number;
  @ApiProperty({ description: 'top-1 accuracy' }) accuracy: number;
  @ApiProperty({ description: 'mean cross-entropy' }) loss: number;
  @ApiProperty({ description: 'expected calibration error, 15 equal-width confidence bins' }) ece: number;
  @ApiProperty({ type: [Number], description: 'accuracy per true class (null for a class with no samples)' }) perClassAccuracy: (number | null)[];
  @ApiProperty({ type: Number, nullable: true }) worstClass: number | null;
  @ApiProperty({ type: Number, nullable: true }) worstClassAccuracy: number | null;
  @ApiProperty({ type: [CorruptionAccuracyDto] }) corruptions: CorruptionAccuracyDto[];
  @ApiProperty({ type: Number, nullable: true }) meanCorruptionAccuracy: number | null;
  @ApiProperty() seed: number;
  @ApiProperty() createdAt: Date;
}

export class EvaluationPageDto extends PageMetaDto {
  @ApiProperty({ type: [EvaluationDto] }) items: EvaluationDto[];
}

export function mapEvaluation(e: EvaluationEntity): EvaluationDto {
  const { model: _m, dataset: _d, ...rest } = e;
  return rest;
}
