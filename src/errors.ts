/**
 * The one error type domain code throws. The HTTP layer turns it into
 * `{"error":{"code","message","details?"}}` with `status`.
 */
export class AppError extends Error {
  override name = 'AppError';

  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export const badRequest = (message: string, details?: unknown) => new AppError(400, 'validation_failed', message, details);
export const notFound = (what: string) => new AppError(404, 'not_found', `${what} not found.`);
export const conflict = (message: string, details?: unknown) => new AppError(409, 'conflict', message, details);
export const forbidden = (message: string) => new AppError(403, 'forbidden', message);
export const unauthenticated = (message: string) => new AppError(401, 'unauthenticated', message);
export const dependencyUnavailable = (dependency: string) =>
  new AppError(503, 'dependency_unavailable', `${dependency} is unavailable; try again shortly.`, { dependency }, { 'Retry-After': '5' });

const CONNECTION_ERROR_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
  '08000',
  '08001',
  '08003',
  '08006',
]);

/**
 * Which store, if any, an error says is out of reach. This reads only the
 * error: a statement can lose its own connection (killed backend, pool
 * timeout) while the database is fine, so whether the store is really down
 * is for the health monitor to confirm (src/health.ts `check`), as workers do
 * before re-delaying a job without spending an attempt.
 */
export function unavailableDependency(error: unknown): 'database' | 'redis' | null {
  // Duck-typed, not `instanceof Error`: errors raised by Node's own socket code can come from
  // another realm (a vm context such as jest's), where that check is false and a lost
  // database would surface as a 500.
  if (typeof error !== 'object' || error === null) return null;
  const code = (error as { code?: unknown }).code;
  const message = (error as { message?: unknown }).message;
  if (typeof message !== 'string') return null;
  if (/enableOfflineQueue|Connection is closed|Stream isn't writeable|MaxRetriesPerRequest|Reached the max retries per request/i.test(message)) {
    return 'redis';
  }
  if (
    (typeof code === 'string' && CONNECTION_ERROR_CODES.has(code)) ||
    /Knex: Timeout acquiring a connection|Connection terminated|connection.*(closed|terminated|refused)|is not queryable|the database system is (starting|shutting) up/i.test(message)
  ) {
    return /redis/i.test(message) || (error as { command?: unknown }).command ? 'redis' : 'database';
  }
  return null;
}

/** A PostgreSQL unique_violation, optionally on one constraint. */
export function isUniqueViolation(error: unknown, constraint?: string): boolean {
  const pgError = error as { code?: string; constraint?: string; message?: string };
  if (pgError?.code !== '23505') return false;
  return !constraint || pgError.constraint === constraint || Boolean(pgError.message?.includes(constraint));
}
