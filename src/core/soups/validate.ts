import { CoreInputError } from '../errors.js';
import { diffMasks, maskHash } from '../masks/compare.js';
import { impliedMask } from '../masks/implied.js';
import { allocateMask, type Mask } from '../masks/mask.js';
import type { PrunableRule } from '../pruning/prunable.js';
import { type CheckpointReader, DTYPE_BYTES, FLOAT_DTYPES, type TensorEntry } from '../tensors.js';

/**
 * Candidates are merged only when they have the same tensors (names, order, shapes, dtypes), the
 * same integer/bool tensors, and the same mask: the same exact-zero pattern on every prunable
 * tensor. Everything that differs is reported at once, relative to candidate 0.
 */

export type MismatchKind = 'missing' | 'extra' | 'order' | 'shape' | 'dtype' | 'mask' | 'values';

export interface CandidateMismatch {
  /** Tensor name (for `order`: the first position where the order differs). */
  tensor: string;
  kind: MismatchKind;
  /** Index of the candidate that differs from candidate 0. */
  candidate: number;
  /** Candidate 0's shape, dtype or name (order). */
  expected?: unknown;
  /** This candidate's. */
  actual?: unknown;
  /** `mask`: positions whose kept/pruned state differs; `values`: integer/bool elements that differ. */
  differing?: number;
  /** `mask`: kept in candidate 0, zero in this candidate. */
  keptOnlyInReference?: number;
  /** `mask`: kept in this candidate, zero in candidate 0. */
  keptOnlyInCandidate?: number;
  /** `order`: the position in candidate 0's tensor list. */
  position?: number;
}

/** At most this many mismatches are listed (the error says how many there were). */
export const MAX_MISMATCHES = 1000;

export interface ValidateOptions {
  /** Which tensors are prunable (the masks compared); the default rule when absent. */
  rule?: PrunableRule;
  /**
   * Known implied-mask hashes (`maskHash(impliedMask(reader, rule))`, under the same rule), one per
   * candidate or null. When they are all given and equal, no file is read for masks; any other
   * case computes the masks it needs, and a mismatch is reported only when the computed masks differ.
   */
  maskHashes?: readonly (string | null | undefined)[];
  signal?: AbortSignal;
}

export interface ValidatedCandidates {
  /** Candidate 0's tensors: the soup's layout. */
  tensors: readonly TensorEntry[];
  /** The shared mask's hash. */
  maskHash: string;
  /** The shared mask, when it was computed (not when matching hashes made reading unnecessary). */
  mask?: Mask;
  /** Per candidate, given or computed. */
  maskHashes: string[];
}

const fmtShape = (s: readonly number[]) => `[${s.join(', ')}]`;

/** Layout differences of `other` (candidate `candidate`) from the reference tensors. */
export function compareLayouts(ref: readonly TensorEntry[], other: readonly TensorEntry[], candidate: number): CandidateMismatch[] {
  const out: CandidateMismatch[] = [];
  const theirs = new Map(other.map((e) => [e.name, e]));
  const ours = new Set(ref.map((e) => e.name));
  for (const e of ref) {
    const o = theirs.get(e.name);
    if (!o) {
      out.push({ tensor: e.name, kind: 'missing', candidate });
      continue;
    }
    if (o.dtype !== e.dtype) out.push({ tensor: e.name, kind: 'dtype', candidate, expected: e.dtype, actual: o.dtype });
    if (o.shape.length !== e.shape.length || o.shape.some((d, i) => d !== e.shape[i])) {
      out.push({ tensor: e.name, kind: 'shape', candidate, expected: [...e.shape], actual: [...o.shape] });
    }
  }
  for (const o of other) if (!ours.has(o.name)) out.push({ tensor: o.name, kind: 'extra', candidate });
  if (out.every((m) => m.kind !== 'missing' && m.kind !== 'extra')) {
    const position = ref.findIndex((e, i) => other[i].name !== e.name);
    if (position >= 0) out.push({ tensor: ref[position].name, kind: 'order', candidate, position, expected: ref[position].name, actual: other[position].name });
  }
  return out;
}

function describe(m: CandidateMismatch): string {
  switch (m.kind) {
    case 'missing':
      return `lacks ${m.tensor}`;
    case 'extra':
      return `has an extra tensor ${m.tensor}`;
    case 'order':
      return `lists ${String(m.actual)} at position ${m.position}, where candidate 0 lists ${String(m.expected)}`;
    case 'shape':
      return `${m.tensor} has shape ${fmtShape(m.actual as number[])}, not ${fmtShape(m.expected as number[])}`;
    case 'dtype':
      return `${m.tensor} is ${String(m.actual)}, not ${String(m.expected)}`;
    case 'mask':
      return `${m.tensor}'s zero pattern differs at ${m.differing} position(s)`;
    case 'values':
      return `${m.tensor} (${String(m.expected)}) differs in ${m.differing} element(s)`;
  }
}

/**
 * The 422 for candidates that cannot be merged: `mask-mismatch` when only masks differ, else
 * `candidate-mismatch`; `details.mismatches` lists every difference (up to MAX_MISMATCHES).
 */
export function mismatchError(mismatches: readonly CandidateMismatch[]): CoreInputError {
  const onlyMasks = mismatches.every((m) => m.kind === 'mask');
  const byCandidate = new Map<number, CandidateMismatch[]>();
  for (const m of mismatches) byCandidate.set(m.candidate, [...(byCandidate.get(m.candidate) ?? []), m]);
  const parts = [...byCandidate].map(([c, ms]) => {
    const shown = ms.slice(0, 3).map(describe).join('; ');
    return `candidate ${c}: ${shown}${ms.length > 3 ? `; and ${ms.length - 3} more` : ''}`;
  });
  const what = onlyMasks ? 'the candidates do not share one mask' : 'the candidates do not have the same tensors';
  return new CoreInputError(
    onlyMasks ? 'mask-mismatch' : 'candidate-mismatch',
    `${what} (compared with candidate 0): ${parts.join(' | ')}`,
    { mismatches: mismatches.slice(0, MAX_MISMATCHES), total: mismatches.length, truncated: mismatches.length > MAX_MISMATCHES },
    422,
  );
}

