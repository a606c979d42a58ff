import type { MigrationInterface, QueryRunner } from 'typeorm';

export class ModelShards1796169549649 implements MigrationInterface {
  name = 'ModelShards1796169549649';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("ALTER TABLE \"model\" ADD \"shards\" jsonb");
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("ALTER TABLE \"model\" DROP COLUMN \"shards\"");
  }
}
