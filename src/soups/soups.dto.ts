import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { ArrayMaxSize, ArrayMinSize, IsArray, IsBoolean, IsIn, IsNumber, IsOptional, IsString, IsUrl, IsUUID, Length, Matches, MaxLength, Min } from 'class-validator';
import { PageMetaDto, PageQueryDto } from '../common/paging.dto.js';
import { IsDbText } from '../common/validation.js';
import { MODEL_NAME } from '../models/models.dto.js';
import type { SoupEntity, SoupIngredientEntity } from './soup.entity.js';

export const SOUP_METHOD_NAMES = ['uniform', 'weighted', 'greedy'] as const;

export class CreateSoupDto {
  @ApiProperty({ type: [String], description: 'the candidates, in order; they must share names, shapes, dtypes and mask' })
  @IsArray() @ArrayMinSize(1) @ArrayMaxSize(64) @IsUUID('all', { each: true })
  modelIds: string[];

  @ApiProperty({ enum: SOUP_METHOD_NAMES, description: 'see GET /soups/methods' })
  @IsIn(SOUP_METHOD_NAMES)
  method: (typeof SOUP_METHOD_NAMES)[number];

  @ApiPropertyOptional({ type: [Number], description: 'weighted: one non-negative weight per model (normalised)' })
  @IsOptional() @IsArray() @ArrayMaxSize(64) @IsNumber({ allowNaN: false, allowInfinity: false }, { each: true }) @Min(0, { each: true })
  weights?: number[];

  @ApiPropertyOptional({ description: 'greedy: scores on its val split; layers models with batch norm: recalibrates on its train split' })
  @IsOptional() @IsDbText(100)
  datasetId?: string;

  @ApiPropertyOptional({ enum: ['>=', '>'], default: '>=', description: "greedy: '>=' (SMS) accepts ties, '>' (model soups) needs a strict improvement" })
  @IsOptional() @IsIn(['>=', '>'])
  comparison?: '>=' | '>';

  @ApiPropertyOptional({ default: true, description: 'recompute batch-norm statistics after averaging (layers models with batch norm; needs datasetId)' })
  @IsOptional() @IsBoolean()
  bnRecalibration?: boolean;

  @ApiPropertyOptional({
    enum: ['builtin', 'external'],
    default: 'builtin',
    description: 'external: a greedy soup of safetensors models on an external dataset, each scored set merged here and recalibrated (batch norm) and evaluated on val by external trainers as /tasks (202). Uniform and weighted soups need no trainer (400).',
  })
  @IsOptional() @IsIn(['builtin', 'external'])
  trainer?: 'builtin' | 'external';

  @ApiPropertyOptional({ description: 'name of the result model', maxLength: 200 })
  @IsOptional() @IsString() @Length(1, 200) @Matches(MODEL_NAME, { message: 'name may hold letters, digits, spaces and . _ - @ + /' })
  name?: string;

  @ApiPropertyOptional({ description: 'POSTed a signed event when the soup finishes' })
  @IsOptional() @IsUrl({ require_tld: false, protocols: ['http', 'https'], require_protocol: true }) @MaxLength(2000)
  callbackUrl?: string;
}

export class SoupStepDto {
  @ApiProperty({ format: 'uuid' }) modelId: string;
  @ApiProperty({ description: "the candidate's own val accuracy" }) score: number;
  @ApiProperty({ description: 'val accuracy of the accepted set plus this candidate' }) soupScore: number;
  @ApiProperty() accepted: boolean;
}

export class SoupDto {
  @ApiProperty({ format: 'uuid' }) id: string;
  @ApiProperty({ enum: ['queued', 'running', 'succeeded', 'failed', 'cancelled'] }) status: string;
  @ApiProperty({ enum: SOUP_METHOD_NAMES }) method: string;
  @ApiProperty({ type: 'object', additionalProperties: true }) params: Record<string, unknown>;
  @ApiProperty({ type: [String], description: 'ingredients, in request order' }) modelIds: string[];
  @ApiProperty({ type: [String], description: 'the ingredients in the soup (all of them for uniform and weighted)' }) acceptedIds: string[];
  @ApiProperty({ type: [Number], nullable: true, description: 'normalised merge weights over modelIds' }) weights: number[] | null;
  @ApiProperty({ type: String, nullable: true, format: 'uuid' }) resultModelId: string | null;
  @ApiProperty({ type: String, nullable: true, description: 'the shared mask hash' }) maskHash: string | null;
  @ApiProperty({ type: Number, nullable: true, description: "the result's prunable sparsity (the candidates')" }) sparsity: number | null;
  @ApiProperty({ type: Number, nullable: true }) valAccuracy: number | null;
  @ApiProperty({ type: [SoupStepDto], description: 'greedy: each candidate considered, best first' }) steps: SoupStepDto[];
  @ApiProperty({ type: String, nullable: true }) datasetId: string | null;
  @ApiProperty({ type: String, nullable: true }) error: string | null;
  @ApiProperty() createdAt: Date;
  @ApiProperty({ type: Date, nullable: true }) finishedAt: Date | null;
}

export class SoupPageDto extends PageMetaDto {
  @ApiProperty({ type: [SoupDto] }) items: SoupDto[];
}

export class SoupMethodParameterDto {
  @ApiProperty() name: string;
  @ApiProperty() type: string;
  @ApiProperty({ nullable: true, oneOf: [{ type: 'string' }, { type: 'number' }, { type: 'boolean' }] }) default: unknown;
  @ApiProperty() description: string;
  @ApiPropertyOptional({ type: [String] }) enum?: string[];
}

export class SoupMethodDto {
  @ApiProperty() name: string;
  @ApiProperty() description: string;
  @ApiProperty({ description: 'the paper or code the method follows' }) reference: string;
  @ApiProperty({ enum: ['linear', 'greedy'] }) kind: string;
  @ApiProperty({ type: [SoupMethodParameterDto] }) parameters: SoupMethodParameterDto[];
}

export class SoupQueryDto extends PageQueryDto {}

export function mapSoup(s: SoupEntity, ingredients: SoupIngredientEntity[]): SoupDto {
  const modelIds = ingredients.sort((a, b) => a.position - b.position).map((i) => i.modelId);
  return {
    id: s.id,
    status: s.status,
    method: s.method,
    params: s.params,
    modelIds,
    acceptedIds: s.weights ? modelIds.filter((_, i) => (s.weights?.[i] ?? 0) > 0) : [],
    weights: s.weights,
    resultModelId: s.resultModelId,
    maskHash: s.maskHash,
    sparsity: s.sparsity,
    valAccuracy: s.valAccuracy,
    steps: s.steps,
    datasetId: s.datasetId,
    error: s.error,
    createdAt: s.createdAt,
    finishedAt: s.finishedAt,
  };
}
