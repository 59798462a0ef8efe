/**
 * The one CSV writer: every export (search events, billing) goes through it.
 * Records are RFC 4180, ending in CRLF, with every field quoted and inner
 * quotes doubled, so no value can end a field or a record early.
 */

/**
 * A spreadsheet runs a cell that starts with one of these as a formula
 * (`=HYPERLINK(…)`, `@SUM(…)`), even when the field was quoted: text from
 * users that does is prefixed with `'`, which spreadsheets show as text
 * (OWASP, "CSV Injection").
 */
const FORMULA_START = /^[=+\-@\t\r]/;

/**
 * One field. Values ragworks formats itself (numbers, booleans, dates in
 * ISO 8601 UTC) are written as they are, so a negative figure stays a
 * number; only text is neutralised.
 */
export function csvField(value: unknown): string {
  if (value === null || value === undefined) return '""';
  const text = value instanceof Date ? value.toISOString() : String(value);
  const safe = typeof value === 'string' && FORMULA_START.test(text) ? `'${text}` : text;
  return `"${safe.replace(/"/g, '""')}"`;
}

/** One record, CRLF included. */
export function csvRecord(values: readonly unknown[]): string {
  return `${values.map(csvField).join(',')}\r\n`;
}
