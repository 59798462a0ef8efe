import { z } from 'zod';
import { AppError } from '../errors';

/** Parses with a zod schema or throws a 400 listing every problem by field. */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown, where: 'body' | 'query' | 'params'): z.output<S> {
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
