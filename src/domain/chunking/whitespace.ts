/**
 * Whitespace as `\s` defines it, scanned by hand: a regex such as `/\s+/g`
 * backtracks through a stack that a few megabytes of spaces overflow
 * (`RangeError: Maximum call stack size exceeded`), and documents are that
 * large.
 */

/** Exactly the characters `\s` matches. */
export function isSpace(c: number): boolean {
  if (c <= 32) return c === 32 || (c >= 9 && c <= 13);
  if (c < 0xa0) return false;
  return (
    c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 ||
    c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff
  );
}

/** `text.replace(/\s+/g, ' ')`, in one linear pass on any input. */
export function collapseWhitespace(text: string): string {
  const parts: string[] = [];
  const len = text.length;
  let i = 0;
  while (i < len) {
    const start = i;
    while (i < len && !isSpace(text.charCodeAt(i))) i++;
    if (i > start) parts.push(text.slice(start, i));
    if (i >= len) break;
    while (i < len && isSpace(text.charCodeAt(i))) i++;
    parts.push(' ');
  }
  return parts.join('');
}
