/**
 * Random access to stored bytes without a local file: ranges of an object in a bucket, for example.
 * Checkpoint readers over a source read the header and then one tensor at a time, each one range,
 * so their memory is bounded by the largest tensor whatever the size of the checkpoint.
 */
export interface ByteSource {
  /** For error messages: a path, a URL. */
  readonly name: string;
  readonly size: number;
  /** Fills `target` with the bytes from `position` on; throws when the source ends first. */
  readAt(target: Uint8Array, position: number): Promise<void>;
  close(): Promise<void>;
}

/** A source held in memory (tests, small artifacts). */
export function memoryByteSource(bytes: Uint8Array, name = 'memory'): ByteSource {
  return {
    name,
    size: bytes.byteLength,
    async readAt(target, position) {
      if (position + target.byteLength > bytes.byteLength) throw new Error(`${name} ends at byte ${bytes.byteLength}, before ${position + target.byteLength}`);
      target.set(bytes.subarray(position, position + target.byteLength));
    },
    async close() {},
  };
}
