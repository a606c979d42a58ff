import { RE2JS } from 're2js';
import { CoreInputError } from '../errors.js';
import { FLOAT_DTYPES, type TensorEntry } from '../tensors.js';

/**
 * Which tensors are prunable: the one rule used by pruning, implied masks, sparse export and soups.
 *
 * Default: a float tensor (F32/F16/BF16/F64) of rank ≥ 2 — the kernels of dense and convolution
 * layers — unless its name says it is a bias, a normalization parameter or statistic, or an
 * embedding. The name is split into segments at `/`, `.` and `:` (TensorFlow.js `bn1/gamma`,
 * `conv1/kernel:0`; PyTorch `layer1.0.bn1.weight`, `fc.bias`) and the tensor is excluded when
 *   - the last segment is bias, beta, gamma, moving_mean, moving_variance, running_mean,
 *     running_var or num_batches_tracked, or contains "bias" (relative_position_bias_table);
 *   - any segment contains "norm" (batchnorm, LayerNorm, norm1, batch_normalization), or is a
 *     `bn`/`ln`/`gn` token: `bn`, `bn1`, `bn2a_branch2a`, `conv1_bn`, `ln_1` (a `bn`, `ln` or `gn`
 *     between start/`_` and end/`_`/digit);
 *   - any segment contains "embed" (embedding tables are not dense kernels; include them
 *     explicitly to prune them).
 * Rank < 2 tensors (all biases and PyTorch norm weights) are excluded by the rank test alone.
 *
 * Overrides, as glob patterns matched against the whole tensor name (case-sensitive):
 *   - `include`: when given, the candidates are the float tensors (any rank) matching at least one
 *     include pattern, replacing the default rule;
 *   - `exclude`: tensors matching any exclude pattern are removed (after include or the default).
 * Non-float tensors are never prunable. Glob syntax: `*` matches any run of characters, including
 * `/` and `.` (names are flat strings whose separator depends on the framework; `**` means the
 * same); `?` matches one character; `[abc]`, `[a-z]`, `[!abc]` are character classes;
 * `{conv,fc}` is an alternation (no nesting); `\` escapes the next character. Every other
 * character matches itself.
 */
export interface PrunableRule {
  include?: readonly string[];
  exclude?: readonly string[];
}

const NEVER_LAST = new Set(['bias', 'beta', 'gamma', 'moving_mean', 'moving_variance', 'running_mean', 'running_var', 'num_batches_tracked']);
const NORM_TOKEN = /(^|_)(bn|ln|gn)(\d|_|$)/i;

/** The default rule for one tensor (see PrunableRule). */
export function isPrunableByDefault(entry: Pick<TensorEntry, 'name' | 'dtype' | 'shape'>): boolean {
  if (!FLOAT_DTYPES.has(entry.dtype) || entry.shape.length < 2) return false;
  const segments = entry.name.split(/[/.:]/).filter((s) => s.length > 0 && !/^\d+$/.test(s));
  if (segments.length === 0) return true;
  const last = segments[segments.length - 1].toLowerCase();
  if (NEVER_LAST.has(last) || last.includes('bias')) return false;
  for (const s of segments) {
    const l = s.toLowerCase();
    if (l.includes('norm') || l.includes('embed') || NORM_TOKEN.test(s)) return false;
  }
  return true;
}

/** Longest glob accepted: tensor names run to a few hundred characters at most. */
export const MAX_PATTERN_LENGTH = 256;
/** Most include (or exclude) patterns in one rule. */
export const MAX_PATTERNS = 64;

export interface GlobMatcher {
  /** Whether the whole of `name` matches. */
  test(name: string): boolean;
}

/**
 * Compiles one glob (syntax in PrunableRule) to a matcher. Bad syntax is a CoreInputError.
 *
 * Matching runs on RE2JS (the JavaScript port of RE2), not on a JavaScript RegExp: a glob of many
 * stars becomes `.*a.*a.*…`, which a backtracking engine (V8's, and so picomatch, micromatch and
 * minimatch, which all compile to RegExp) takes exponential time to reject; RE2 simulates the
 * automaton and takes time linear in the name for a given pattern.
 */
