import fc from 'fast-check';
import { chunkDocument, type Chunk, type ChunkingOptions, type ContentType } from '../../src/domain/chunking/chunker';
import { countWords, cpuMilliseconds, expectChunkInvariants, wordSpans } from '../helpers/chunks';

const SMALL: ChunkingOptions = { targetWords: 20, overlapWords: 5, minWords: 5, maxWords: 30 };

/** Small sizes, so that every document is split; any valid combination. */
const chunkingOptions: fc.Arbitrary<ChunkingOptions> = fc.oneof(
  fc.constant(SMALL),
  fc.integer({ min: 1, max: 40 }).chain((targetWords) =>
    fc.record({
      targetWords: fc.constant(targetWords),
      overlapWords: fc.integer({ min: 0, max: targetWords - 1 }),
      minWords: fc.integer({ min: 0, max: targetWords }),
      maxWords: fc.integer({ min: targetWords, max: 2 * targetWords + 5 }),
    }),
  ),
);

const run = (times: number) => ({ numRuns: times });

const plainWord = fc.stringMatching(/^[a-z]{1,7}$/);

// ---------------------------------------------------------------------------
// Any input

// What means something to a markdown reader or a word counter, lone surrogates
// and whitespace that \s does (NBSP, ideographic space, line separator) and
// does not (zero-width space) match included.
const PIECES = [
  '#', '# ', '## ', '###### ', '####### ', ' #', ' ##', '#a', ' ', '   ', '    ', '\t', '\n', '\n\n', '\r\n', '\r',
  '`', '```', '````', '~~~', '~~~~', '=', '===', '-', '---', '***', '>', '> ', '- ', '* ', '1. ', '<', '<div>',
  '&amp;', '\\', '[a]: /u', 'word', 'wörd', '漢字', '🚀', 'end.', '\ud800', '\udfff', '\u00a0', '\u3000', '\u2028',
  '\u200b', '\0',
];
const RUN_OF = [' ', '#', '`', '~', '-', '=', '>', '<', '\n', '\r\n', 'a ', '> ', '- ', '  - ', '# '];

const anyPiece = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...PIECES) },
  { weight: 3, arbitrary: fc.stringMatching(/^[a-z]{1,8}$/) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 6 }) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...RUN_OF), fc.integer({ min: 20, max: 3000 })).map(([s, n]) => s.repeat(n)) },
);
const anyDocument = fc.array(anyPiece, { maxLength: 150 }).map((pieces) => pieces.join(''));

describe('chunkDocument on any input', () => {
  it.each<ContentType>(['markdown', 'text', 'code'])('%s: chunks are exact slices, in order, within maxWords, and hold every word', (type) => {
    fc.assert(
      fc.property(anyDocument, chunkingOptions, (doc, options) => {
        expectChunkInvariants(doc, chunkDocument(doc, type, options), options);
      }),
      run(300),
    );
  });

  it.each<ContentType>(['markdown', 'text', 'code'])('%s of paragraphs and lines: the same, whatever the overlap', (type) => {
    const paragraph = fc.array(plainWord, { minLength: 1, maxLength: 40 }).map((words) => words.join(' '));
    const text = fc.array(fc.tuple(paragraph, fc.constantFrom('\n', '\n\n', '\r\n\r\n', '\n  ')), { maxLength: 12 }).map((ps) => ps.flat().join(''));
    fc.assert(
      fc.property(text, chunkingOptions, (doc, options) => {
        expectChunkInvariants(doc, chunkDocument(doc, type, options), options);
      }),
      run(300),
    );
  });

  it('markdown: every heading path is made of text from the document', () => {
    const collapse = (s: string) => s.replace(/\s+/g, ' ');
    fc.assert(
      fc.property(anyDocument, chunkingOptions, (doc, options) => {
        const flat = collapse(doc);
        for (const chunk of chunkDocument(doc, 'markdown', options)) {
          if (chunk.heading === null) continue;
          for (const title of chunk.heading.split(' > ')) {
            expect(title).toBe(title.trim());
            expect(title.length).toBeGreaterThan(0);
            expect(flat).toContain(title);
          }
        }
      }),
      run(300),
    );
  });
});

// ---------------------------------------------------------------------------
// Markdown whose structure is known

interface FenceSpec {
  kind: 'fence';
  char: '`' | '~';
  length: number;
  indent: string;
  info: string;
  lines: string[];
  closing: string;
}
interface ProseSpec {
  kind: 'prose';
  lines: string[];
}
type BlockSpec = FenceSpec | ProseSpec;

interface SectionSpec {
  level: number;
  /** Words of the title; none for an empty heading. */
  title: string[];
  render: (title: string[], level: number, eol: string) => string;
  body: BlockSpec[];
}

