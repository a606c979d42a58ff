import type { ArtifactStore } from './artifact-store.js';
import { FsArtifactStore } from './fs-artifact-store.js';

/**
 * How to reach the artifact store: plain data, so the main thread can hand it to worker threads,
 * which build their own store from it. A second kind (object storage) adds a variant here.
 */
export type ArtifactStoreConfig = { kind: 'fs'; root: string };

export function createArtifactStore(config: ArtifactStoreConfig): ArtifactStore {
  switch (config.kind) {
    case 'fs':
      return new FsArtifactStore(config.root);
  }
}
