/**
 * What a model row knows of its mask row: the type of `ModelEntity.mask`, so that model.entity.ts
 * names the relation without importing mask.entity.ts (which imports the model entity for its
 * source model; TypeORM resolves the relation by the entity's name).
 */
export interface MaskRow {
  id: string;
  hash: string;
  artifactSha256: string;
}
