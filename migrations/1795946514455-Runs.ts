import type { MigrationInterface, QueryRunner } from 'typeorm';

export class Runs1795946514455 implements MigrationInterface {
  name = 'Runs1795946514455';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("CREATE TABLE \"run\" (\"id\" uuid NOT NULL DEFAULT gen_random_uuid(), \"kind\" character varying(10) NOT NULL, \"status\" character varying(10) NOT NULL, \"backend\" character varying(20), \"request\" jsonb NOT NULL, \"model_id\" uuid NOT NULL, \"dataset_id\" character varying(100) NOT NULL, \"mask_id\" uuid, \"callback_url\" character varying(2000), \"error\" text, \"created_at\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), \"started_at\" TIMESTAMP WITH TIME ZONE, \"finished_at\" TIMESTAMP WITH TIME ZONE, CONSTRAINT \"PK_804c38ffba92002c6d2c646dd46\" PRIMARY KEY (\"id\"))");
    await queryRunner.query("CREATE INDEX \"IDX_a2b4e2c3b0156b409ff85882bd\" ON \"run\"  (\"status\", \"created_at\") ");
    await queryRunner.query("CREATE TABLE \"run_candidate\" (\"id\" uuid NOT NULL DEFAULT gen_random_uuid(), \"run_id\" uuid NOT NULL, \"phase\" integer NOT NULL DEFAULT '0', \"index\" integer NOT NULL, \"config\" jsonb NOT NULL, \"status\" character varying(10) NOT NULL, \"attempts\" integer NOT NULL DEFAULT '0', \"progress\" jsonb, \"worker_id\" uuid, \"job_id\" uuid, \"result_model_id\" uuid, \"val_accuracy\" double precision, \"test_accuracy\" double precision, \"metrics\" jsonb, \"error\" text, \"started_at\" TIMESTAMP WITH TIME ZONE, \"finished_at\" TIMESTAMP WITH TIME ZONE, CONSTRAINT \"UQ_5c25a9520fe2aa345788bfb6dcc\" UNIQUE (\"run_id\", \"phase\", \"index\"), CONSTRAINT \"PK_5e60a31cea30c84b7fb8ba458a2\" PRIMARY KEY (\"id\"))");
    await queryRunner.query("CREATE TABLE \"run_event\" (\"id\" BIGSERIAL NOT NULL, \"run_id\" uuid NOT NULL, \"type\" character varying(40) NOT NULL, \"candidate_id\" uuid, \"data\" jsonb NOT NULL, \"at\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT \"PK_2287184bc447a7cb44cda679ae3\" PRIMARY KEY (\"id\"))");
    await queryRunner.query("CREATE INDEX \"IDX_bec15a39f4aa4ff42e4266a60a\" ON \"run_event\"  (\"run_id\", \"id\") ");
    await queryRunner.query("CREATE TABLE \"worker_process\" (\"id\" uuid NOT NULL, \"hostname\" character varying(200) NOT NULL, \"pid\" integer NOT NULL, \"threads\" integer NOT NULL, \"started_at\" TIMESTAMP WITH TIME ZONE NOT NULL, \"heartbeat_at\" TIMESTAMP WITH TIME ZONE NOT NULL, CONSTRAINT \"PK_2712017c34ed1cb5bf21bb3426d\" PRIMARY KEY (\"id\"))");
    await queryRunner.query("ALTER TABLE \"run\" ADD CONSTRAINT \"FK_d774b4f3a2d68d457e07e351330\" FOREIGN KEY (\"model_id\") REFERENCES \"model\"(\"id\") ON DELETE RESTRICT ON UPDATE NO ACTION");
    await queryRunner.query("ALTER TABLE \"run\" ADD CONSTRAINT \"FK_f78a8ed2708168d2ccd5d429d6e\" FOREIGN KEY (\"dataset_id\") REFERENCES \"dataset\"(\"id\") ON DELETE RESTRICT ON UPDATE NO ACTION");
    await queryRunner.query("ALTER TABLE \"run\" ADD CONSTRAINT \"FK_c6da90087fc0ac2c5a3643a5764\" FOREIGN KEY (\"mask_id\") REFERENCES \"mask\"(\"id\") ON DELETE RESTRICT ON UPDATE NO ACTION");
    await queryRunner.query("ALTER TABLE \"run_candidate\" ADD CONSTRAINT \"FK_11cb6b4a8f7aa64e0dd59443aea\" FOREIGN KEY (\"run_id\") REFERENCES \"run\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await queryRunner.query("ALTER TABLE \"run_candidate\" ADD CONSTRAINT \"FK_ab3420fb9b72c300b6dcee8c91a\" FOREIGN KEY (\"result_model_id\") REFERENCES \"model\"(\"id\") ON DELETE RESTRICT ON UPDATE NO ACTION");
    await queryRunner.query("ALTER TABLE \"run_event\" ADD CONSTRAINT \"FK_ec435cdab48e9f71a3c9b1317f3\" FOREIGN KEY (\"run_id\") REFERENCES \"run\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("ALTER TABLE \"run_event\" DROP CONSTRAINT \"FK_ec435cdab48e9f71a3c9b1317f3\"");
    await queryRunner.query("ALTER TABLE \"run_candidate\" DROP CONSTRAINT \"FK_ab3420fb9b72c300b6dcee8c91a\"");
    await queryRunner.query("ALTER TABLE \"run_candidate\" DROP CONSTRAINT \"FK_11cb6b4a8f7aa64e0dd59443aea\"");
    await queryRunner.query("ALTER TABLE \"run\" DROP CONSTRAINT \"FK_c6da90087fc0ac2c5a3643a5764\"");
    await queryRunner.query("ALTER TABLE \"run\" DROP CONSTRAINT \"FK_f78a8ed2708168d2ccd5d429d6e\"");
    await queryRunner.query("ALTER TABLE \"run\" DROP CONSTRAINT \"FK_d774b4f3a2d68d457e07e351330\"");
    await queryRunner.query("DROP TABLE \"worker_process\"");
    await queryRunner.query("DROP INDEX \"public\".\"IDX_bec15a39f4aa4ff42e4266a60a\"");
    await queryRunner.query("DROP TABLE \"run_event\"");
    await queryRunner.query("DROP TABLE \"run_candidate\"");
    await queryRunner.query("DROP INDEX \"public\".\"IDX_a2b4e2c3b0156b409ff85882bd\"");
    await queryRunner.query("DROP TABLE \"run\"");
  }
}
