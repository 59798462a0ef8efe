import { escapeLiteral } from 'pg';

/** The values a statement may carry written into its text. */
export type LiteralValue = string | number | boolean | null | readonly string[];

/**
 * A value as a SQL literal, for the rare statement sent as text with its
 * values in it (the simple query protocol has no parameters). Strings go
 * through node-postgres's escapeLiteral — quotes doubled, and an E'' string
 * with doubled backslashes whenever there is a backslash — which reads the
 * same whatever standard_conforming_strings says. NUL is refused: the
 * protocol ends the query text at the first one.
 */
export function sqlLiteral(value: LiteralValue): string {
  if (value === null) return 'null';
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new Error(`not a finite number: ${value}`);
    return value < 0 ? `(${value})` : String(value);
  }
  if (typeof value === 'string') {
    if (value.includes('\u0000')) throw new Error('a NUL character cannot be written into a statement');
    return escapeLiteral(value);
  }
  if (Array.isArray(value)) return value.length === 0 ? `'{}'` : `array[${value.map((item) => sqlLiteral(String(item))).join(', ')}]`;
  throw new Error(`no SQL literal for a value of type ${typeof value}`);
}

/**
 * Writes `bindings` into `sql` in place of its `?` placeholders. Every `?`
 * of `sql` must be a placeholder — its author's own text, never a value —
 * and there must be exactly one per binding.
 */
export function withLiterals(sql: string, bindings: readonly unknown[]): string {
  const parts = sql.split('?');
  if (parts.length - 1 !== bindings.length) throw new Error(`${parts.length - 1} placeholders for ${bindings.length} values`);
  return parts.reduce((text, part, index) => `${text}${sqlLiteral(bindings[index - 1] as LiteralValue)}${part}`);
}
