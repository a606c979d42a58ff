import { type DynamicModule, Global, Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { DataSource } from 'typeorm';
import type { DatabaseHandle } from './data-source.js';

export const DATABASE_HANDLE = Symbol('DATABASE_HANDLE');

@Global()
@Module({})
export class DatabaseModule {
  /** Connects (running pending migrations) before any module that needs the database starts. */
  static forRoot(handle: DatabaseHandle): DynamicModule {
    return {
      module: DatabaseModule,
      imports: [
        TypeOrmModule.forRootAsync({
          useFactory: () => handle.options,
          dataSourceFactory: async (options) => new DataSource(options!).initialize(),
        }),
      ],
      providers: [{ provide: DATABASE_HANDLE, useValue: handle }],
      exports: [DATABASE_HANDLE],
    };
  }
}
