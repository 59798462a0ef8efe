import fc from 'fast-check';
import { chunkDocument, type ChunkingOptions } from '../../src/domain/chunking/chunker';
import { extractHtmlText } from '../../src/domain/chunking/html';
import { cpuMilliseconds, expectChunkInvariants } from '../helpers/chunks';

const SMALL: ChunkingOptions = { targetWords: 20, overlapWords: 5, minWords: 5, maxWords: 30 };
const run = (times: number) => ({ numRuns: times });

// ---------------------------------------------------------------------------
// Documents whose visible text is known

/** A piece of HTML with the words a reader sees in it, in order. */
interface Html {
  html: string;
  visible: string[];
}

const SECRET = 'SECRET';
const word = fc.stringMatching(/^[a-z]{1,7}$/);
const space = fc.constantFrom(' ', '\n', '\r\n', '\t', '   ', '\u00a0', '&nbsp;', '&#32;');
// Text that is not a word: stray `<` and `&`, references, non-characters.
// Each ends in a space so that a following word cannot extend a reference.
const oddText = fc.constantFrom('< ', '<3 ', '> ', '& ', 'AT&T ', '&unknown; ', '&# ', '&amp; ', '&lt; ', '&gt;&gt; ', '&#x1F600; ', '&#0; ', '&#x110000; ', '&#99999999; ', '&quot; ', '\ud800 ');

const text: fc.Arbitrary<Html> = fc
  .array(fc.oneof({ weight: 4, arbitrary: word.map((w) => ({ html: w, visible: [w] })) }, { weight: 1, arbitrary: oddText.map((t) => ({ html: t, visible: [] })) }), { minLength: 1, maxLength: 6 })
  .chain((pieces) => fc.array(space, { minLength: pieces.length, maxLength: pieces.length }).map((spaces) => ({
    html: pieces.map((p, i) => p.html + spaces[i]).join(''),
    visible: pieces.flatMap((p) => p.visible),
  })));

// Attribute values holding what would end or open a tag outside quotes.
const attribute = fc.constantFrom('', ' class="a > b"', " title='x \" < y >'", ' data-x=plain', ' hidden', ' alt="SECRET"', ' onclick="if (a < b) go(\'>\')"');

const ELEMENTS = ['div', 'p', 'span', 'b', 'i', 'a', 'em', 'code', 'ul', 'ol', 'li', 'table', 'tr', 'td', 'th', 'h1', 'h2', 'pre', 'section', 'blockquote', 'dd', 'dt', 'label', 'button', 'DIV', 'Span'];
const VOID = ['br', 'img', 'hr', 'input', 'wbr'];
const SKIPPED = ['script', 'style', 'title', 'noscript', 'template', 'svg', 'iframe', 'object', 'canvas'];

/** Text-only content of a skipped element, hiding the secret among markup-like text. */
const hiddenText = fc.constantFrom(`var s = "${SECRET}"; if (a < b) x = "<p>";`, `${SECRET} <b>${SECRET}</b>`, `p { content: "${SECRET}" }`, `<!-- ${SECRET} --> ${SECRET}`);

const { node } = fc.letrec<{ node: Html; nodes: Html }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    { weight: 4, arbitrary: text },
    {
      weight: 3,
      arbitrary: fc
        .record({ name: fc.constantFrom(...ELEMENTS), attrs: attribute, children: tie('nodes'), closed: fc.boolean(), selfClosing: fc.boolean() })
        .map(({ name, attrs, children, closed, selfClosing }) => ({
          html: `<${name}${attrs}${selfClosing && children.html === '' ? '/' : ''}>${children.html}${closed ? `</${name}>` : ''}`,
          visible: children.visible,
        })),
    },
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...VOID), attribute).map(([name, attrs]) => ({ html: `<${name}${attrs}>`, visible: [] })) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.constantFrom(...SKIPPED), hiddenText, fc.boolean())
        // The same element nested in itself, for those whose content is markup.
        .map(([name, hidden, nested]) => ({
          html: `<${name} x="y">${nested && !['script', 'style', 'title'].includes(name) ? `<${name}>${hidden}</${name}>${SECRET}` : hidden}</${name}>`,
          visible: [],
        })),
    },
    // textarea is raw text up to its end tag: closed, and text only.
    { weight: 1, arbitrary: text.map((t) => ({ html: `<textarea>${t.html}</textarea>`, visible: t.visible })) },
    { weight: 1, arbitrary: fc.constantFrom(`<!-- ${SECRET} <p>x</p> -->`, `<!---->`, `<!-- a > b -->`, '<!DOCTYPE html>', '<?xml version="1.0"?>', `<!${SECRET}>`).map((html) => ({ html, visible: [] })) },
    // CDATA reads as literal text.
    { weight: 1, arbitrary: word.map((w) => ({ html: `<![CDATA[${w}]]>`, visible: [w] })) },
  ),
  nodes: fc.array(tie('node'), { maxLength: 5 }).map((nodes) => ({ html: nodes.map((n) => n.html).join(''), visible: nodes.flatMap((n) => n.visible) })),
}));