// Words that are not plain: markers mid-line, inline code, markup, long runs.
const oddWord = fc.constantFrom('#', '##', '`', '```', '~~~', '<', '<div>', '>', '&amp;', 'a#b', 'C#', '🚀', '漢字', '\ud800', 'x\u00a0y', 'end.', '"q."', '\u200b');
const separator = fc.constantFrom(' ', ' ', ' ', '  ', '\t', ' '.repeat(400));

/** A line that opens nothing: it starts with a plain word. */
const proseLine = fc
  .tuple(plainWord, fc.array(fc.tuple(separator, fc.oneof(plainWord, oddWord)), { maxLength: 12 }))
  .map(([first, rest]) => first + rest.map(([sep, word]) => sep + word).join(''));

const prose: fc.Arbitrary<ProseSpec> = fc.array(proseLine, { minLength: 1, maxLength: 4 }).map((lines) => ({ kind: 'prose', lines }));

const fence: fc.Arbitrary<FenceSpec> = fc
  .record({ char: fc.constantFrom<'`' | '~'>('`', '~'), length: fc.integer({ min: 3, max: 5 }) })
  .chain(({ char, length }) => {
    const other = char === '`' ? '~' : '`';
    // Markers that cannot close this fence: the other kind, or a shorter run of its own.
    const innerMarker = fc.constantFrom(other.repeat(3), other.repeat(length + 2), ...(length > 3 ? [char.repeat(length - 1)] : []));
    const codeWord = fc.oneof(fc.constantFrom('x', '=', '1;', '{', '}', '#', '# not a heading', '>', '<', '- item', '===', '---'), plainWord, innerMarker);
    const codeLine = fc
      .tuple(fc.constantFrom('', '  ', '    ', '\t', '        '), fc.array(codeWord, { maxLength: 10 }))
      .map(([indent, words]) => indent + words.join(' '));
    return fc.record({
      kind: fc.constant<'fence'>('fence'),
      char: fc.constant(char),
      length: fc.constant(length),
      indent: fc.constantFrom('', ' ', '   '),
      // A backtick fence's info string may not hold backticks.
      info: char === '`' ? fc.constantFrom('', 'js', 'python title="a > b"') : fc.constantFrom('', 'sh', 'a`b'),
      lines: fc.array(codeLine, { maxLength: 10 }),
      closing: fc.tuple(fc.constantFrom('', ' ', '   '), fc.integer({ min: 0, max: 2 }), fc.constantFrom('', '  ')).map(
        ([indent, extra, trailing]) => indent + char.repeat(length + extra) + trailing,
      ),
    });
  });

const atx = fc
  .record({ indent: fc.constantFrom('', ' ', '   '), gap: fc.constantFrom(' ', '\t', '   '), closing: fc.constantFrom('', ' #', ' ####', '  ##  ', ' '.repeat(300)) })
  .map(({ indent, gap, closing }) => (title: string[], level: number) =>
    title.length === 0 ? `${indent}${'#'.repeat(level)}${closing}` : `${indent}${'#'.repeat(level)}${gap}${title.join(gap)}${closing}`,
  );

const setext = fc
  .record({ length: fc.integer({ min: 1, max: 12 }), indent: fc.constantFrom('', '  '), twoLines: fc.boolean() })
  .map(({ length, indent, twoLines }) => (title: string[], level: number, eol: string) => {
    const split = twoLines && title.length > 1 ? 1 : title.length;
    const lines = [title.slice(0, split).join(' '), ...(split < title.length ? [title.slice(split).join(' ')] : [])];
    return `${lines.join(eol)}${eol}${indent}${(level === 1 ? '=' : '-').repeat(length)}`;
  });

// Not `-`, `=` or `>`: on the second line of a setext title those would start an underline or a quote.
const titleWord = fc.oneof(plainWord, fc.constantFrom('C#', 'a#b', '`x`', '<b>', 'naïve', '🚀', 'a>b', 'x-y'));

const section: fc.Arbitrary<Omit<SectionSpec, 'title'> & { extra: string[]; empty: boolean }> = fc
  .record({
    level: fc.integer({ min: 1, max: 6 }),
    extra: fc.array(titleWord, { maxLength: 3 }),
    empty: fc.integer({ min: 0, max: 4 }).map((n) => n === 0),
    useSetext: fc.boolean(),
    atx,
    setext,
    body: fc.array(fc.oneof({ weight: 3, arbitrary: prose }, { weight: 2, arbitrary: fence }), { maxLength: 4 }),
  })
  .map(({ level, extra, empty, useSetext, atx: renderAtx, setext: renderSetext, body }) => ({
    level,
    extra,
    empty,
    render: useSetext && level <= 2 && !empty ? renderSetext : renderAtx,
    body,
  }));

