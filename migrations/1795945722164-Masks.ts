import type { MigrationInterface, QueryRunner } from 'typeorm';

export class Masks1795945722164 implements MigrationInterface {
  name = 'Masks1795945722164';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("CREATE TABLE \"mask\" (\"id\" uuid NOT NULL DEFAULT gen_random_uuid(), \"hash\" character(64) NOT NULL, \"method\" character varying(32) NOT NULL, \"params\" jsonb NOT NULL, \"sparsity\" double precision NOT NULL, \"prunable_count\" bigint NOT NULL, \"kept_count\" bigint NOT NULL, \"tensors\" jsonb NOT NULL, \"source_model_id\" uuid, \"artifact_sha256\" character(64) NOT NULL, \"created_at\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT \"PK_6da472e215efb11f94f6aed2bc3\" PRIMARY KEY (\"id\"))");
    await queryRunner.query("CREATE INDEX \"IDX_f7f00983148476b20251604c1b\" ON \"mask\"  (\"hash\") ");
    await queryRunner.query("ALTER TABLE \"model\" ADD \"mask_id\" uuid");
    await queryRunner.query("ALTER TABLE \"model\" ADD CONSTRAINT \"FK_fb8f96a6c119d5a54704bcda8c2\" FOREIGN KEY (\"mask_id\") REFERENCES \"mask\"(\"id\") ON DELETE RESTRICT ON UPDATE NO ACTION");
    await queryRunner.query("ALTER TABLE \"mask\" ADD CONSTRAINT \"FK_f19dfc5a2f558ecc9f895b0f3fb\" FOREIGN KEY (\"source_model_id\") REFERENCES \"model\"(\"id\") ON DELETE RESTRICT ON UPDATE NO ACTION");
    await queryRunner.query("ALTER TABLE \"mask\" ADD CONSTRAINT \"FK_fc9df8227af12b6846d908f7ecf\" FOREIGN KEY (\"artifact_sha256\") REFERENCES \"artifact\"(\"sha256\") ON DELETE RESTRICT ON UPDATE NO ACTION");
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("ALTER TABLE \"mask\" DROP CONSTRAINT \"FK_fc9df8227af12b6846d908f7ecf\"");
    await queryRunner.query("ALTER TABLE \"mask\" DROP CONSTRAINT \"FK_f19dfc5a2f558ecc9f895b0f3fb\"");
    await queryRunner.query("ALTER TABLE \"model\" DROP CONSTRAINT \"FK_fb8f96a6c119d5a54704bcda8c2\"");
    await queryRunner.query("ALTER TABLE \"model\" DROP COLUMN \"mask_id\"");
    await queryRunner.query("DROP INDEX \"public\".\"IDX_f7f00983148476b20251604c1b\"");
    await queryRunner.query("DROP TABLE \"mask\"");
  }
}
