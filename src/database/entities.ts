import { ArtifactEntity } from '../artifacts/artifact.entity.js';
import { MaskEntity } from '../masks/mask.entity.js';
import { ModelEntity, ModelParentEntity } from '../models/model.entity.js';

/** Every entity, in one list: the data source, migration generation and the drift check use it. */
export const ENTITIES = [ArtifactEntity, ModelEntity, ModelParentEntity, MaskEntity];
