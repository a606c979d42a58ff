/**
 * Where a model came from, written into every file the service serves for a model it made (pruned,
 * masked, souped, trained): safetensors `__metadata__` (string values) and TensorFlow.js
 * `userDefinedMetadata`. A file looked at in a year says where it came from without the database.
 */
export interface Provenance {
  modelId: string;
  parentIds: readonly string[];
  /** How it was made: kind (prune, soup, train…), method, parameters, seed, run and phase. */
  origin: Record<string, unknown>;
  maskId: string | null;
  /** Hash of the exact-zero pattern on the prunable tensors. */
  maskHash: string | null;
}

/** safetensors `__metadata__` entries (namespaced, string-valued). */
export function provenanceMetadata(p: Provenance): Record<string, string> {
  const out: Record<string, string> = {
    'sparsoup.model_id': p.modelId,
    'sparsoup.parents': JSON.stringify(p.parentIds),
    'sparsoup.origin': JSON.stringify(p.origin),
  };
  if (p.maskId) out['sparsoup.mask_id'] = p.maskId;
  if (p.maskHash) out['sparsoup.mask_hash'] = p.maskHash;
  for (const k of ['runId', 'phase', 'soupId', 'method'] as const) {
    const v = p.origin[k];
    if (v !== undefined && v !== null) out[`sparsoup.${k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`] = typeof v === 'string' ? v : JSON.stringify(v);
  }
  return out;
}

/** TensorFlow.js model.json `userDefinedMetadata.sparsoup`. */
export function provenanceJson(p: Provenance): Record<string, unknown> {
  return { modelId: p.modelId, parentIds: [...p.parentIds], origin: p.origin, maskId: p.maskId, maskHash: p.maskHash };
}
