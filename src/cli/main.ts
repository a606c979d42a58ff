#!/usr/bin/env node
/**
 * sparsoup — the command line over the typed client (clients/typescript). Every command talks to a
 * running service (--url or SPARSOUP_URL, default http://localhost:3000; --api-key or SPARSOUP_API_KEY).
 * `--json` prints the API's JSON for scripts. API errors print the problem's detail and exit 1;
 * usage errors exit 2.
 */
import { parseArgs } from 'node:util';
import { ApiError } from '../../clients/typescript/index.js';
import { COMMANDS, type Context, OPTIONS, UsageError } from './commands.js';

const HELP = `sparsoup — prune checkpoints and make sparse model soups through a sparsoup service

usage: sparsoup <group> <command> [arguments] [options]

${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name} ${c.args}\n      ${c.summary}`)
  .join('\n')}

options for every command:
  --url <url>          the service (env SPARSOUP_URL, default http://localhost:3000)
  --api-key <key>      sent as a bearer token (env SPARSOUP_API_KEY)
  --json               print JSON (one document, or one event per line for runs watch)
  -h, --help           this text; after a command, that command's options and an example
`;

export async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true; strict: true }>>;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    process.stderr.write(`error: ${(err as Error).message}\n\n${HELP}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const name = positionals.slice(0, 2).join(' ');
  const command = COMMANDS[name];
  if (values.help && command) {
    process.stdout.write(`usage: sparsoup ${name} ${command.args}\n\n${command.summary}\n${command.help ? `\n${command.help}\n` : ''}`);
    return 0;
  }
  if (values.help || !command) {
    if (!values.help && positionals.length) process.stderr.write(`error: unknown command "${name}"\n\n`);
    (values.help ? process.stdout : process.stderr).write(HELP);
    return values.help ? 0 : 2;
  }
  const ctx: Context = {
    url: (values.url ?? process.env.SPARSOUP_URL ?? 'http://localhost:3000').replace(/\/+$/, ''),
    apiKey: values['api-key'] ?? process.env.SPARSOUP_API_KEY,
    json: Boolean(values.json),
    out: process.stdout,
    err: process.stderr,
  };
  try {
    const given = Object.keys(values).filter((k) => !['url', 'api-key', 'json', 'help'].includes(k));
    const unexpected = given.filter((k) => !command.options.includes(k));
    if (unexpected.length) throw new UsageError(`${name} does not take --${unexpected.join(', --')}`);
    return (await command.run(ctx, positionals.slice(2), values)) ?? 0;
  } catch (err) {
    return report(ctx, err, name, command.args);
  }
}

function report(ctx: Context, err: unknown, name: string, args: string): number {
  if (err instanceof UsageError) {
    ctx.err.write(`error: ${err.message}\nusage: sparsoup ${name} ${args}\n`);
    return 2;
  }
  if (err instanceof ApiError) {
    if (ctx.json) ctx.err.write(`${JSON.stringify(err.problem)}\n`);
    ctx.err.write(`error: ${err.problem.detail || err.problem.title} (HTTP ${err.status})\n`);
    const mismatches = err.problem.mismatches as { tensor?: string; kind?: string; candidate?: string; differing?: number }[] | undefined;
    if (Array.isArray(mismatches)) {
      for (const m of mismatches.slice(0, 20)) ctx.err.write(`  ${m.kind}: ${m.tensor}${m.candidate ? ` (candidate ${m.candidate})` : ''}${m.differing !== undefined ? `, ${m.differing} differing` : ''}\n`);
      if (mismatches.length > 20) ctx.err.write(`  … ${mismatches.length - 20} more\n`);
    }
    return 1;
  }
  if (err instanceof TypeError && err.message === 'fetch failed') {
    // undici hides the socket error in `cause` (or in the `errors` of an AggregateError there).
    const cause = err.cause as { code?: string; message?: string; errors?: { code?: string }[] } | undefined;
    const why = cause?.code ?? cause?.errors?.[0]?.code ?? cause?.message ?? 'no answer';
    ctx.err.write(`error: cannot reach the service at ${ctx.url} (${why}); set --url or SPARSOUP_URL\n`);
    return 1;
  }
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR' || code === 'ENOTDIR') {
    ctx.err.write(`error: ${(err as Error).message}\n`);
    return 1;
  }
  ctx.err.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
  return 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
