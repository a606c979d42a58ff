import type { MigrationInterface, QueryRunner } from 'typeorm';

export class DatasetsEvaluations1795946091782 implements MigrationInterface {
  name = 'DatasetsEvaluations1795946091782';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("CREATE TABLE \"dataset\" (\"id\" character varying(100) NOT NULL, \"name\" character varying(200) NOT NULL, \"source\" character varying(10) NOT NULL, \"format\" character varying(20), \"description\" text, \"input_shape\" jsonb NOT NULL, \"classes\" integer NOT NULL, \"train_count\" integer NOT NULL, \"val_count\" integer NOT NULL, \"test_count\" integer NOT NULL, \"pixels\" character varying(10) NOT NULL, \"created_at\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT \"PK_36c1c67adb3d1dd69ae57f18913\" PRIMARY KEY (\"id\"))");
    await queryRunner.query("CREATE TABLE \"dataset_file\" (\"dataset_id\" character varying(100) NOT NULL, \"role\" character varying(20) NOT NULL, \"artifact_sha256\" character(64) NOT NULL, CONSTRAINT \"PK_428a6ac0d45bd3ad5ff6aa1613a\" PRIMARY KEY (\"dataset_id\", \"role\"))");
    await queryRunner.query("CREATE TABLE \"evaluation\" (\"id\" uuid NOT NULL DEFAULT gen_random_uuid(), \"model_id\" uuid NOT NULL, \"dataset_id\" character varying(100) NOT NULL, \"split\" character varying(10) NOT NULL, \"count\" integer NOT NULL, \"accuracy\" double precision NOT NULL, \"loss\" double precision NOT NULL, \"ece\" double precision NOT NULL, \"per_class_accuracy\" jsonb NOT NULL, \"worst_class\" integer, \"worst_class_accuracy\" double precision, \"corruptions\" jsonb NOT NULL, \"mean_corruption_accuracy\" double precision, \"seed\" integer NOT NULL, \"created_at\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT \"PK_b72edd439b9db736f55b584fa54\" PRIMARY KEY (\"id\"))");
    await queryRunner.query("CREATE INDEX \"IDX_c17b397207be77aeae7035a792\" ON \"evaluation\"  (\"model_id\") ");
    await queryRunner.query("ALTER TABLE \"dataset_file\" ADD CONSTRAINT \"FK_e9a85a5a1e2dba6843091bc2d64\" FOREIGN KEY (\"dataset_id\") REFERENCES \"dataset\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await queryRunner.query("ALTER TABLE \"dataset_file\" ADD CONSTRAINT \"FK_262bd64bb56cedfeaad640d41f5\" FOREIGN KEY (\"artifact_sha256\") REFERENCES \"artifact\"(\"sha256\") ON DELETE RESTRICT ON UPDATE NO ACTION");
    await queryRunner.query("ALTER TABLE \"evaluation\" ADD CONSTRAINT \"FK_c17b397207be77aeae7035a792c\" FOREIGN KEY (\"model_id\") REFERENCES \"model\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await queryRunner.query("ALTER TABLE \"evaluation\" ADD CONSTRAINT \"FK_9add8b5fd2b68e475f8889d4af9\" FOREIGN KEY (\"dataset_id\") REFERENCES \"dataset\"(\"id\") ON DELETE RESTRICT ON UPDATE NO ACTION");
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("ALTER TABLE \"evaluation\" DROP CONSTRAINT \"FK_9add8b5fd2b68e475f8889d4af9\"");
    await queryRunner.query("ALTER TABLE \"evaluation\" DROP CONSTRAINT \"FK_c17b397207be77aeae7035a792c\"");
    await queryRunner.query("ALTER TABLE \"dataset_file\" DROP CONSTRAINT \"FK_262bd64bb56cedfeaad640d41f5\"");
    await queryRunner.query("ALTER TABLE \"dataset_file\" DROP CONSTRAINT \"FK_e9a85a5a1e2dba6843091bc2d64\"");
    await queryRunner.query("DROP INDEX \"public\".\"IDX_c17b397207be77aeae7035a792\"");
    await queryRunner.query("DROP TABLE \"evaluation\"");
    await queryRunner.query("DROP TABLE \"dataset_file\"");
    await queryRunner.query("DROP TABLE \"dataset\"");
  }
}
