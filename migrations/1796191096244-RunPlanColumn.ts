import type { MigrationInterface, QueryRunner } from 'typeorm';

export class RunPlanColumn1796191096244 implements MigrationInterface {
  name = 'RunPlanColumn1796191096244';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("ALTER TABLE \"run\" ADD \"plan\" jsonb NOT NULL DEFAULT '{\"mask\": {\"kind\": \"none\"}}'");
    // Runs stored before kept their plan inside the request: it moves to its column, once.
    await queryRunner.query("UPDATE \"run\" SET \"plan\" = \"request\"->'plan', \"request\" = \"request\" - 'plan' WHERE jsonb_typeof(\"request\"->'plan') = 'object'");
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("UPDATE \"run\" SET \"request\" = \"request\" || jsonb_build_object('plan', \"plan\")");
    await queryRunner.query("ALTER TABLE \"run\" DROP COLUMN \"plan\"");
  }
}
