import { readdirSync } from 'node:fs';
import { join } from 'node:path';

/** Every file under the artifact store (objects and temporaries): "no file left behind" checks. */
export function artifactFiles(dataDir: string): string[] {
  const root = join(dataDir, 'artifacts');
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(dir, e.name));
      else if (!e.name.startsWith('.health-')) out.push(join(dir, e.name).slice(root.length + 1));
    }
  };
  try {
    walk(root);
  } catch {}
  return out.sort();
}
