import { normaliseQuery } from '../../src/domain/analytics/stream';
import { csvField, csvRecord } from '../../src/http/csv';
import { parseCsv } from '../helpers/csv';

/** The pure parts of search analytics: CSV quoting for exports and query normalisation for rollups. */

describe('csvField', () => {
  it('quotes every field, plain text too', () => {
    expect(csvField('barn owls')).toBe('"barn owls"');
    expect(csvField('  spaced  ')).toBe('"  spaced  "');
    expect(csvField('ünïcödé — 日本語')).toBe('"ünïcödé — 日本語"');
    expect(csvField('')).toBe('""');
  });

  it('writes null and undefined as an empty field', () => {
    expect(csvField(null)).toBe('""');
    expect(csvField(undefined)).toBe('""');
  });

  it('writes numbers, booleans and dates as they are, negative numbers included, dates in ISO 8601 UTC', () => {
    expect(csvField(12.5)).toBe('"12.5"');
    expect(csvField(0)).toBe('"0"');
    expect(csvField(-3)).toBe('"-3"');
    expect(csvField(true)).toBe('"true"');
    expect(csvField(false)).toBe('"false"');
    expect(csvField(new Date('2026-03-01T12:34:56.789Z'))).toBe('"2026-03-01T12:34:56.789Z"');
  });

  it('doubles quotes and keeps commas, CRs and LFs inside the quotes', () => {
    expect(csvField('a,b')).toBe('"a,b"');
    expect(csvField('say "hi"')).toBe('"say ""hi"""');
    expect(csvField('"')).toBe('""""');
    expect(csvField('line one\nline two')).toBe('"line one\nline two"');
    expect(csvField('carriage\rreturn')).toBe('"carriage\rreturn"');
    expect(csvField('crlf\r\n')).toBe('"crlf\r\n"');
  });

  it('neutralises text a spreadsheet would run as a formula with a leading quote (OWASP)', () => {
    expect(csvField('=HYPERLINK("http://x","y")')).toBe('"\'=HYPERLINK(""http://x"",""y"")"');
    expect(csvField('@SUM(1)')).toBe('"\'@SUM(1)"');
    expect(csvField('+1')).toBe('"\'+1"');
    expect(csvField('-1+2')).toBe('"\'-1+2"');
    expect(csvField('\tcmd')).toBe('"\'\tcmd"');
    expect(csvField('\rcmd')).toBe('"\'\rcmd"');
    // Only the first character matters.
    expect(csvField('a=b')).toBe('"a=b"');
  });

  it('round-trips awkward values through an RFC 4180 reader', () => {
    const values = ['a,b', 'say "hi", twice', '"', '""', '\n', 'a\r\n', ',', 'x\r\ny,"z"', ' lead', 'trail ', '', 'plain'];
    expect(parseCsv(csvRecord(values))).toEqual([values]);
  });
});

describe('normaliseQuery', () => {
  it('lower-cases, trims and collapses runs of white space to one space', () => {
    expect(normaliseQuery('Redis  Persistence')).toBe('redis persistence');
    expect(normaliseQuery('  Barn\tOWLS \n at\r\nnight  ')).toBe('barn owls at night');
    expect(normaliseQuery('redis persistence')).toBe('redis persistence');
  });

  it('makes compatibility-equivalent spellings one query (NFKC)', () => {
    // Composed and decomposed accents, a ligature, full-width letters, a no-break space.
    expect(normaliseQuery('caf\u00e9')).toBe(normaliseQuery('cafe\u0301'));
    expect(normaliseQuery('\ufb01le')).toBe('file');
    expect(normaliseQuery('\uff32\uff45\uff44\uff49\uff53')).toBe('redis');
    expect(normaliseQuery('barn\u00a0owls')).toBe('barn owls');
  });

  it('is idempotent', () => {
    for (const query of ['Redis  Persistence', 'CAFE\u0301 \u00a0 Straße', '\u0130stanbul', '\ufb01LE  \uff32']) {
      expect(normaliseQuery(normaliseQuery(query))).toBe(normaliseQuery(query));
    }
  });

  it('keeps punctuation and quotes, which are part of what was searched', () => {
    expect(normaliseQuery('"Owls", hawks & eagles?')).toBe('"owls", hawks & eagles?');
  });
});
