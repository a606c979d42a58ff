import type { ArtifactStore } from './artifact-store.js';
import { FsArtifactStore } from './fs-artifact-store.js';
import { S3ArtifactStore, type S3StoreConfig } from './s3-artifact-store.js';

/**
 * How to reach the artifact store: plain data, so the main thread can hand it to worker threads,
 * which build their own store from it (an S3 store in a worker thread uses the main thread's cache).
 */
export type ArtifactStoreConfig = { kind: 'fs'; root: string } | ({ kind: 's3' } & S3StoreConfig);

export function createArtifactStore(config: ArtifactStoreConfig): ArtifactStore {
  switch (config.kind) {
    case 'fs':
      return new FsArtifactStore(config.root);
    case 's3': {
      const { kind: _kind, ...s3 } = config;
      return new S3ArtifactStore(s3);
    }
  }
}

/** The configuration a worker thread gets for the store the main thread opened. */
export function threadConfigOf(store: ArtifactStore, config: ArtifactStoreConfig): ArtifactStoreConfig {
  return store instanceof S3ArtifactStore ? { kind: 's3', ...store.threadConfig } : config;
}
