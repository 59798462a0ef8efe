import { execFileSync } from 'node:child_process';
import { cpSync, rmSync } from 'node:fs';
import path from 'node:path';

/**
 * Compiles ragworks to JavaScript in `dist/` (or the folder given): a tree
 * that runs by itself with its production dependencies installed in it —
 * `node src/main.js <role>` — as the container image does. Beside the
 * compiled code go the files the code reads at run time (the dashboard's
 * pages and the API docs page) and the package manifests `npm ci` needs.
 * `node --import tsx scripts/build.ts [folder]` (npm run build).
 */

const ROOT = path.join(__dirname, '..');

/** Files read at run time, relative to the repository and to the output alike. */
export const RUNTIME_ASSETS = ['src/http/admin/static', 'src/http/docs', 'package.json', 'package-lock.json'];

export function build(outDir: string): void {
  rmSync(outDir, { recursive: true, force: true });
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.build.json'), '--outDir', outDir], { stdio: 'inherit' });
  for (const asset of RUNTIME_ASSETS) cpSync(path.join(ROOT, asset), path.join(outDir, asset), { recursive: true });
}

if (require.main === module) build(path.resolve(process.argv[2] ?? path.join(ROOT, 'dist')));