/** Elements (of `elementBytes` each) at which `a` and `b` differ. */
export function countDifferentElements(a: Uint8Array, b: Uint8Array, elementBytes: number): number {
  let n = 0;
  for (let i = 0; i < a.length; i += elementBytes) {
    for (let k = 0; k < elementBytes; k++) {
      if (a[i + k] !== b[i + k]) {
        n++;
        break;
      }
    }
  }
  return n;
}

/** The implied mask, with "no prunable tensor" meaning an empty mask (a soup may have none). */
async function maskOf(reader: CheckpointReader, rule: PrunableRule | undefined, scratch: { buf?: Float32Array }): Promise<Mask> {
  try {
    const largest = reader.tensors.reduce((n, e) => (FLOAT_DTYPES.has(e.dtype) ? Math.max(n, e.byteLength / DTYPE_BYTES[e.dtype]) : n), 0);
    if (!scratch.buf || scratch.buf.length < largest) scratch.buf = new Float32Array(largest);
    return await impliedMask(reader, rule, scratch.buf);
  } catch (err) {
    if (err instanceof CoreInputError && err.code === 'no-prunable-tensors') return allocateMask([]);
    throw err;
  }
}

/**
 * Checks that the candidates can be merged into one soup; throws `mismatchError` listing every
 * difference. Reads each prunable tensor once per candidate whose mask is not known by hash, and the
 * integer/bool tensors (small: step counters) of every candidate.
 */
export async function validateCandidates(readers: readonly CheckpointReader[], opts: ValidateOptions = {}): Promise<ValidatedCandidates> {
  if (readers.length === 0) throw new CoreInputError('no-candidates', 'a soup needs at least one candidate', { candidates: 0 }, 422);
  const given = opts.maskHashes;
  if (given && given.length !== readers.length) {
    throw new Error(`validateCandidates: ${given.length} mask hashes for ${readers.length} candidates`);
  }
  const ref = readers[0].tensors;
  const mismatches: CandidateMismatch[] = [];
  for (let j = 1; j < readers.length; j++) mismatches.push(...compareLayouts(ref, readers[j].tensors, j));

  // Integer and bool tensors are copied, not averaged: they must be identical.
  const raw: [Uint8Array, Uint8Array] = [new Uint8Array(0), new Uint8Array(0)];
  const refByName = new Map(ref.map((e) => [e.name, e]));
  for (const e of ref) {
    if (FLOAT_DTYPES.has(e.dtype) || e.byteLength === 0) continue;
    let mine: Uint8Array | undefined;
    for (let j = 1; j < readers.length; j++) {
      const o = readers[j].tensors.find((t) => t.name === e.name);
      if (!o || o.dtype !== e.dtype || o.byteLength !== e.byteLength) continue;
      opts.signal?.throwIfAborted();
      if (raw[0].byteLength < e.byteLength) raw[0] = new Uint8Array(e.byteLength);
      if (raw[1].byteLength < e.byteLength) raw[1] = new Uint8Array(e.byteLength);
      mine ??= await readers[0].readRaw(e.name, raw[0]);
      const theirs = await readers[j].readRaw(e.name, raw[1]);
      const differing = countDifferentElements(mine, theirs, DTYPE_BYTES[e.dtype]);
      if (differing > 0) mismatches.push({ tensor: e.name, kind: 'values', candidate: j, expected: e.dtype, differing });
    }
  }

  const masks: (Mask | undefined)[] = new Array(readers.length);
  const hashes: (string | undefined)[] = readers.map((_, j) => given?.[j] ?? undefined);
  const scratch: { buf?: Float32Array } = {};
  const mask = async (j: number) => {
    opts.signal?.throwIfAborted();
    masks[j] ??= await maskOf(readers[j], opts.rule, scratch);
    return masks[j];
  };
  const hash = async (j: number) => {
    hashes[j] ??= maskHash(await mask(j));
    return hashes[j];
  };
  const ref0 = await hash(0);
  for (let j = 1; j < readers.length; j++) {
    if ((await hash(j)) === ref0) continue;
    const diff = diffMasks(await mask(0), await mask(j));
    if (diff.equal) {
      // A given hash was stale or made under another rule: the computed masks decide.
      hashes[0] = maskHash(masks[0]!);
      hashes[j] = hashes[0];
      continue;
    }
    for (const t of diff.tensors) {
      if (!t.differing) continue;
      mismatches.push({ tensor: t.name, kind: 'mask', candidate: j, differing: t.hamming, keptOnlyInReference: t.keptOnlyInA, keptOnlyInCandidate: t.keptOnlyInB });
    }
    // A tensor prunable in one candidate only, with no layout difference to explain it (the rule
    // selects by name, dtype and rank, so this needs a dtype/shape change already reported).
    for (const name of [...diff.missing, ...diff.extra]) {
      if (!mismatches.some((m) => m.candidate === j && m.tensor === name)) {
        mismatches.push({ tensor: name, kind: 'mask', candidate: j, differing: refByName.get(name)?.shape.reduce((a, b) => a * b, 1) });
      }
    }
  }
  if (mismatches.length > 0) {
    mismatches.sort((a, b) => a.candidate - b.candidate);
    throw mismatchError(mismatches);
  }
  return { tensors: ref, maskHash: hashes[0]!, mask: masks[0], maskHashes: hashes.map((h) => h!) };
}
