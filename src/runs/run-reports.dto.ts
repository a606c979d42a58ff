import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsIn, IsOptional, IsString } from 'class-validator';

export class ReportCandidateDto {
  @ApiProperty() id: string;
  @ApiProperty() index: number;
  @ApiProperty({ type: Number, nullable: true }) seed: number | null;
  @ApiProperty({ type: 'object', additionalProperties: true }) config: Record<string, unknown>;
  @ApiProperty() status: string;
  @ApiProperty({ type: Number, nullable: true }) valAccuracy: number | null;
  @ApiProperty({ type: Number, nullable: true }) testAccuracy: number | null;
  @ApiProperty({ type: String, nullable: true }) resultModelId: string | null;
}

export class AccuracyPairDto {
  @ApiProperty({ type: Number, nullable: true }) valAccuracy: number | null;
  @ApiProperty({ type: Number, nullable: true }) testAccuracy: number | null;
}

export class ReportResultDto {
  @ApiProperty() modelId: string;
  @ApiProperty({ type: Number, nullable: true }) valAccuracy: number | null;
  @ApiProperty({ type: Number, nullable: true }) testAccuracy: number | null;
  @ApiProperty({ type: Number, nullable: true }) ece: number | null;
  @ApiProperty({ type: Number, nullable: true }) worstClassAccuracy: number | null;
  @ApiProperty({ type: Number, nullable: true, description: 'mean accuracy under the corruptions (OOD)' }) meanCorruptionAccuracy: number | null;
}

export class ReportSoupDto {
  @ApiProperty() id: string;
  @ApiProperty() method: string;
  @ApiProperty({ type: [Number] }) weights: number[];
  @ApiProperty({ type: Number, nullable: true }) valAccuracy: number | null;
}

export class RunReportPhaseDto {
  @ApiProperty({ description: '0 for train / retrain runs' }) index: number;
  @ApiProperty() sparsity: number;
  @ApiProperty() actualSparsity: number;
  @ApiProperty() status: string;
  @ApiProperty({ type: [ReportCandidateDto] }) candidates: ReportCandidateDto[];
  @ApiProperty() candidateMean: AccuracyPairDto;
  @ApiProperty() candidateBest: AccuracyPairDto;
  @ApiProperty({ type: ReportResultDto, nullable: true, description: 'the soup (SMS) or the single candidate (IMP)' }) result: ReportResultDto | null;
  @ApiProperty({ type: ReportSoupDto, nullable: true }) soup: ReportSoupDto | null;
  @ApiProperty({ type: Number, nullable: true, description: "test accuracy of the candidates' prediction ensemble (mean of their softmax outputs): the ceiling of what averaging can reach; null with one candidate" })
  ensembleTestAccuracy: number | null;
  @ApiProperty({ type: Number, nullable: true, description: 'mean pairwise L2 distance between the candidates' }) meanL2Distance: number | null;
  @ApiProperty({ type: Number, nullable: true }) meanAngleDegrees: number | null;
}

export class RunReportDto {
  @ApiProperty() id: string;
  @ApiProperty() kind: string;
  @ApiProperty() status: string;
  @ApiProperty() datasetId: string;
  @ApiProperty() modelId: string;
  @ApiProperty({ example: 'SMS m=3 (uniform)' }) label: string;
  @ApiProperty({ type: [RunReportPhaseDto] }) phases: RunReportPhaseDto[];
}

export class CompareCellDto {
  @ApiProperty() runId: string;
  @ApiProperty({ type: Number, nullable: true }) testAccuracy: number | null;
  @ApiProperty({ type: Number, nullable: true }) valAccuracy: number | null;
  @ApiProperty({ type: Number, nullable: true }) bestCandidateTestAccuracy: number | null;
}

export class CompareRowDto {
  @ApiProperty() phase: number;
  @ApiProperty({ type: Number, nullable: true }) sparsity: number | null;
  @ApiProperty({ type: [CompareCellDto] }) cells: CompareCellDto[];
}

export class CompareRunDto {
  @ApiProperty() id: string;
  @ApiProperty() kind: string;
  @ApiProperty() label: string;
  @ApiProperty() status: string;
}

export class RunCompareDto {
  @ApiProperty({ type: [CompareRunDto] }) runs: CompareRunDto[];
  @ApiProperty({ type: [CompareRowDto], description: 'one row per phase, one cell per run' }) rows: CompareRowDto[];
}

export class ReportSvgQueryDto {
  @ApiPropertyOptional({ description: 'comma-separated run ids drawn as baseline lines' })
  @IsOptional() @IsString()
  baselineIds?: string;

  @ApiPropertyOptional({ enum: ['test', 'val'], default: 'test' })
  @IsOptional() @IsIn(['test', 'val'])
  metric?: 'test' | 'val';
}

export class CompareQueryDto {
  @ApiProperty({ description: 'comma-separated run ids' })
  @IsString()
  ids: string;
}
