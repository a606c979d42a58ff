import type { MigrationInterface, QueryRunner } from 'typeorm';

export class Models1795945294002 implements MigrationInterface {
  name = 'Models1795945294002';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("CREATE TABLE \"model\" (\"id\" uuid NOT NULL DEFAULT gen_random_uuid(), \"name\" character varying(200) NOT NULL, \"format\" character varying(20) NOT NULL, \"weights_sha256\" character(64) NOT NULL, \"topology_sha256\" character(64), \"size_bytes\" bigint NOT NULL, \"param_count\" bigint NOT NULL, \"sparsity\" double precision NOT NULL, \"prunable_sparsity\" double precision NOT NULL, \"non_finite\" boolean NOT NULL, \"tensors\" jsonb NOT NULL, \"metadata\" jsonb NOT NULL DEFAULT '{}', \"origin\" jsonb NOT NULL, \"implied_mask_hash\" character(64), \"created_at\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT \"PK_d6df271bba301d5cc79462912a4\" PRIMARY KEY (\"id\"))");
    await queryRunner.query("CREATE INDEX \"IDX_b19ef2555e9aa71a4dcc440337\" ON \"model\"  (\"name\") ");
    await queryRunner.query("CREATE TABLE \"model_parent\" (\"model_id\" uuid NOT NULL, \"parent_id\" uuid NOT NULL, \"position\" integer NOT NULL, CONSTRAINT \"PK_2f9018cc371ff1f0456f07988f0\" PRIMARY KEY (\"model_id\", \"parent_id\"))");
    await queryRunner.query("CREATE INDEX \"IDX_c3a09f8b2db6d9df442fb4744f\" ON \"model_parent\"  (\"parent_id\") ");
    await queryRunner.query("ALTER TABLE \"model\" ADD CONSTRAINT \"FK_44a814167a23216d7ddf2bf00ff\" FOREIGN KEY (\"weights_sha256\") REFERENCES \"artifact\"(\"sha256\") ON DELETE RESTRICT ON UPDATE NO ACTION");
    await queryRunner.query("ALTER TABLE \"model\" ADD CONSTRAINT \"FK_bf14787deb470ca4504eed9a967\" FOREIGN KEY (\"topology_sha256\") REFERENCES \"artifact\"(\"sha256\") ON DELETE RESTRICT ON UPDATE NO ACTION");
    await queryRunner.query("ALTER TABLE \"model_parent\" ADD CONSTRAINT \"FK_626beb67864bac2835a578ff11e\" FOREIGN KEY (\"model_id\") REFERENCES \"model\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await queryRunner.query("ALTER TABLE \"model_parent\" ADD CONSTRAINT \"FK_c3a09f8b2db6d9df442fb4744f9\" FOREIGN KEY (\"parent_id\") REFERENCES \"model\"(\"id\") ON DELETE RESTRICT ON UPDATE NO ACTION");
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("ALTER TABLE \"model_parent\" DROP CONSTRAINT \"FK_c3a09f8b2db6d9df442fb4744f9\"");
    await queryRunner.query("ALTER TABLE \"model_parent\" DROP CONSTRAINT \"FK_626beb67864bac2835a578ff11e\"");
    await queryRunner.query("ALTER TABLE \"model\" DROP CONSTRAINT \"FK_bf14787deb470ca4504eed9a967\"");
    await queryRunner.query("ALTER TABLE \"model\" DROP CONSTRAINT \"FK_44a814167a23216d7ddf2bf00ff\"");
    await queryRunner.query("DROP INDEX \"public\".\"IDX_c3a09f8b2db6d9df442fb4744f\"");
    await queryRunner.query("DROP TABLE \"model_parent\"");
    await queryRunner.query("DROP INDEX \"public\".\"IDX_b19ef2555e9aa71a4dcc440337\"");
    await queryRunner.query("DROP TABLE \"model\"");
  }
}
