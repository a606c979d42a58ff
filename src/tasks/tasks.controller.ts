import { Body, Controller, Get, HttpCode, Param, ParseUUIDPipe, Post, Query, Req, Res } from '@nestjs/common';
import { ApiBody, ApiConsumes, ApiCreatedResponse, ApiNoContentResponse, ApiOkResponse, ApiTags } from '@nestjs/swagger';
import type { Request, Response } from 'express';
import { FailTaskDto, HeartbeatDto, HeartbeatResultDto, LeaseTaskDto, TaskDto, TaskPageDto, TaskQueryDto } from './tasks.dto.js';
import { TasksService } from './tasks.service.js';

/**
 * External trainers: lease a task, send heartbeats (they carry progress), post its result or give
 * it up. A `worker` API key may use these routes and download what its task names, nothing else.
 */
@ApiTags('tasks')
@Controller('tasks')
export class TasksController {
  constructor(private readonly tasks: TasksService) {}

  @Post('lease')
  @ApiOkResponse({ type: TaskDto, description: 'the leased task: everything needed to do it, and the lease deadline' })
  @ApiNoContentResponse({ description: 'no task of these kinds came within waitSeconds' })
  async leaseTask(@Body() dto: LeaseTaskDto, @Res({ passthrough: true }) res: Response): Promise<TaskDto | undefined> {
    const gone = new AbortController();
    const onClose = () => {
      if (!res.writableEnded) gone.abort();
    };
    res.on('close', onClose);
    const task = await this.tasks.lease(dto, gone.signal).finally(() => res.off('close', onClose));
    if (!task) {
      res.status(204);
      return undefined;
    }
    res.status(200);
    return task;
  }

  @Post(':id/heartbeat')
  @HttpCode(200)
  @ApiOkResponse({ type: HeartbeatResultDto, description: 'the lease is extended; cancelled: true when the run was cancelled (stop work)' })
  heartbeatTask(@Param('id', ParseUUIDPipe) id: string, @Body() dto: HeartbeatDto): Promise<HeartbeatResultDto> {
    return this.tasks.heartbeat(id, dto.progress);
  }

  @Post(':id/result')
  @ApiConsumes('multipart/form-data')
  @ApiBody({
    description:
      'a `metrics` part (JSON `{ valAccuracy, testAccuracy, loss, ece?, perClassAccuracy? }`) and, for train and recalibrate tasks, a `model.safetensors` part: ' +
      'the same tensor names, shapes and dtypes as the input model, all finite, pruned weights exactly zero (recalibrate: only batch-norm running statistics changed). ' +
      'A result that fails a check is refused with 422 naming what is wrong, and the task goes back to the queue (it counts an attempt).',
    schema: {
      type: 'object',
      properties: { metrics: { type: 'string', description: 'JSON' }, 'model.safetensors': { type: 'string', format: 'binary' } },
      required: ['metrics'],
    },
  })
  @ApiCreatedResponse({ type: TaskDto, description: 'accepted: the task succeeded (409 if it was already settled or its lease lapsed)' })
  resultTask(@Param('id', ParseUUIDPipe) id: string, @Req() req: Request): Promise<TaskDto> {
    return this.tasks.result(id, req);
  }

  @Post(':id/fail')
  @HttpCode(200)
  @ApiOkResponse({ type: TaskDto, description: 'the attempt is given up: the task goes back to the queue, or fails after its last attempt' })
  failTask(@Param('id', ParseUUIDPipe) id: string, @Body() dto: FailTaskDto): Promise<TaskDto> {
    return this.tasks.fail(id, dto.error);
  }

  @Get()
  @ApiOkResponse({ type: TaskPageDto })
  getAllTasks(@Query() q: TaskQueryDto): Promise<TaskPageDto> {
    return this.tasks.list(q);
  }

  @Get(':id')
  @ApiOkResponse({ type: TaskDto })
  getTask(@Param('id', ParseUUIDPipe) id: string): Promise<TaskDto> {
    return this.tasks.get(id);
  }
}
