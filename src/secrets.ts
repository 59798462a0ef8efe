/**
 * What counts as a secret, in one place: the names under which a value is
 * never shown — in job data and dead letters (redact), in log lines (the
 * logger's paths) and in configuration errors — and the password of a URL
 * shown in a log line.
 */

/** A field, header or setting whose name says it holds a credential. */
export const SECRET_NAME = /secret|token|password|api[_-]?key|authorization|cookie|(^|_)key$/i;

/** The object fields the logger blanks wherever they appear (pino needs names, not a pattern); each matches SECRET_NAME. */
export const SECRET_FIELDS = ['apiKey', 'api_key', 'key', 'secret', 'token', 'password'] as const;

/** Settings whose values may carry a credential without being named for one: URLs (user:password@) and Sentinel lists. */
export function mayHoldCredentials(setting: string): boolean {
  return SECRET_NAME.test(setting) || /_URL$|SENTINELS$/.test(setting);
}

export const REDACTED = '[redacted]';

/** The value with every field named like a secret replaced by REDACTED, at any depth. */
export function redact(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redact);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([key, inner]) => [key, SECRET_NAME.test(key) ? REDACTED : redact(inner)]));
  }
  return value;
}

/** True when `redact` hid something in this value: it is no longer the data it was made from. */
export function lostToRedaction(value: unknown): boolean {
  if (Array.isArray(value)) return value.some(lostToRedaction);
  if (value && typeof value === 'object') {
    return Object.entries(value).some(([key, inner]) => (SECRET_NAME.test(key) && inner === REDACTED) || lostToRedaction(inner));
  }
  return false;
}

/** A URL to show in a log line or an error: its password, if any, replaced. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparseable URL)';
  }
}
