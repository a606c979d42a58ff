import { ArtifactEntity } from '../artifacts/artifact.entity.js';
import { DatasetEntity, DatasetFileEntity } from '../datasets/dataset.entity.js';
import { EvaluationEntity } from '../evaluations/evaluation.entity.js';
import { JobHoldEntity } from '../jobs/job-hold.entity.js';
import { MaskEntity } from '../masks/mask.entity.js';
import { ModelEntity, ModelParentEntity } from '../models/model.entity.js';
import { RunCandidateEntity, RunEntity, RunEventEntity, RunPhaseEntity, WorkerProcessEntity } from '../runs/run.entity.js';
import { SoupEntity, SoupIngredientEntity } from '../soups/soup.entity.js';
import { TaskEntity } from '../tasks/task.entity.js';
import { WebhookDeliveryEntity } from '../webhooks/webhook-delivery.entity.js';

/** Every entity, in one list: the data source, migration generation and the drift check use it. */
export const ENTITIES = [ArtifactEntity, ModelEntity, ModelParentEntity, MaskEntity, DatasetEntity, DatasetFileEntity, EvaluationEntity, RunEntity, RunCandidateEntity, RunEventEntity, RunPhaseEntity, WorkerProcessEntity, JobHoldEntity, SoupEntity, SoupIngredientEntity, WebhookDeliveryEntity, TaskEntity];