const document = fc.array(node, { maxLength: 8 }).map((nodes) => ({ html: nodes.map((n) => n.html).join(''), visible: nodes.flatMap((n) => n.visible) }));

describe('extractHtmlText', () => {
  it('shows every visible word in order, nothing of scripts, styles or other hidden parts, and no tag', () => {
    fc.assert(
      fc.property(document, ({ html, visible }) => {
        const out = extractHtmlText(html);
        expect(out).not.toContain(SECRET);
        expect(out).not.toMatch(/<[a-zA-Z/!?]/);
        let at = 0;
        for (const w of visible) {
          const found = out.indexOf(w, at);
          expect(found).toBeGreaterThanOrEqual(0);
          at = found + w.length;
        }
      }),
      run(500),
    );
  });

  it('chunks the extracted text with offsets into it', () => {
    fc.assert(
      fc.property(document, fc.constantFrom(SMALL, { targetWords: 3, overlapWords: 2, minWords: 0, maxWords: 4 }), ({ html }, options) => {
        expectChunkInvariants(extractHtmlText(html), chunkDocument(html, 'html', options), options);
      }),
      run(300),
    );
  });

  it('never throws on any markup-like input, and its chunks keep the invariants', () => {
    const PIECES = [
      '<', '>', '</', '/>', '<!--', '-->', '--!>', '<![CDATA[', ']]>', '<!', '<?', '&', '&amp', '&amp;', '&#', '&#x', '&#65;', '"', "'", '=',
      '<div', '<div>', '</div>', '<p>', '<script>', '</script>', '<style>', '<pre>', '</pre>', '<br/>', '<svg>', '</svg>', '<title>', '<textarea>',
      '<xmp>', '<plaintext>', '<template>', '</template>', ' ', '\n', '\r\n', '\r', '\t', '\u00a0', '\ud800', '\udc00', '\0', 'x', 'word', '漢字', '🚀',
    ];
    const chaos = fc.array(fc.oneof(fc.constantFrom(...PIECES), fc.string({ unit: 'binary', maxLength: 4 })), { maxLength: 200 }).map((p) => p.join(''));
    fc.assert(
      fc.property(chaos, (html) => {
        expectChunkInvariants(extractHtmlText(html), chunkDocument(html, 'html', SMALL), SMALL);
      }),
      run(500),
    );
  });
});

// ---------------------------------------------------------------------------
// Bounded time on adversarial documents

const FIVE_MB = 5 * 1024 * 1024;
const fill = (unit: string, prefix = '') => prefix + unit.repeat(Math.ceil((FIVE_MB - prefix.length) / unit.length));
// htmlparser2's Parser, not used for this reason, took 100 s on 1 MB of <b>.
const BOUND_MS = 10_000;

describe('extractHtmlText and chunking in bounded time on 5 MB adversarial documents', () => {
  const cases: Array<[string, () => string]> = [
    ['one line of <', () => fill('<')],
    ['<div> nested a million deep', () => fill('<div>')],
    ['<b> nested with text', () => fill('<b>x ')],
    ['mismatched end tags under deep nesting', () => fill('<i></b>')],
    // The scanner this replaced looked for </head> or <body from each <head> to the end: 9 s for 400 KB.
    ['<head> repeated', () => fill('<head>')],
    ['&', () => fill('&')],
    ['references', () => fill('&amp;&#x1F600;&nbsp ')],
    ['an attribute value never closed', () => fill('>', '<a title="')],
    ['a tag with a million attributes', () => fill(' a=1', '<a')],
    ['comments never closed', () => fill('<!--')],
    ['CDATA', () => fill('<![CDATA[x]]>')],
    ['a script never closed', () => fill('</scrip', '<script>')],
    ['svg nested in itself', () => fill('<svg>')],
    ['pre with CRLF', () => fill('<pre>\r\n x \r\n')],
    ['table cells', () => fill('<td>x')],
  ];

  it.each(cases)('%s', (_name, make) => {
    const html = make();
    expect(html.length).toBeGreaterThanOrEqual(FIVE_MB);
    const { result: chunks, ms } = cpuMilliseconds(() => chunkDocument(html, 'html'));
    expect(ms).toBeLessThan(BOUND_MS);
    expect(chunks.every((c, i) => c.ordinal === i)).toBe(true);
  });
});
