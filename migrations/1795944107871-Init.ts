import type { MigrationInterface, QueryRunner } from 'typeorm';

export class Init1795944107871 implements MigrationInterface {
  name = 'Init1795944107871';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("CREATE TABLE \"artifact\" (\"sha256\" character(64) NOT NULL, \"size_bytes\" bigint NOT NULL, \"media_type\" character varying(100) NOT NULL, \"created_at\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT \"PK_6aebf7387aef358e0fba3763467\" PRIMARY KEY (\"sha256\"))");
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("DROP TABLE \"artifact\"");
  }
}
