import type { MigrationInterface, QueryRunner } from 'typeorm';

export class RunAdvanceLease1795951098950 implements MigrationInterface {
  name = 'RunAdvanceLease1795951098950';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("ALTER TABLE \"run\" ADD \"advance_lease_until\" TIMESTAMP WITH TIME ZONE");
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("ALTER TABLE \"run\" DROP COLUMN \"advance_lease_until\"");
  }
}
