import fc from 'fast-check';
import { collapseWhitespace, isSpace } from '../../src/domain/chunking/whitespace';

const WHITESPACE = [' ', '\t', '\n', '\r', '\v', '\f', '\u00a0', '\u1680', '\u2000', '\u200a', '\u2028', '\u2029', '\u202f', '\u205f', '\u3000', '\ufeff'];

describe('whitespace', () => {
  it('isSpace agrees with \\s on every UTF-16 code unit', () => {
    for (let c = 0; c <= 0xffff; c++) {
      expect([c, isSpace(c)]).toEqual([c, /\s/.test(String.fromCharCode(c))]);
    }
  });

  it('collapseWhitespace reads exactly like replace(/\\s+/g, " ")', () => {
    const piece = fc.oneof(fc.constantFrom(...WHITESPACE), fc.string({ maxLength: 4 }), fc.string({ unit: 'binary', maxLength: 3 }));
    fc.assert(fc.property(fc.array(piece, { maxLength: 30 }), (pieces) => {
      const text = pieces.join('');
      expect(collapseWhitespace(text)).toBe(text.replace(/\s+/g, ' '));
    }), { numRuns: 2000 });
  });

  it('collapses a 5 MB run of spaces without a regex (a /\\s+/ over it has thrown RangeError under load)', () => {
    expect(collapseWhitespace(`a${' '.repeat(5_000_000)}b`)).toBe('a b');
    expect(collapseWhitespace(`${'\u3000 '.repeat(1_000_000)}`)).toBe(' ');
  });
});
