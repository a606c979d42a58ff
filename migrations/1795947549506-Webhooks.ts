import type { MigrationInterface, QueryRunner } from 'typeorm';

export class Webhooks1795947549506 implements MigrationInterface {
  name = 'Webhooks1795947549506';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("CREATE TABLE \"webhook_delivery\" (\"id\" uuid NOT NULL DEFAULT gen_random_uuid(), \"resource\" character varying(10) NOT NULL, \"resource_id\" uuid NOT NULL, \"event\" character varying(40) NOT NULL, \"resource_status\" character varying(10) NOT NULL, \"url\" character varying(2000) NOT NULL, \"data\" jsonb NOT NULL, \"state\" character varying(10) NOT NULL, \"attempts\" integer NOT NULL DEFAULT '0', \"last_status_code\" integer, \"last_error\" text, \"created_at\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), \"last_attempt_at\" TIMESTAMP WITH TIME ZONE, \"delivered_at\" TIMESTAMP WITH TIME ZONE, CONSTRAINT \"PK_b1ae290239a778f12399db91354\" PRIMARY KEY (\"id\"))");
    await queryRunner.query("CREATE INDEX \"IDX_349a0b8896621562c0bdd75e43\" ON \"webhook_delivery\"  (\"state\", \"created_at\") ");
    await queryRunner.query("CREATE UNIQUE INDEX \"IDX_d7281802767dc4f6d22a875a1c\" ON \"webhook_delivery\"  (\"resource\", \"resource_id\", \"event\") ");
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("DROP INDEX \"public\".\"IDX_d7281802767dc4f6d22a875a1c\"");
    await queryRunner.query("DROP INDEX \"public\".\"IDX_349a0b8896621562c0bdd75e43\"");
    await queryRunner.query("DROP TABLE \"webhook_delivery\"");
  }
}
