import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import { IsIn, IsInt, IsOptional, IsString, Length, Matches, Max, Min } from 'class-validator';
import { PageMetaDto } from '../common/paging.dto.js';
import { MODEL_NAME } from '../models/models.dto.js';
import type { DatasetEntity } from './dataset.entity.js';

export class DatasetSplitsDto {
  @ApiProperty() train: number;
  @ApiProperty({ description: 'held out of train (10 %, fixed seed), never trained on; greedy soups score on it' }) val: number;
  @ApiProperty() test: number;
}

export class DatasetDto {
  @ApiProperty({ example: 'mnist' }) id: string;
  @ApiProperty() name: string;
  @ApiProperty({ enum: ['builtin', 'upload', 'external'], description: 'external: the data lives with an external trainer; the service knows its name and class count only (inputShape is empty and the split counts are 0)' }) source: 'builtin' | 'upload' | 'external';
  @ApiProperty({ enum: ['idx', 'npz', 'safetensors'], nullable: true, type: String }) format: string | null;
  @ApiProperty({ nullable: true, type: String }) description: string | null;
  @ApiProperty({ type: [Number], description: '[height, width, channels]', example: [28, 28, 1] }) inputShape: number[];
  @ApiProperty() classes: number;
  @ApiProperty() splits: DatasetSplitsDto;
  @ApiProperty({ enum: ['uint8', 'float32'] }) pixels: string;
  @ApiProperty() createdAt: Date;
}

export class DatasetPageDto extends PageMetaDto {
  @ApiProperty({ type: [DatasetDto] }) items: DatasetDto[];
}

export class CreateDatasetQueryDto {
  @ApiPropertyOptional({ example: 'my-digits', description: 'required for uploads (an external dataset names itself in its JSON body)' })
  @IsOptional() @IsString() @Length(1, 200) @Matches(MODEL_NAME, { message: 'name may hold letters, digits, spaces and . _ - @ + /' })
  name?: string;

  @ApiPropertyOptional({ description: 'number of classes (default: the largest label + 1)' })
  @IsOptional() @Type(() => Number) @IsInt() @Min(2) @Max(10_000)
  classes?: number;
}

/** POST /datasets as JSON: a dataset that an external trainer holds (no data comes to the service). */
export class CreateExternalDatasetDto {
  @ApiProperty({ example: 'fashion-mnist-torch', description: 'the name the trainer knows the data by (it reaches the trainer in every task)' })
  @IsString() @Length(1, 200) @Matches(MODEL_NAME, { message: 'name may hold letters, digits, spaces and . _ - @ + /' })
  name: string;

  @ApiProperty({ enum: ['external'] })
  @IsIn(['external'])
  source: 'external';

  @ApiProperty({ example: 10 })
  @IsInt() @Min(2) @Max(10_000)
  classes: number;
}

export function mapDataset(e: DatasetEntity): DatasetDto {
  return {
    id: e.id,
    name: e.name,
    source: e.source,
    format: e.format,
    description: e.description,
    inputShape: e.inputShape,
    classes: e.classes,
    splits: { train: e.trainCount, val: e.valCount, test: e.testCount },
    pixels: e.pixels,
    createdAt: e.createdAt,
  };
}
