import type { MigrationInterface, QueryRunner } from 'typeorm';

export class Soups1795946929431 implements MigrationInterface {
  name = 'Soups1795946929431';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("CREATE TABLE \"soup\" (\"id\" uuid NOT NULL DEFAULT gen_random_uuid(), \"status\" character varying(10) NOT NULL, \"method\" character varying(20) NOT NULL, \"params\" jsonb NOT NULL, \"dataset_id\" character varying(100), \"result_model_id\" uuid, \"mask_hash\" character(64), \"sparsity\" double precision, \"weights\" jsonb, \"steps\" jsonb NOT NULL DEFAULT '[]', \"val_accuracy\" double precision, \"error\" text, \"callback_url\" character varying(2000), \"created_at\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), \"finished_at\" TIMESTAMP WITH TIME ZONE, CONSTRAINT \"PK_3a9e27921e7e923051691798843\" PRIMARY KEY (\"id\"))");
    await queryRunner.query("CREATE TABLE \"soup_ingredient\" (\"soup_id\" uuid NOT NULL, \"position\" integer NOT NULL, \"model_id\" uuid NOT NULL, CONSTRAINT \"PK_6cd1ae8ef7b6908208270566cc7\" PRIMARY KEY (\"soup_id\", \"position\"))");
    await queryRunner.query("ALTER TABLE \"soup\" ADD CONSTRAINT \"FK_f86fb8da69f7c6f394b6dcdeebd\" FOREIGN KEY (\"dataset_id\") REFERENCES \"dataset\"(\"id\") ON DELETE RESTRICT ON UPDATE NO ACTION");
    await queryRunner.query("ALTER TABLE \"soup\" ADD CONSTRAINT \"FK_3151849479bba28b84a65a62804\" FOREIGN KEY (\"result_model_id\") REFERENCES \"model\"(\"id\") ON DELETE RESTRICT ON UPDATE NO ACTION");
    await queryRunner.query("ALTER TABLE \"soup_ingredient\" ADD CONSTRAINT \"FK_6c64e727f66c7544a38510c74cf\" FOREIGN KEY (\"soup_id\") REFERENCES \"soup\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await queryRunner.query("ALTER TABLE \"soup_ingredient\" ADD CONSTRAINT \"FK_c2415b27873ab5508382a4be848\" FOREIGN KEY (\"model_id\") REFERENCES \"model\"(\"id\") ON DELETE RESTRICT ON UPDATE NO ACTION");
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("ALTER TABLE \"soup_ingredient\" DROP CONSTRAINT \"FK_c2415b27873ab5508382a4be848\"");
    await queryRunner.query("ALTER TABLE \"soup_ingredient\" DROP CONSTRAINT \"FK_6c64e727f66c7544a38510c74cf\"");
    await queryRunner.query("ALTER TABLE \"soup\" DROP CONSTRAINT \"FK_3151849479bba28b84a65a62804\"");
    await queryRunner.query("ALTER TABLE \"soup\" DROP CONSTRAINT \"FK_f86fb8da69f7c6f394b6dcdeebd\"");
    await queryRunner.query("DROP TABLE \"soup_ingredient\"");
    await queryRunner.query("DROP TABLE \"soup\"");
  }
}
