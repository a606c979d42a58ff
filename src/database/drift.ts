import type { DataSource } from 'typeorm';

/**
 * What TypeORM would still have to run to make the database match the entities, after the
 * migrations ran. Empty means the migrations describe the entities exactly.
 */
export async function schemaDrift(dataSource: DataSource): Promise<{ up: string[]; down: string[] }> {
  const log = await dataSource.driver.createSchemaBuilder().log();
  return {
    up: log.upQueries.map((q) => q.query),
    down: log.downQueries.map((q) => q.query),
  };
}