interface BuiltDocument {
  doc: string;
  eol: string;
  sections: Array<{ headingStart: number; bodyStart: number; path: string[] }>;
  fences: Array<{ start: number; end: number; lines: string[] }>;
}

const structuredDocument: fc.Arbitrary<BuiltDocument> = fc
  .record({
    eol: fc.constantFrom('\n', '\r\n', '\r'),
    preamble: fc.array(prose, { maxLength: 2 }),
    sections: fc.array(section, { maxLength: 8 }),
    unclosedLastFence: fc.boolean(),
  })
  .map(({ eol, preamble, sections, unclosedLastFence }) => {
    const built: BuiltDocument = { doc: '', eol, sections: [], fences: [] };
    const blank = eol + eol;
    const parts: string[] = [];
    let at = 0;
    const add = (text: string) => {
      if (parts.length > 0) {
        parts.push(blank);
        at += blank.length;
      }
      parts.push(text);
      at += text.length;
    };
    const addBlock = (block: BlockSpec, last: boolean) => {
      if (block.kind === 'prose') {
        add(block.lines.join(eol));
        return;
      }
      const open = `${block.indent}${block.char.repeat(block.length)}${block.info}`;
      const closed = !(last && unclosedLastFence);
      const lines = [open, ...block.lines, ...(closed ? [block.closing] : [])];
      const start = at + (parts.length > 0 ? blank.length : 0);
      add(lines.join(eol));
      built.fences.push({ start, end: closed ? at : Number.POSITIVE_INFINITY, lines });
    };
    preamble.forEach((block) => addBlock(block, false));
    const stack: Array<{ level: number; title: string }> = [];
    sections.forEach((spec, i) => {
      const title = spec.empty ? [] : [`t${i}`, ...spec.extra];
      while (stack.length > 0 && stack[stack.length - 1]!.level >= spec.level) stack.pop();
      stack.push({ level: spec.level, title: title.join(' ') });
      const headingStart = at + (parts.length > 0 ? blank.length : 0);
      add(spec.render(title, spec.level, eol));
      built.sections.push({ headingStart, bodyStart: at, path: stack.map((s) => s.title) });
      spec.body.forEach((block, j) => addBlock(block, i === sections.length - 1 && j === spec.body.length - 1));
    });
    built.doc = parts.join('') + eol;
    for (const f of built.fences) f.end = Math.min(f.end, built.doc.length);
    return built;
  });

function commonPrefix(paths: string[][]): string[] {
  return paths.reduce((a, b) => {
    let i = 0;
    while (i < a.length && i < b.length && a[i] === b[i]) i++;
    return a.slice(0, i);
  });
}

/** The heading a chunk must carry: the common parent of the sections whose body text it holds (null when it holds body text of none). */
function expectedHeading(built: BuiltDocument, chunk: Chunk): string | null | undefined {
  const paths: string[][] = [];
  for (const [start] of wordSpans(chunk.content)) {
    const at = chunk.charStart + start;
    let owner: BuiltDocument['sections'][number] | undefined;
    for (const s of built.sections) if (s.headingStart <= at) owner = s;
    if (owner === undefined) paths.push([]);
    else if (at >= owner.bodyStart) paths.push(owner.path);
  }
  if (paths.length === 0) return undefined;
  const titles = commonPrefix(paths).filter((t) => t !== '');
  return titles.length === 0 ? null : titles.join(' > ');
}

