import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';

export class HealthCheckDto {
  @ApiProperty() ok: boolean;
  @ApiPropertyOptional() detail?: string;
}

export class DatabaseHealthDto extends HealthCheckDto {
  @ApiProperty({ enum: ['pglite', 'postgres'] }) driver: 'pglite' | 'postgres';
}

export class ArtifactsHealthDto extends HealthCheckDto {
  @ApiProperty() path: string;
}

export class BackendHealthDto extends HealthCheckDto {
  @ApiProperty({ enum: ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'], nullable: true }) name: string | null;
  @ApiProperty({ nullable: true }) tfjsVersion: string | null;
  @ApiProperty({ description: 'backends tried before this one, with why each was passed over', type: 'array', items: { type: 'object', properties: { name: { type: 'string' }, reason: { type: 'string' } } } })
  skipped: { name: string; reason: string }[];
}

export class HealthDto {
  @ApiProperty({ enum: ['ok', 'unavailable'] }) status: 'ok' | 'unavailable';
  @ApiProperty() version: string;
  @ApiProperty() uptimeSeconds: number;
  @ApiProperty() database: DatabaseHealthDto;
  @ApiProperty() artifacts: ArtifactsHealthDto;
  @ApiProperty() backend: BackendHealthDto;
}
