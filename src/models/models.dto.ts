import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsIn, IsInt, IsOptional, IsString, IsUUID, Length, Matches, Max, Min } from 'class-validator';
import { PageMetaDto, PageQueryDto } from '../common/paging.dto.js';
import { IsDbText } from '../common/validation.js';
import { type Provenance, provenanceMetadata } from '../core/checkpoint/provenance.js';
import { safetensorsLayout } from '../core/checkpoint/safetensors.js';
import { encodeSafetensorsIndex, SAFETENSORS_INDEX, shardFile } from '../core/checkpoint/sharded.js';
import { ARCHITECTURES } from '../core/tf/architectures.js';
import type { ModelEntity } from './model.entity.js';

export const MODEL_NAME = /^[\w.@+-][\w .@+/-]{0,199}$/;

export class ModelTensorDto {
  @ApiProperty({ example: 'fc1/kernel' }) name: string;
  @ApiProperty({ enum: ['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U64', 'U32', 'U16', 'U8', 'BOOL'] }) dtype: string;
  @ApiProperty({ type: [Number], example: [784, 300] }) shape: number[];
  @ApiProperty({ description: 'kernels of dense and convolution layers; never biases or normalisation parameters' }) prunable: boolean;
  @ApiProperty({ description: 'exact zeros / elements' }) sparsity: number;
}

export class ModelFileDto {
  @ApiProperty({ example: 'model-00001-of-00003.safetensors' }) name: string;
  @ApiProperty() sizeBytes: number;
}

export class ModelDto {
  @ApiProperty({ format: 'uuid' }) id: string;
  @ApiProperty() name: string;
  @ApiProperty({ enum: ['tfjs-layers', 'tfjs-graph', 'safetensors'], description: 'tfjs-graph: a TensorFlow.js graph model (stored, pruned, masked, souped, served to tf.loadGraphModel; not trained or evaluated here)' })
  format: 'tfjs-layers' | 'tfjs-graph' | 'safetensors';
  @ApiProperty({ description: 'sha256 of the weights file (the safetensors file, or the concatenated TensorFlow.js weights)' }) sha256: string;
  @ApiProperty() sizeBytes: number;
  @ApiProperty() paramCount: number;
  @ApiProperty({ description: 'exact zeros / all weights' }) sparsity: number;
  @ApiProperty({ description: 'exact zeros / prunable weights' }) prunableSparsity: number;
  @ApiProperty({ type: [ModelTensorDto] }) tensors: ModelTensorDto[];
  @ApiProperty({ type: [String], description: 'lineage: the source of a pruned model, the ingredients of a soup, in order' }) parentIds: string[];
  @ApiProperty({ type: String, nullable: true, description: 'the mask this model was pruned with' }) maskId: string | null;
  @ApiProperty({ type: String, nullable: true, description: 'hash of the exact-zero pattern on the prunable tensors' }) impliedMaskHash: string | null;
  @ApiProperty({ description: 'true when some weight is NaN or infinite' }) nonFinite: boolean;
  @ApiProperty({ type: 'object', additionalProperties: true, description: 'provenance: how the model was made, with configuration and seed' }) origin: Record<string, unknown>;
  @ApiProperty({ type: 'object', additionalProperties: { type: 'string' } }) metadata: Record<string, string>;
  @ApiProperty({ type: [ModelFileDto], description: 'the files GET /models/{id}/files/{name} serves: a sharded safetensors model\'s index and shards, or model.safetensors; empty for TensorFlow.js models (model.json and model.weights.bin)' })
  files: ModelFileDto[];
  @ApiProperty() createdAt: Date;
}

export class ModelPageDto extends PageMetaDto {
  @ApiProperty({ type: [ModelDto] }) items: ModelDto[];
}

export class CreateModelQueryDto {
  @ApiProperty({ description: 'a name for the model', example: 'lenet' })
  @IsString() @Length(1, 200) @Matches(MODEL_NAME, { message: 'name may hold letters, digits, spaces and . _ - @ + /' })
  name: string;
}

