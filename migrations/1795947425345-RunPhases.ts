import type { MigrationInterface, QueryRunner } from 'typeorm';

export class RunPhases1795947425345 implements MigrationInterface {
  name = 'RunPhases1795947425345';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("CREATE TABLE \"run_phase\" (\"run_id\" uuid NOT NULL, \"index\" integer NOT NULL, \"sparsity\" double precision NOT NULL, \"status\" character varying(10) NOT NULL, \"input_model_id\" uuid, \"pruned_model_id\" uuid, \"mask_id\" uuid, \"soup_id\" uuid, \"result_model_id\" uuid, \"metrics\" jsonb, \"finished_at\" TIMESTAMP WITH TIME ZONE, CONSTRAINT \"PK_19be27e7922cc56128ceb6ff4ee\" PRIMARY KEY (\"run_id\", \"index\"))");
    await queryRunner.query("ALTER TABLE \"run_phase\" ADD CONSTRAINT \"FK_09af122948767cfadffba3d9432\" FOREIGN KEY (\"run_id\") REFERENCES \"run\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await queryRunner.query("ALTER TABLE \"run_phase\" ADD CONSTRAINT \"FK_b990bc3dd6da7c4b98eb5bc45ea\" FOREIGN KEY (\"pruned_model_id\") REFERENCES \"model\"(\"id\") ON DELETE RESTRICT ON UPDATE NO ACTION");
    await queryRunner.query("ALTER TABLE \"run_phase\" ADD CONSTRAINT \"FK_62905ec2d9bef4a9b1825e54a9e\" FOREIGN KEY (\"mask_id\") REFERENCES \"mask\"(\"id\") ON DELETE RESTRICT ON UPDATE NO ACTION");
    await queryRunner.query("ALTER TABLE \"run_phase\" ADD CONSTRAINT \"FK_e3644a4bdcf9517de80563e0ad8\" FOREIGN KEY (\"result_model_id\") REFERENCES \"model\"(\"id\") ON DELETE RESTRICT ON UPDATE NO ACTION");
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("ALTER TABLE \"run_phase\" DROP CONSTRAINT \"FK_e3644a4bdcf9517de80563e0ad8\"");
    await queryRunner.query("ALTER TABLE \"run_phase\" DROP CONSTRAINT \"FK_62905ec2d9bef4a9b1825e54a9e\"");
    await queryRunner.query("ALTER TABLE \"run_phase\" DROP CONSTRAINT \"FK_b990bc3dd6da7c4b98eb5bc45ea\"");
    await queryRunner.query("ALTER TABLE \"run_phase\" DROP CONSTRAINT \"FK_09af122948767cfadffba3d9432\"");
    await queryRunner.query("DROP TABLE \"run_phase\"");
  }
}
