import type { MigrationInterface, QueryRunner } from 'typeorm';

export class JobHolds1796177175737 implements MigrationInterface {
  name = 'JobHolds1796177175737';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("CREATE TABLE \"job_hold\" (\"job_id\" uuid NOT NULL, \"queue\" character varying(100) NOT NULL, \"worker_id\" uuid NOT NULL, \"started_at\" TIMESTAMP WITH TIME ZONE NOT NULL, CONSTRAINT \"PK_293c8e0c77a911a9042af255a60\" PRIMARY KEY (\"job_id\"))");
    await queryRunner.query("CREATE INDEX \"IDX_f03a33e228c5e4da41a0eea781\" ON \"job_hold\"  (\"worker_id\") ");
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("DROP INDEX \"public\".\"IDX_f03a33e228c5e4da41a0eea781\"");
    await queryRunner.query("DROP TABLE \"job_hold\"");
  }
}
