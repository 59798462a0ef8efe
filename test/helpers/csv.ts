/**
 * A strict RFC 4180 reader for checking CSV that ragworks writes: records end
 * with CRLF (the last one too), a field is either bare (no comma, quote, CR or
 * LF) or quoted with inner quotes doubled. Anything else throws, so output
 * that a lenient reader would silently misread fails the test instead.
 */
export function parseCsv(text: string): string[][] {
  const records: string[][] = [];
  let i = 0;
  while (i < text.length) {
    const record: string[] = [];
    for (;;) {
      let field = '';
      if (text[i] === '"') {
        i += 1;
        for (;;) {
          if (i >= text.length) throw new Error('unterminated quoted field');
          if (text[i] === '"') {
            if (text[i + 1] === '"') {
              field += '"';
              i += 2;
              continue;
            }
            i += 1;
            break;
          }
          field += text[i];
          i += 1;
        }
      } else {
        while (i < text.length && !',\r\n'.includes(text[i])) {
          if (text[i] === '"') throw new Error(`quote inside a bare field at offset ${i}`);
          field += text[i];
          i += 1;
        }
      }
      record.push(field);
      if (text[i] === ',') {
        i += 1;
        continue;
      }
      if (text.startsWith('\r\n', i)) {
        i += 2;
        break;
      }
      if (i >= text.length) throw new Error('the last record does not end with CRLF');
      throw new Error(`unexpected ${JSON.stringify(text[i])} after a field at offset ${i}`);
    }
    records.push(record);
  }
  return records;
}
