import fs from 'node:fs';
import path from 'node:path';
import type { Config } from './config';
import type { Logger } from './logger';

/**
 * Outside production an unset ADMIN_TOKEN is generated once, kept in
 * DATA_DIR/admin-token (readable by the owner only) and printed once, so a
 * restart keeps the same operator credentials.
 */
export function resolveAdminToken(config: Config, logger: Logger): Config {
  if (!config.adminTokenGenerated) return config;
  const file = path.join(config.DATA_DIR, 'admin-token');
  if (fs.existsSync(file)) {
    const saved = fs.readFileSync(file, 'utf8').trim();
    logger.info({ file }, 'ADMIN_TOKEN is not set; using the operator token saved earlier');
    return { ...config, ADMIN_TOKEN: saved };
  }
  fs.mkdirSync(config.DATA_DIR, { recursive: true });
  fs.writeFileSync(file, `${config.ADMIN_TOKEN}\n`, { mode: 0o600 });
  logger.warn({ file }, `ADMIN_TOKEN is not set; generated one (shown only now, saved in ${file}): ${config.ADMIN_TOKEN}`);
  return config;
}
