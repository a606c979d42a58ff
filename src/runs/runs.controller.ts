import { Body, Controller, Get, Header, Headers, HttpCode, type MessageEvent, Param, ParseUUIDPipe, Post, Query, Sse } from '@nestjs/common';
import { ApiAcceptedResponse, ApiBody, ApiExtraModels, ApiHeader, ApiOkResponse, ApiProduces, ApiTags } from '@nestjs/swagger';
import { Observable } from 'rxjs';
import { badRequest } from '../common/problem.js';
import { FINISHED } from './run.entity.js';
import { RunReportService } from './run-report.service.js';
import { CompareQueryDto, ReportSvgQueryDto, RunCompareDto, RunReportDto } from './run-reports.dto.js';
import { CREATE_RUN_SCHEMA, CreateRunDto, RUN_REQUEST_MODELS } from './run-requests.dto.js';
import { RunDto, RunPageDto, RunQueryDto } from './runs.dto.js';
import { RunsService } from './runs.service.js';

const POLL_MS = 400;

@ApiTags('runs')
@Controller('runs')
export class RunsController {
  constructor(
    private readonly runs: RunsService,
    private readonly reports: RunReportService,
  ) {}

  @Post()
  @HttpCode(202)
  @ApiExtraModels(...RUN_REQUEST_MODELS)
  @ApiBody({ schema: CREATE_RUN_SCHEMA, description: 'one of the four kinds of run, told apart by `kind`' })
  @ApiAcceptedResponse({ type: RunDto, description: 'queued: candidates train in parallel in the worker pool; follow GET /runs/{id}/events' })
  createRun(@Body() dto: CreateRunDto): Promise<RunDto> {
    return this.runs.create(dto);
  }

  @Get()
  @ApiOkResponse({ type: RunPageDto })
  getAllRuns(@Query() q: RunQueryDto): Promise<RunPageDto> {
    return this.runs.list(q);
  }

  @Get('compare')
  @ApiOkResponse({ type: RunCompareDto, description: "several runs' phase tables side by side (SMS against IMP against IMP m×)" })
  compareRuns(@Query() q: CompareQueryDto): Promise<RunCompareDto> {
    return this.reports.compare(parseIds(q.ids));
  }

  @Get(':id/report')
  @ApiOkResponse({ type: RunReportDto, description: 'per phase: sparsity, every candidate, their mean and best, the result (soup or single model) with ECE, L2 distances' })
  getRunReport(@Param('id', ParseUUIDPipe) id: string): Promise<RunReportDto> {
    return this.reports.report(id);
  }

  @Get(':id/report.svg')
  @Header('content-type', 'image/svg+xml')
  @ApiProduces('image/svg+xml')
  @ApiOkResponse({ description: 'accuracy against sparsity: candidates as points, the result as a line, baselines as more lines' })
  getRunReportSvg(@Param('id', ParseUUIDPipe) id: string, @Query() q: ReportSvgQueryDto): Promise<string> {
    return this.reports.svg(id, q.baselineIds ? parseIds(q.baselineIds) : [], q.metric ?? 'test');
  }

  @Get(':id')
  @ApiOkResponse({ type: RunDto })
  getRun(@Param('id', ParseUUIDPipe) id: string): Promise<RunDto> {
    return this.runs.get(id);
  }

  @Post(':id/cancel')
  @HttpCode(200)
  @ApiOkResponse({ type: RunDto, description: 'queued candidates never start, running ones stop within seconds, finished ones stay' })
  cancelRun(@Param('id', ParseUUIDPipe) id: string): Promise<RunDto> {
    return this.runs.cancel(id);
  }

  /**
   * Server-sent events: `run-created`, `candidate-started`, `progress` (epoch, step, steps, loss,
   * learning rate), `candidate-succeeded` / `-failed` / `-retry` / `-requeued`; for IMP / SMS the phase
   * steps `phase-pruning`, `phase-pruned`, `phase-training`, `phase-merging`, `phase-evaluating`,
   * `phase-succeeded`; `run-finished`.
   * Each event's id is its sequence number: reconnect with Last-Event-ID to resume. The stream ends
   * after `run-finished`.
   */
  @Sse(':id/events')
  @ApiHeader({ name: 'last-event-id', required: false, description: 'resume after this event id' })
  @ApiProduces('text/event-stream')
  @ApiOkResponse({ description: 'text/event-stream of the run\'s events, replayed from the start (or after Last-Event-ID)' })
  async getRunEvents(@Param('id', ParseUUIDPipe) id: string, @Headers('last-event-id') lastEventId?: string): Promise<Observable<MessageEvent>> {
    await this.runs.entity(id);
    let after = Math.max(0, Number(lastEventId) || 0);
    return new Observable<MessageEvent>((subscriber) => {
      let stopped = false;
      const loop = async () => {
        while (!stopped) {
          const events = await this.runs.eventsAfter(id, after);
          for (const e of events) {
            after = Number(e.id);
            subscriber.next({ id: String(e.id), type: e.type, data: { ...e.data, candidateId: e.candidateId, at: e.at } });
          }
          if (events.some((e) => e.type === 'run-finished')) break;
          if (!events.length) {
            const run = await this.runs.entity(id);
            if (FINISHED.includes(run.status) && run.finishedAt && Date.now() - run.finishedAt.getTime() > 30_000) break;
            await new Promise((r) => setTimeout(r, POLL_MS));
          }
        }
        subscriber.complete();
      };
      loop().catch((err) => subscriber.error(err));
      return () => {
        stopped = true;
      };
    });
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function parseIds(csv: string): string[] {
  const ids = csv.split(',').map((x) => x.trim()).filter(Boolean);
  const bad = ids.filter((x) => !UUID.test(x));
  if (bad.length) throw badRequest(`not run ids: ${bad.join(', ')}`, 'validation');
  return ids;
}
