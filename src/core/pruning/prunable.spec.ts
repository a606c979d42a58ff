import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CoreInputError } from '../errors.js';
import type { DType, TensorEntry } from '../tensors.js';
import { compileGlob, isPrunableByDefault, MAX_PATTERN_LENGTH, MAX_PATTERNS, selectPrunable } from './prunable.js';

const t = (name: string, shape: number[], dtype: DType = 'F32'): TensorEntry => ({ name, shape, dtype, byteOffset: 0, byteLength: 0 });

describe('default prunable rule', () => {
  it('takes TensorFlow.js dense and conv kernels, never biases or batch-norm parameters', () => {
    const tensors = [
      t('conv1/kernel', [3, 3, 3, 16]),
      t('conv1/bias', [16]),
      t('bn1/gamma', [16]),
      t('bn1/beta', [16]),
      t('bn1/moving_mean', [16]),
      t('bn1/moving_variance', [16]),
      t('dense_1/kernel:0', [64, 10]),
      t('conv2_block1_1_bn/gamma', [64]),
      t('depthwise/depthwise_kernel', [3, 3, 16, 1]),
      t('embedding/embeddings', [1000, 32]),
    ];
    expect(selectPrunable(tensors).map((e) => e.name)).toEqual(['conv1/kernel', 'dense_1/kernel:0', 'depthwise/depthwise_kernel']);
  });

  it('takes PyTorch weights, never norm weights, running statistics or biases', () => {
    const tensors = [
      t('conv1.weight', [64, 3, 7, 7]),
      t('bn1.weight', [64]),
      t('bn1.bias', [64]),
      t('bn1.running_mean', [64]),
      t('bn1.running_var', [64]),
      t('bn1.num_batches_tracked', [], 'I64'),
      t('layer1.0.conv1.weight', [64, 64, 1, 1]),
      t('layer1.0.downsample.1.weight', [256]),
      t('fc.weight', [1000, 2048]),
      t('fc.bias', [1000]),
      t('encoder.layer.0.LayerNorm.weight', [768]),
      // A rank-2 tensor that is still not a kernel: the name rules catch it.
      t('blocks.0.norm1.weight', [1, 768]),
      t('blocks.0.attn.relative_position_bias_table', [169, 12]),
      t('pos_embed', [1, 197, 768]),
      t('int_table', [4, 4], 'I32'),
      t('half.weight', [8, 8], 'F16'),
    ];
    expect(selectPrunable(tensors).map((e) => e.name)).toEqual(['conv1.weight', 'layer1.0.conv1.weight', 'fc.weight', 'half.weight']);
  });

  it('recognises bn/ln tokens but not words that merely contain the letters', () => {
    expect(isPrunableByDefault(t('bn2a_branch2a/kernel', [3, 3]))).toBe(false);
    expect(isPrunableByDefault(t('ln_1/kernel', [3, 3]))).toBe(false);
    expect(isPrunableByDefault(t('unbnd/kernel', [3, 3]))).toBe(true);
    expect(isPrunableByDefault(t('lnear/kernel', [3, 3]))).toBe(true);
  });
});

describe('include / exclude globs', () => {
  const tensors = [t('conv1/kernel', [3, 3, 1, 4]), t('conv1/bias', [4]), t('block.0.fc.weight', [4, 4]), t('head/kernel', [4, 2])];

  it('include replaces the default rule (and may take rank-1 floats); exclude removes', () => {
    expect(selectPrunable(tensors, { include: ['conv1/*'] }).map((e) => e.name)).toEqual(['conv1/kernel', 'conv1/bias']);
    expect(selectPrunable(tensors, { exclude: ['head/*'] }).map((e) => e.name)).toEqual(['conv1/kernel', 'block.0.fc.weight']);
    expect(selectPrunable(tensors, { include: ['*kernel'], exclude: ['head*'] }).map((e) => e.name)).toEqual(['conv1/kernel']);
  });

  it('* crosses / and . (** is the same), ? is one character, classes and alternations work', () => {
    expect(compileGlob('block*weight').test('block.0.fc.weight')).toBe(true);
    expect(compileGlob('**/kernel').test('a/b/c/kernel')).toBe(true);
    expect(compileGlob('conv?/kernel').test('conv1/kernel')).toBe(true);
    expect(compileGlob('conv?/kernel').test('conv12/kernel')).toBe(false);
    expect(compileGlob('conv[0-2]/*').test('conv2/kernel')).toBe(true);
    expect(compileGlob('conv[!0-2]/*').test('conv2/kernel')).toBe(false);
    expect(compileGlob('{conv,head}*/kernel').test('head/kernel')).toBe(true);
    expect(compileGlob('{conv,head}*/kernel').test('dense/kernel')).toBe(false);
    // Dots are literal, the match is anchored and case-sensitive.
    expect(compileGlob('fc.weight').test('fcxweight')).toBe(false);
    expect(compileGlob('fc').test('fc.weight')).toBe(false);
    expect(compileGlob('FC.weight').test('fc.weight')).toBe(false);
    expect(compileGlob('a\\*b').test('a*b')).toBe(true);
    expect(compileGlob('a\\*b').test('axb')).toBe(false);
  });

  it('a pattern set selecting nothing is a 422 naming the patterns', () => {
    try {
      selectPrunable(tensors, { include: ['nothing*'] });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(CoreInputError);
      expect((e as CoreInputError).status).toBe(422);
      expect((e as CoreInputError).code).toBe('no-prunable-tensors');
      expect((e as CoreInputError).message).toContain('nothing*');
    }
    expect(() => selectPrunable(tensors, { exclude: ['*'] })).toThrow(/exclude \["\*"\]/);
  });

  it('rejects malformed patterns', () => {
    for (const p of ['', 'a[b', '{a,b', '{a,{b}}', 'x\\', 'a'.repeat(MAX_PATTERN_LENGTH + 1)]) expect(() => compileGlob(p), p).toThrow(CoreInputError);
    expect(() => selectPrunable(tensors, { include: Array(MAX_PATTERNS + 1).fill('*') })).toThrow(/65 patterns, more than the limit of 64/);
  });

  it('matches a many-star pattern against a long name without backtracking (it once took 33 s for 11 stars)', () => {
    // `*a` forty times then `b`: a backtracking RegExp tries ~C(200, 40) splits before failing.
    const name = 'a'.repeat(200);
    expect(compileGlob(`${'*a'.repeat(40)}*b`).test(name)).toBe(false);
    expect(compileGlob(`${'*a'.repeat(40)}*`).test(name)).toBe(true);
    expect(compileGlob('[[]x]').test('[x]')).toBe(true); // a class holding [, then x and a literal ]
    expect(compileGlob('[[]x').test('[x')).toBe(true);
  });

  it('agrees with a direct glob reading on * and ? patterns', () => {
    // Reference: the classic recursive matcher, fine for these tiny inputs.
    const ref = (p: string, s: string): boolean => {
      if (p.length === 0) return s.length === 0;
      if (p[0] === '*') return ref(p.slice(1), s) || (s.length > 0 && ref(p, s.slice(1)));
      return s.length > 0 && (p[0] === '?' || p[0] === s[0]) && ref(p.slice(1), s.slice(1));
    };
    fc.assert(
      fc.property(fc.stringMatching(/^[ab*?./]{1,8}$/), fc.stringMatching(/^[ab./]{0,10}$/), (p, s) => {
        expect(compileGlob(p).test(s)).toBe(ref(p, s));
      }),
    );
  });
});
