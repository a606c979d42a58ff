import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsInt, IsOptional, Max, Min } from 'class-validator';
import { PageMetaDto } from '../common/paging.dto.js';
import type { ArtifactEntity } from './artifact.entity.js';

export class ArtifactDto {
  @ApiProperty() sha256: string;
  @ApiProperty() sizeBytes: number;
  @ApiProperty() mediaType: string;
  @ApiProperty() createdAt: Date;
}

export class ArtifactPageDto extends PageMetaDto {
  @ApiProperty({ type: [ArtifactDto] }) items: ArtifactDto[];
}

export class CollectGarbageDto {
  @ApiPropertyOptional({ description: 'only delete what is older than this (an upload in flight is younger)', default: 600, minimum: 0 })
  @IsOptional() @IsInt() @Min(0) @Max(365 * 86400)
  graceSeconds?: number;
}

export class GarbageCollectionDto {
  @ApiProperty({ description: 'artifact rows that no model, mask or dataset referenced' }) rowsDeleted: number;
  @ApiProperty({ description: 'files without a row, and stale temporary files' }) filesDeleted: number;
}

export function mapArtifact(e: ArtifactEntity): ArtifactDto {
  return { sha256: e.sha256, sizeBytes: e.sizeBytes, mediaType: e.mediaType, createdAt: e.createdAt };
}
