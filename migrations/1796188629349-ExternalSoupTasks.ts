import type { MigrationInterface, QueryRunner } from 'typeorm';

export class ExternalSoupTasks1796188629349 implements MigrationInterface {
  name = 'ExternalSoupTasks1796188629349';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("ALTER TABLE \"task\" ADD \"members\" jsonb");
    await queryRunner.query("ALTER TABLE \"task\" DROP CONSTRAINT \"FK_36326cc52f4708f36ae4e6158cc\"");
    await queryRunner.query("ALTER TABLE \"task\" ALTER COLUMN \"run_id\" DROP NOT NULL");
    await queryRunner.query("CREATE INDEX \"IDX_aa11423b7ac594489096384cc4\" ON \"task\"  (\"soup_id\") ");
    await queryRunner.query("ALTER TABLE \"task\" ADD CONSTRAINT \"FK_36326cc52f4708f36ae4e6158cc\" FOREIGN KEY (\"run_id\") REFERENCES \"run\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query("ALTER TABLE \"task\" DROP CONSTRAINT \"FK_36326cc52f4708f36ae4e6158cc\"");
    await queryRunner.query("DROP INDEX \"public\".\"IDX_aa11423b7ac594489096384cc4\"");
    await queryRunner.query("ALTER TABLE \"task\" ALTER COLUMN \"run_id\" SET NOT NULL");
    await queryRunner.query("ALTER TABLE \"task\" ADD CONSTRAINT \"FK_36326cc52f4708f36ae4e6158cc\" FOREIGN KEY (\"run_id\") REFERENCES \"run\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await queryRunner.query("ALTER TABLE \"task\" DROP COLUMN \"members\"");
  }
}
