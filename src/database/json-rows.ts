import type { DataSource, EntityTarget } from 'typeorm';

const TIME_TYPES = new Set(['timestamptz', 'timestamp', 'timestamp with time zone', 'timestamp without time zone', 'date']);

/**
 * An entity from a row that Postgres turned into JSON (`to_jsonb(t)`, keys the column names), as
 * TypeORM would have hydrated it: each column under its property name, timestamps as Dates, nulls as
 * null. It lets one statement read a row with its children (`jsonb_agg` in subqueries) where
 * TypeORM would need a query per table; every query costs main-thread time with the embedded
 * database (PGlite runs in this thread).
 */
export function entityFromJson<T>(dataSource: DataSource, target: EntityTarget<T>, json: Record<string, unknown>): T {
  const meta = dataSource.getMetadata(target);
  const entity = meta.create() as Record<string, unknown>;
  for (const column of meta.columns) {
    // A relation without a column of its own has nothing here to read.
    if (column.isVirtual) continue;
    const value = json[column.databaseName];
    entity[column.propertyName] = value == null ? null : typeof column.type === 'string' && TIME_TYPES.has(column.type) ? new Date(value as string) : value;
  }
  return entity as T;
}
