import type { MigrationInterface, QueryRunner } from 'typeorm';

export class ExternalTasks1796177267964 implements MigrationInterface {
  name = 'ExternalTasks1796177267964';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("CREATE TABLE \"task\" (\"id\" uuid NOT NULL DEFAULT gen_random_uuid(), \"kind\" character varying(12) NOT NULL, \"status\" character varying(10) NOT NULL, \"attempts\" integer NOT NULL DEFAULT '0', \"max_attempts\" integer NOT NULL DEFAULT '3', \"lease_expires_at\" TIMESTAMP WITH TIME ZONE, \"worker_id\" character varying(200), \"run_id\" uuid NOT NULL, \"candidate_id\" uuid, \"soup_id\" uuid, \"phase\" integer NOT NULL DEFAULT '0', \"model_id\" uuid NOT NULL, \"mask_id\" uuid, \"training\" jsonb, \"dataset_id\" character varying(100) NOT NULL, \"split\" character varying(10) NOT NULL, \"result\" jsonb, \"result_model_id\" uuid, \"error\" text, \"created_at\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), \"finished_at\" TIMESTAMP WITH TIME ZONE, CONSTRAINT \"PK_fb213f79ee45060ba925ecd576e\" PRIMARY KEY (\"id\"))");
    await queryRunner.query("CREATE INDEX \"IDX_36326cc52f4708f36ae4e6158c\" ON \"task\"  (\"run_id\") ");
    await queryRunner.query("CREATE INDEX \"IDX_5d63929c532d7ea8e701718080\" ON \"task\"  (\"status\", \"kind\", \"created_at\") ");
    await queryRunner.query("ALTER TABLE \"task\" ADD CONSTRAINT \"FK_36326cc52f4708f36ae4e6158cc\" FOREIGN KEY (\"run_id\") REFERENCES \"run\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("ALTER TABLE \"task\" DROP CONSTRAINT \"FK_36326cc52f4708f36ae4e6158cc\"");
    await queryRunner.query("DROP INDEX \"public\".\"IDX_5d63929c532d7ea8e701718080\"");
    await queryRunner.query("DROP INDEX \"public\".\"IDX_36326cc52f4708f36ae4e6158c\"");
    await queryRunner.query("DROP TABLE \"task\"");
  }
}
