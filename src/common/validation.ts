import { type ValidationError, ValidationPipe } from '@nestjs/common';
import { registerDecorator, type ValidationArguments, type ValidationOptions } from 'class-validator';
import { ProblemException } from './problem.js';

export interface FieldError {
  field: string;
  errors: string[];
}

export function flattenValidationErrors(errors: ValidationError[], prefix = ''): FieldError[] {
  const out: FieldError[] = [];
  for (const e of errors) {
    const field = prefix ? `${prefix}.${e.property}` : e.property;
    if (e.constraints) out.push({ field, errors: Object.values(e.constraints) });
    if (e.children?.length) out.push(...flattenValidationErrors(e.children, field));
  }
  return out;
}

/** DTO validation: unknown fields are refused, and the problem lists each field with what is wrong. */
export function createValidationPipe(): ValidationPipe {
  return new ValidationPipe({
    transform: true,
    whitelist: true,
    forbidNonWhitelisted: true,
    transformOptions: { enableImplicitConversion: false },
    exceptionFactory: (errors) => {
      const fields = flattenValidationErrors(errors);
      return new ProblemException(400, fields.map((f) => `${f.field}: ${f.errors.join(', ')}`).join('; '), {
        slug: 'validation',
        title: 'Validation Failed',
        extensions: { errors: fields },
      });
    },
  });
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Why `value` cannot be stored as text in Postgres within `maxLength` characters, or null. */
export function textProblem(value: unknown, maxLength: number): string | null {
  if (typeof value !== 'string') return 'must be a string';
  // Postgres text cannot hold U+0000, and a lone surrogate has no UTF-8 encoding.
  if (value.includes('\u0000')) return 'must not contain the NUL character (\\u0000)';
  if (LONE_SURROGATE.test(value)) return 'must be valid Unicode (it has a lone surrogate)';
  if (value.length > maxLength) return `must be at most ${maxLength} characters long (it has ${value.length})`;
  return null;
}

/**
 * A string that can reach the database: no `\u0000`, no lone surrogate, at most `maxLength`
 * UTF-16 code units (the length Postgres varchar(n) counts in characters is never more). Use it on
 * every DTO string that is stored or queried, with the column's length.
 */
export function IsDbText(maxLength: number, options: ValidationOptions = {}): PropertyDecorator {
  return (target, propertyName) =>
    registerDecorator({
      name: 'isDbText',
      target: target.constructor,
      propertyName: propertyName as string,
      constraints: [maxLength],
      options: { message: (args: ValidationArguments) => `${args.property} ${textProblemOfAny(args.value, maxLength, options.each)}`, ...options },
      validator: { validate: (value: unknown) => textProblem(value, maxLength) === null },
    });
}

function textProblemOfAny(value: unknown, maxLength: number, each?: boolean): string {
  if (each && Array.isArray(value)) {
    const i = value.findIndex((v) => textProblem(v, maxLength) !== null);
    return `[${i}] ${textProblem(value[i], maxLength)}`;
  }
  return textProblem(value, maxLength) ?? 'is not valid text';
}

/** Tensor names are stored in jsonb columns: they must be storable text, and bounded. */
export const MAX_TENSOR_NAME_LENGTH = 1024;
export const MAX_METADATA_KEY_LENGTH = 1024;
export const MAX_METADATA_VALUE_LENGTH = 64 * 1024;

/**
 * Refuses (400 problem of type `slug`) tensor names and metadata an upload brought that the
 * database cannot store: Postgres jsonb rejects `\u0000` and lone surrogates, which JSON escapes
 * in a checkpoint header can carry. Called before any row is written.
 */
export function assertStorableCheckpointText(
  entries: readonly { name: string }[],
  metadata: Record<string, string>,
  slug: string,
): void {
  for (const e of entries) {
    const why = textProblem(e.name, MAX_TENSOR_NAME_LENGTH);
    if (why) throw new ProblemException(400, `tensor name ${JSON.stringify(e.name.slice(0, 100))} ${why}`, { slug, extensions: { tensor: e.name.slice(0, 100) } });
  }
  for (const [k, v] of Object.entries(metadata)) {
    const keyWhy = textProblem(k, MAX_METADATA_KEY_LENGTH);
    if (keyWhy) throw new ProblemException(400, `metadata key ${JSON.stringify(k.slice(0, 100))} ${keyWhy}`, { slug, extensions: { metadataKey: k.slice(0, 100) } });
    const valueWhy = textProblem(v, MAX_METADATA_VALUE_LENGTH);
    if (valueWhy) throw new ProblemException(400, `metadata value for key ${JSON.stringify(k.slice(0, 100))} ${valueWhy}`, { slug, extensions: { metadataKey: k.slice(0, 100) } });
  }
}
