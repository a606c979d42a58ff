// Sums vitest JSON reports and prints the closing `N passed, N failed` line. A failed CI step that is
// not a test (lint, drift, stale spec) counts as one failure, so the line never hides it.
import { existsSync, readFileSync } from 'node:fs';
import { basename, relative } from 'node:path';

const firstLine = (message) => String(message).split('\n')[0].slice(0, 300);
const args = process.argv.slice(2);
const stepStatus = Number(args.pop());
let passed = 0;
let failed = 0;
let skipped = 0;
for (const file of args) {
  if (!existsSync(file)) {
    console.log(`no report at ${file}: counting the run as failed`);
    failed++;
    continue;
  }
  const r = JSON.parse(readFileSync(file, 'utf8'));
  passed += r.numPassedTests;
  failed += r.numFailedTests;
  skipped += r.numPendingTests + (r.numTodoTests ?? 0);
  if (!r.success && r.numFailedTests === 0) failed++;
  // Name every failed test here, next to the closing line: a CI log is often read from its tail.
  const named = (what, message) => console.log(`FAILED (${basename(file, '.json')}) ${what}${message ? `: ${firstLine(message)}` : ''}`);
  for (const suite of r.testResults ?? []) {
    const tests = suite.assertionResults ?? [];
    for (const t of tests) if (t.status === 'failed') named(`${relative(process.cwd(), suite.name ?? '')} > ${t.fullName ?? t.title}`, t.failureMessages?.[0]);
    if (suite.status === 'failed' && tests.length === 0) named(relative(process.cwd(), suite.name ?? ''), suite.message);
  }
}
const stepFailures = stepStatus !== 0 && failed === 0 ? 1 : 0;
console.log(`${passed} passed, ${failed + stepFailures} failed, ${skipped} skipped`);
process.exit(failed + stepFailures > 0 ? 1 : 0);
