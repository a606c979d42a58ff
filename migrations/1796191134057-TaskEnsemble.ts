import type { MigrationInterface, QueryRunner } from 'typeorm';

export class TaskEnsemble1796191134057 implements MigrationInterface {
  name = 'TaskEnsemble1796191134057';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("ALTER TABLE \"task\" ADD \"ensemble_model_ids\" jsonb");
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("ALTER TABLE \"task\" DROP COLUMN \"ensemble_model_ids\"");
  }
}