export class ModelQueryDto extends PageQueryDto {
  @ApiPropertyOptional({ description: 'only models with exactly this name', maxLength: 200 })
  @IsOptional() @IsDbText(200)
  name?: string;

  @ApiPropertyOptional({ description: 'only direct children of this model', format: 'uuid' })
  @IsOptional() @IsUUID()
  parentId?: string;
}

export class IdParamDto {
  @ApiProperty({ format: 'uuid' }) @IsUUID() id: string;
}

export function mapModel(e: ModelEntity, parentIds: string[]): ModelDto {
  return {
    id: e.id,
    name: e.name,
    format: e.format,
    sha256: e.weightsSha256,
    sizeBytes: e.sizeBytes,
    paramCount: e.paramCount,
    sparsity: e.sparsity,
    prunableSparsity: e.prunableSparsity,
    tensors: e.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, prunable: t.prunable, sparsity: t.sparsity })),
    parentIds,
    maskId: e.maskId ?? null,
    impliedMaskHash: e.impliedMaskHash,
    nonFinite: e.nonFinite,
    origin: e.origin,
    metadata: e.metadata,
    files: modelFiles(e, parentIds),
    createdAt: e.createdAt,
  };
}

/** A model's files and their sizes, as GET /models/{id}/files/{name} serves them. */
export function modelFiles(e: ModelEntity, parentIds: string[]): ModelFileDto[] {
  if (e.format !== 'safetensors') return [];
  const metadata = servedMetadata(e, parentIds);
  if (!e.shards) return [{ name: 'model.safetensors', sizeBytes: metadata ? safetensorsLayout(e.tensors, metadata).header.byteLength + dataBytes(e) : Number(e.sizeBytes) }];
  const index = encodeSafetensorsIndex(e.shards, e.tensors);
  return [{ name: SAFETENSORS_INDEX, sizeBytes: index.byteLength }, ...e.shards.map((s) => ({ name: s.name, sizeBytes: shardFile(s, e.tensors, metadata ?? e.metadata).sizeBytes }))];
}

function dataBytes(e: ModelEntity): number {
  return e.tensors.reduce((n, t) => n + t.byteLength, 0);
}

/**
 * The safetensors `__metadata__` of the files served for a model: an upload's own (its bytes are
 * served as sent: null), a model the service made gets its provenance beside its parent's metadata.
 */
export function servedMetadata(e: ModelEntity, parentIds: string[]): Record<string, string> | null {
  if (e.origin.kind === 'upload') return null;
  return { ...e.metadata, ...provenanceMetadata(provenanceOf(e, parentIds)) };
}

export function provenanceOf(e: ModelEntity, parentIds: string[]): Provenance {
  return { modelId: e.id, parentIds, origin: e.origin, maskId: e.maskId ?? null, maskHash: e.impliedMaskHash };
}

export class CreateTemplateDto {
  @ApiProperty({ enum: ARCHITECTURES, description: 'lenet-300-100 (the classic pruning MLP), cnn-bn (conv-BN-ReLU blocks), resnet-small (residual blocks with BN)' })
  @IsIn(ARCHITECTURES)
  architecture: (typeof ARCHITECTURES)[number];

  @ApiProperty({ example: 'fashion-mnist', description: 'fixes the input shape and the number of classes' })
  @IsDbText(100)
  datasetId: string;

  @ApiPropertyOptional({ default: 0, description: 'seeds the initialisation: the same seed gives the same weights' })
  @IsOptional() @IsInt() @Min(0) @Max(2 ** 31 - 1)
  seed?: number;

  @ApiPropertyOptional({ description: 'defaults to "<architecture>-<dataset>-s<seed>"' })
  @IsOptional() @IsString() @Length(1, 200) @Matches(MODEL_NAME)
  name?: string;
}
