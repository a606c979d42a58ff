import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';

export class HealthCheckDto {
  @ApiProperty() ok: boolean;
  @ApiPropertyOptional() detail?: string;
}

export class DatabaseHealthDto extends HealthCheckDto {
  @ApiProperty({ enum: ['pglite', 'postgres'] }) driver: 'pglite' | 'postgres';
}

export class ArtifactsHealthDto extends HealthCheckDto {
  @ApiProperty({ enum: ['fs', 's3'], description: 'fs: a folder; s3: an S3-compatible bucket (ARTIFACTS_URL)' }) kind: 'fs' | 's3';
  @ApiProperty({ description: 'the folder, or s3://bucket/prefix (with the endpoint when not AWS)' }) location: string;
  @ApiProperty({ description: 'a probe write and delete succeeded just now' }) writable: boolean;
  @ApiProperty({ description: 'the same as location (kept for older clients)' }) path: string;
}

export class BackendHealthDto extends HealthCheckDto {
  @ApiProperty({ enum: ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'], nullable: true }) name: string | null;
  @ApiProperty({ nullable: true }) tfjsVersion: string | null;
  @ApiProperty({ description: 'backends tried before this one, with why each was passed over', type: 'array', items: { type: 'object', properties: { name: { type: 'string' }, reason: { type: 'string' } } } })
  skipped: { name: string; reason: string }[];
  @ApiProperty({
    enum: ['fma', 'xnnpack', 'native'],
    nullable: true,
    description: "what runs dense matrix products: fma (wasm: sparsoup's Relaxed SIMD fused multiply-add kernel), xnnpack (wasm: WASM_KERNELS=tfjs, or V8 without Relaxed SIMD), native (libtensorflow or the cpu backend)",
  })
  matMul: 'fma' | 'xnnpack' | 'native' | null;
}

export class WorkersHealthDto extends HealthCheckDto {
  @ApiProperty({ description: 'WORKERS' }) threads: number;
  @ApiProperty() busy: number;
  @ApiProperty() queued: number;
  @ApiProperty({ description: 'tasks ended at their time bound (TASK_TIMEOUT_SECONDS) since start' }) timedOut: number;
  @ApiProperty({ description: 'tasks past their bound that did not end (ok is false when any)' }) overdue: number;
  @ApiProperty({ description: 'age of the oldest time-bounded task in flight' }) oldestTaskSeconds: number;
}

export class HealthDto {
  @ApiProperty({ enum: ['ok', 'unavailable'] }) status: 'ok' | 'unavailable';
  @ApiProperty() version: string;
  @ApiProperty() uptimeSeconds: number;
  @ApiProperty() database: DatabaseHealthDto;
  @ApiProperty() artifacts: ArtifactsHealthDto;
  @ApiProperty() backend: BackendHealthDto;
  @ApiProperty() workers: WorkersHealthDto;
}