export function compileGlob(pattern: string): GlobMatcher {
  const bad = (why: string) => new CoreInputError('invalid-pattern', `bad tensor name pattern ${JSON.stringify(pattern)}: ${why}`, { pattern }, 422);
  if (pattern.length === 0) throw bad('empty');
  if (pattern.length > MAX_PATTERN_LENGTH) throw bad(`longer than ${MAX_PATTERN_LENGTH} characters`);
  let re = '';
  let inAlt = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '\\') {
      if (i + 1 >= pattern.length) throw bad('trailing backslash');
      re += escapeRe(pattern[++i]);
    } else if (c === '*') {
      while (pattern[i + 1] === '*') i++;
      re += '.*';
    } else if (c === '?') {
      re += '.';
    } else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) throw bad('unclosed [');
      let body = pattern.slice(i + 1, end);
      const negate = body.startsWith('!');
      if (negate) body = body.slice(1);
      if (body.length === 0) throw bad('empty character class');
      re += `[${negate ? '^' : ''}${body.replace(/[\\\]^[]/g, (m) => `\\${m}`)}]`;
      i = end;
    } else if (c === '{') {
      if (inAlt) throw bad('nested {');
      inAlt = true;
      re += '(?:';
    } else if (c === '}' && inAlt) {
      inAlt = false;
      re += ')';
    } else if (c === ',' && inAlt) {
      re += '|';
    } else {
      re += escapeRe(c);
    }
  }
  if (inAlt) throw bad('unclosed {');
  let compiled: RE2JS;
  try {
    compiled = RE2JS.compile(re, RE2JS.DOTALL);
  } catch {
    throw bad('invalid character class');
  }
  return { test: (name) => compiled.matches(name) };
}

function escapeRe(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
}

/** A compiled rule: `test(entry)` says whether that tensor is prunable. */
export function compileRule(rule: PrunableRule = {}): (entry: Pick<TensorEntry, 'name' | 'dtype' | 'shape'>) => boolean {
  for (const [which, list] of [['include', rule.include], ['exclude', rule.exclude]] as const) {
    if (list && list.length > MAX_PATTERNS) {
      throw new CoreInputError('invalid-pattern', `${which} has ${list.length} patterns, more than the limit of ${MAX_PATTERNS}`, { [which]: list.length }, 422);
    }
  }
  const include = rule.include?.map(compileGlob);
  const exclude = (rule.exclude ?? []).map(compileGlob);
  return (e) => {
    if (!FLOAT_DTYPES.has(e.dtype)) return false;
    const candidate = include ? include.some((r) => r.test(e.name)) : isPrunableByDefault(e);
    return candidate && !exclude.some((r) => r.test(e.name));
  };
}

/** Whether one tensor is prunable under `rule` (the default rule when absent). */
export function isPrunable(entry: Pick<TensorEntry, 'name' | 'dtype' | 'shape'>, rule?: PrunableRule): boolean {
  return rule ? compileRule(rule)(entry) : isPrunableByDefault(entry);
}

/**
 * The prunable tensors of a checkpoint, in checkpoint order. A selection with no tensor is a
 * CoreInputError (422, `no-prunable-tensors`) that names the patterns.
 */
export function selectPrunable(tensors: readonly TensorEntry[], rule: PrunableRule = {}): TensorEntry[] {
  const test = compileRule(rule);
  const picked = tensors.filter(test);
  if (picked.length === 0) {
    const patterns = [
      rule.include ? `include ${JSON.stringify(rule.include)}` : 'the default rule (float tensors of rank ≥ 2, not bias/norm/embedding)',
      rule.exclude?.length ? `exclude ${JSON.stringify(rule.exclude)}` : '',
    ].filter(Boolean);
    throw new CoreInputError(
      'no-prunable-tensors',
      `no prunable tensor selected by ${patterns.join(' and ')} among ${tensors.length} tensor(s)`,
      { include: rule.include ?? null, exclude: rule.exclude ?? null, tensors: tensors.length },
      422,
    );
  }
  return picked;
}
