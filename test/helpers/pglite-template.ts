import { cpSync, existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** The installed PGlite's version: a template from another version would not open. */
const PGLITE_VERSION: string = JSON.parse(
  readFileSync(path.join(require.resolve('@electric-sql/pglite').split(`${path.sep}dist${path.sep}`)[0], 'package.json'), 'utf8'),
).version;
const TEMPLATE_DIR = path.join(os.tmpdir(), `ragworks-pglite-template-${PGLITE_VERSION}`);

/**
 * Fills `dataDir/pglite` with a copy of an initialised empty PGlite cluster.
 * initdb takes seconds (tens under load); a copy takes a fraction of one.
 * The template holds no ragworks schema: migrations still run as in production.
 */
export async function seedPgliteDataDir(dataDir: string): Promise<void> {
  if (!existsSync(TEMPLATE_DIR)) await buildTemplate();
  cpSync(TEMPLATE_DIR, path.join(dataDir, 'pglite'), { recursive: true });
}

async function buildTemplate(): Promise<void> {
  const { PGlite } = await import('@electric-sql/pglite');
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'ragworks-pglite-build-'));
  const instance = await PGlite.create({ dataDir: scratch });
  await instance.close();
  try {
    // Another test worker may have won the race; its template is as good.
    renameSync(scratch, TEMPLATE_DIR);
  } catch {
    rmSync(scratch, { recursive: true, force: true });
  }
}
