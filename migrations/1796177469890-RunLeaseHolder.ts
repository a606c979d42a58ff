import type { MigrationInterface, QueryRunner } from 'typeorm';

export class RunLeaseHolder1796177469890 implements MigrationInterface {
  name = 'RunLeaseHolder1796177469890';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("ALTER TABLE \"run\" ADD \"advance_lease_holder\" uuid");
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("ALTER TABLE \"run\" DROP COLUMN \"advance_lease_holder\"");
  }
}
