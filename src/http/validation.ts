import { z } from 'zod';
import { AppError } from '../errors';

/** Parses with a zod schema or throws a 400 listing every problem by field. */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown, where: 'body' | 'query' | 'params'): z.output<S> {
  if (where === 'body' && value !== undefined) assertStorableObject(value);
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues.slice(0, 20).map((issue) => ({
    field: [where, ...issue.path.map(String)].join('.'),
    message: issue.message,
  }));
  const first = issues[0];
  throw new AppError(400, 'validation_failed', `Invalid ${where}: ${first.field} ${first.message.charAt(0).toLowerCase()}${first.message.slice(1)}.`, {
    issues,
  });
}

/**
 * Every body is a JSON object; a body that parsed as something else (a
 * string, a number, null, an array) is told what it was, not that it is
 * invalid JSON.
 */
function assertStorableObject(body: unknown): void {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    const got = body === null ? 'null' : Array.isArray(body) ? 'an array' : `a ${typeof body}`;
    throw new AppError(400, 'validation_failed', `The body must be a JSON object; got ${got}.`, {
      issues: [{ field: 'body', message: `must be a JSON object, not ${got}` }],
    });
  }
  const reserved = reservedKeyPath(body);
  if (reserved) {
    const field = ['body', ...reserved].join('.');
    throw new AppError(400, 'validation_failed', `Invalid body: ${field} uses the reserved key "${RESERVED_KEY}".`, {
      issues: [{ field, message: `"${RESERVED_KEY}" is a reserved key` }],
    });
  }
}

/**
 * JSON.parse keeps `"__proto__"` as an ordinary key, but JavaScript objects
 * do not: validation drops it without a word, and code that copies objects
 * may take it for the prototype. Refused wherever it appears in a body.
 */
const RESERVED_KEY = '__proto__';

/** The path to the first reserved key, walked without recursion: a deeply nested body cannot exhaust the stack. */
function reservedKeyPath(root: object): string[] | null {
  type Visit = { value: object; key: string; parent: Visit | null };
  const pending: Visit[] = [{ value: root, key: '', parent: null }];
  const pathOf = (visit: Visit, last: string) => {
    const path = [last];
    for (let at: Visit | null = visit; at?.parent; at = at.parent) path.unshift(at.key);
    return path;
  };
  for (let visit = pending.pop(); visit; visit = pending.pop()) {
    for (const [key, inner] of Object.entries(visit.value)) {
      if (key === RESERVED_KEY) return pathOf(visit, key);
      if (typeof inner === 'object' && inner !== null) pending.push({ value: inner, key, parent: visit });
    }
  }
  return null;
}