describe('chunkDocument on markdown of known structure', () => {
  it('keeps the invariants and the heading path of the sections a chunk holds', () => {
    fc.assert(
      fc.property(structuredDocument, chunkingOptions, (built, options) => {
        const chunks = chunkDocument(built.doc, 'markdown', options);
        expectChunkInvariants(built.doc, chunks, options);
        for (const chunk of chunks) {
          const expected = expectedHeading(built, chunk);
          if (expected !== undefined) expect(chunk.heading).toBe(expected);
        }
      }),
      run(400),
    );
  });

  it('never splits a fence that fits in maxWords', () => {
    fc.assert(
      fc.property(structuredDocument, chunkingOptions, (built, options) => {
        const chunks = chunkDocument(built.doc, 'markdown', options);
        for (const f of built.fences) {
          const words = wordSpans(built.doc.slice(f.start, f.end));
          if (words.length === 0 || words.length > options.maxWords) continue;
          const first = f.start + words[0]![0];
          const last = f.start + words[words.length - 1]![1];
          const touching = chunks.filter((c) => c.charStart < last && c.charEnd > first);
          expect(touching.length).toBeGreaterThan(0);
          for (const c of touching) {
            expect(c.charStart).toBeLessThanOrEqual(first);
            expect(c.charEnd).toBeGreaterThanOrEqual(last);
          }
        }
      }),
      run(400),
    );
  });

  it('cuts a fence larger than maxWords only between lines when each line fits', () => {
    fc.assert(
      fc.property(structuredDocument, chunkingOptions, (built, options) => {
        // Cutting mid-line costs more than any cut between lines only while a
        // window's length can stray from the target by less than 4 targets.
        fc.pre(options.maxWords <= 5 * options.targetWords);
        // Words are separated by \n only; a lone \r reads as a space there.
        fc.pre(built.eol !== '\r');
        const chunks = chunkDocument(built.doc, 'markdown', options);
        for (const f of built.fences) {
          const words = wordSpans(built.doc.slice(f.start, f.end));
          if (words.length <= options.maxWords || f.lines.some((line) => countWords(line) > options.maxWords)) continue;
          const first = f.start + words[0]![0];
          const last = f.start + words[words.length - 1]![1];
          for (const c of chunks) {
            if (c.charStart > first && c.charStart < last) expect('\r\n').toContain(built.doc[c.charStart - 1]);
            if (c.charEnd > first && c.charEnd < last) expect('\r\n').toContain(built.doc[c.charEnd]);
          }
        }
      }),
      run(400),
    );
  });
});

// ---------------------------------------------------------------------------
// Bounded time on adversarial documents

const FIVE_MB = 5 * 1024 * 1024;
const fill = (unit: string, prefix = '', suffix = '') => prefix + unit.repeat(Math.ceil((FIVE_MB - prefix.length - suffix.length) / unit.length)) + suffix;
// Generous for 5 MB, yet far below what a quadratic path needs: the old heading
// regex took 1.4 s on 40 KB of spaces and 6.1 s on 80 KB (hours at 5 MB). The
// heaviest linear case, 2.6 million `#` lines (as many markdown-it heading
// tokens), takes about 7 s of the process's CPU alone, the collector's threads
// included, and passed 11 s in a CI run under load.
const BOUND_MS = 20_000;

describe('chunkDocument in bounded time on 5 MB adversarial documents', () => {
  const cases: Array<[string, ContentType, () => string]> = [
    ['a heading line: "# a", 5 MB of spaces, "b"', 'markdown', () => fill(' ', '# a', 'b')],
    ['a heading line of spaces and #s', 'markdown', () => fill(' #', '# a')],
    ['one line of #', 'markdown', () => fill('#')],
    ['lines of #', 'markdown', () => fill('#\n')],
    ['headings with CRLF', 'markdown', () => fill('## x ##\r\n')],
    ['setext headings', 'markdown', () => fill('a\n=\n')],
    ['one paragraph of 2.6 million lines closed by ---', 'markdown', () => fill('a\n', '', '---')],
    ['one line of backticks', 'markdown', () => fill('`')],
    ['lines of backticks', 'markdown', () => fill('```\n')],
    ['nested fences', 'markdown', () => fill('~~~~\n```\n~~~\n````\n')],
    ['an unclosed fence of one-word lines', 'markdown', () => fill('x\n', '```\n')],
    ['block quotes 2.6 million deep', 'markdown', () => fill('> ')],
    ['a block quote 50 deep with lazy lines', 'markdown', () => fill('a\n', `${'> '.repeat(50)}x\n`)],
    ['lists nested 60 deep, then lines', 'markdown', () => fill('- a\n', Array.from({ length: 60 }, (_, i) => `${'  '.repeat(i)}- x\n`).join(''))],
    ['one line of <', 'markdown', () => fill('<')],
    ['lone carriage returns and words', 'markdown', () => fill('a\r')],
    ['one line of words', 'text', () => fill('a ')],
    ['sentences without spaces after the stop', 'text', () => fill('a.')],
    ['lines of one word', 'text', () => fill('a\n')],
    ['one line of code', 'code', () => fill('x=1; ')],
    ['deeply indented lines', 'code', () => fill(`${' '.repeat(200)}x\n`)],
  ];

  it.each(cases)('%s (%s)', (_name, type, make) => {
    const doc = make();
    expect(doc.length).toBeGreaterThanOrEqual(FIVE_MB);
    const { result: chunks, ms } = cpuMilliseconds(() => chunkDocument(doc, type));
    expect(ms).toBeLessThan(BOUND_MS);
    expect(chunks.every((c, i) => c.ordinal === i && doc.slice(c.charStart, c.charEnd) === c.content)).toBe(true);
  });
});
