import { Body, Controller, Get, Headers, HttpCode, type MessageEvent, Param, ParseUUIDPipe, Post, Query, Sse } from '@nestjs/common';
import { ApiAcceptedResponse, ApiOkResponse, ApiProduces, ApiTags } from '@nestjs/swagger';
import { Observable } from 'rxjs';
import { FINISHED } from './run.entity.js';
import { CreateRunDto, RunDto, RunPageDto, RunQueryDto } from './runs.dto.js';
import { RunsService } from './runs.service.js';

const POLL_MS = 400;

@ApiTags('runs')
@Controller('runs')
export class RunsController {
  constructor(private readonly runs: RunsService) {}

  @Post()
  @HttpCode(202)
  @ApiAcceptedResponse({ type: RunDto, description: 'queued: candidates train in parallel in the worker pool; follow GET /runs/{id}/events' })
  createRun(@Body() dto: CreateRunDto): Promise<RunDto> {
    return this.runs.create(dto);
  }

  @Get()
  @ApiOkResponse({ type: RunPageDto })
  getAllRuns(@Query() q: RunQueryDto): Promise<RunPageDto> {
    return this.runs.list(q);
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
   * learning rate), `candidate-succeeded` / `-failed` / `-retry` / `-requeued`, `run-finished`.
   * Each event's id is its sequence number: reconnect with Last-Event-ID to resume. The stream ends
   * after `run-finished`.
   */
  @Sse(':id/events')
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
