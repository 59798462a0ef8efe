import { chunkDocument, DEFAULT_CHUNKING, type Chunk, type ChunkingOptions, type ContentType } from '../../src/domain/chunking/chunker';
import { extractHtmlText } from '../../src/domain/chunking/html';

const SMALL: ChunkingOptions = { targetWords: 30, overlapWords: 5, minWords: 5, maxWords: 45 };

function wordsOf(text: string): string[] {
  return text.split(/\s+/).filter((w) => w.length > 0);
}

function countWords(text: string): number {
  return wordsOf(text).length;
}

/** Prose with `count` distinct words and no sentence punctuation, so cut positions are predictable. */
function prose(count: number, prefix = 'w'): string {
  return Array.from({ length: count }, (_, i) => `${prefix}${i}`).join(' ');
}

function expectWellFormed(source: string, chunks: Chunk[], options: ChunkingOptions = DEFAULT_CHUNKING): void {
  chunks.forEach((chunk, i) => {
    expect(chunk.ordinal).toBe(i);
    expect(chunk.charStart).toBeLessThan(chunk.charEnd);
    expect(source.slice(chunk.charStart, chunk.charEnd)).toBe(chunk.content);
    expect(countWords(chunk.content)).toBeLessThanOrEqual(options.maxWords);
    if (i > 0) expect(chunk.charStart).toBeGreaterThan(chunks[i - 1]!.charStart);
  });
}

function section(heading: string, words: number, prefix: string): string {
  return `${heading}\n\n${prose(words, prefix)}\n`;
}

describe('chunkDocument', () => {
  it.each<ContentType>(['markdown', 'text', 'code', 'html'])('returns no chunks for empty or blank %s input', (type) => {
    expect(chunkDocument('', type)).toEqual([]);
    expect(chunkDocument(' \n\t\r\n \u00a0\u3000 ', type)).toEqual([]);
  });

  it('rejects option combinations that cannot produce valid windows', () => {
    expect(() => chunkDocument('a b c', 'text', { ...DEFAULT_CHUNKING, overlapWords: 512 })).toThrow(RangeError);
    expect(() => chunkDocument('a b c', 'text', { ...DEFAULT_CHUNKING, maxWords: 100 })).toThrow(RangeError);
    expect(() => chunkDocument('a b c', 'text', { ...DEFAULT_CHUNKING, targetWords: 0 })).toThrow(RangeError);
  });

  describe('markdown', () => {
    it('gives each chunk the path of headings it sits under', () => {
      // 20-word sections: any two together exceed the 30-word target, so none merge.
      const doc = [
        prose(20, 'pre'),
        '',
        section('# Install', 20, 'ins'),
        section('## Linux ##', 20, 'lin'),
        section('### Debian', 20, 'deb'),
        section('### Fedora', 20, 'fed'),
        section('## Windows', 20, 'win'),
        section('# Usage', 20, 'use'),
      ].join('\n');
      const chunks = chunkDocument(doc, 'markdown', SMALL);
      expectWellFormed(doc, chunks, SMALL);
      expect(chunks.map((c) => c.heading)).toEqual([
        null,
        'Install',
        'Install > Linux',
        'Install > Linux > Debian',
        'Install > Linux > Fedora',
        'Install > Windows',
        'Usage',
      ]);
      expect(chunks[3]!.content.startsWith('### Debian')).toBe(true);
    });

    it('merges small sections under a shared parent and names them by it', () => {
      const doc = [
        '# Install',
        '## Linux',
        '### Debian',
        'Use apt.',
        '### Fedora',
        'Use dnf.',
        '# Usage',
        'Run it.',
      ].join('\n\n');
      const chunks = chunkDocument(doc, 'markdown');
      expectWellFormed(doc, chunks);
      expect(chunks.map((c) => [c.heading, c.content])).toEqual([
        ['Install > Linux', doc.slice(0, doc.indexOf('\n\n# Usage'))],
        ['Usage', '# Usage\n\nRun it.'],
      ]);
    });

    it('leads bare parent headings into the next section instead of emitting them alone', () => {
      const doc = `# Install\n\n## Linux\n\n${prose(40, 'lin')}\n`;
      const chunks = chunkDocument(doc, 'markdown', SMALL);
      expectWellFormed(doc, chunks, SMALL);
      expect(chunks[0]!.content.startsWith('# Install\n\n## Linux\n\nlin0')).toBe(true);
      expect(chunks.every((c) => c.heading === 'Install > Linux')).toBe(true);
    });

    it('keeps a fenced code block whole and ignores # lines inside it', () => {
      const code = ['```python', '# not a heading', ...Array.from({ length: 6 }, (_, i) => `value_${i} = compute(${i})  # step ${i}`), '```'].join('\n');
      const tilde = ['~~~', '## also not a heading', 'echo hello', '~~~'].join('\n');
      const doc = `# Guide\n\n${prose(20, 'a')}\n\n${code}\n\n${prose(20, 'b')}\n\n${tilde}\n\n${prose(20, 'c')}\n`;
      const chunks = chunkDocument(doc, 'markdown', SMALL);
      expectWellFormed(doc, chunks, SMALL);
      expect(chunks.every((c) => c.heading === 'Guide')).toBe(true);
      for (const block of [code, tilde]) {
        const blockStart = doc.indexOf(block);
        const blockEnd = blockStart + block.length;
        const touching = chunks.filter((c) => c.charStart < blockEnd && c.charEnd > blockStart);
        expect(touching.length).toBeGreaterThan(0);
        for (const chunk of touching) {
          expect(chunk.charStart).toBeLessThanOrEqual(blockStart);
          expect(chunk.charEnd).toBeGreaterThanOrEqual(blockEnd);
        }
      }
    });

    it('treats an unclosed fence as code to the end of the document', () => {
      const doc = `# Real\n\ntext\n\n\`\`\`\n# inside\n${prose(10, 'x')}`;
      const chunks = chunkDocument(doc, 'markdown');
      expect(chunks.map((c) => c.heading)).toEqual(['Real']);
    });

    it('splits a code block larger than maxWords on line boundaries', () => {
      const lines = Array.from({ length: 100 }, (_, i) => `    const v${i} = ${i};`);
      const doc = `# Big\n\n\`\`\`ts\n${lines.join('\n')}\n\`\`\`\n`;
      const options = { targetWords: 40, overlapWords: 8, minWords: 5, maxWords: 60 };
      const chunks = chunkDocument(doc, 'markdown', options);
      expectWellFormed(doc, chunks, options);
      expect(chunks.length).toBeGreaterThan(5);
      for (const chunk of chunks) {
        expect(chunk.charStart === 0 || doc[chunk.charStart - 1] === '\n').toBe(true);
        expect(chunk.charEnd === doc.length || doc[chunk.charEnd] === '\n').toBe(true);
      }
      // Together the chunks cover every line.
      for (const line of lines) {
        const at = doc.indexOf(`${line}\n`);
        expect(chunks.some((c) => c.charStart <= at && c.charEnd >= at + line.length)).toBe(true);
      }
    });

    it('reads setext headings, and not a list or quote line above ---', () => {
      const doc = ['Install', '=======', '', 'Use the installer.', '', 'Linux', '-----', '', 'Use apt.', '', '- one item', '---', '', '> a quote', '---', '', 'More text.'].join('\n');
      const chunks = chunkDocument(doc, 'markdown', { targetWords: 4, overlapWords: 1, minWords: 1, maxWords: 6 });
      expectWellFormed(doc, chunks, { targetWords: 4, overlapWords: 1, minWords: 1, maxWords: 6 });
      expect([...new Set(chunks.map((c) => c.heading))]).toEqual(['Install', 'Install > Linux']);
      expect(chunks.find((c) => c.content.includes('More'))!.heading).toBe('Install > Linux');
    });

    it('takes heading text without markers, closing #s or runs of whitespace', () => {
      const doc = `#   Install   ##\n\nx\n\n## C#\n\ny\n\n## a${' '.repeat(50_000)}b ###\n\nz\n`;
      const headings = chunkDocument(doc, 'markdown', { targetWords: 3, overlapWords: 0, minWords: 1, maxWords: 4 }).map((c) => c.heading);
      expect([...new Set(headings)]).toEqual(['Install', 'Install > C#', 'Install > a b']);
    });

    it('does not read headings or fences inside indented code', () => {
      const doc = `# Real\n\n    # indented\n    \`\`\`\n\ntext after\n`;
      expect(chunkDocument(doc, 'markdown').map((c) => c.heading)).toEqual(['Real']);
    });

    it('handles CRLF line endings', () => {
      const doc = '# One\r\n\r\nfirst text\r\n\r\n## Two ##\r\n\r\nsecond text\r\n';
      const chunks = chunkDocument(doc, 'markdown', { ...SMALL, targetWords: 4, overlapWords: 1, minWords: 1 });
      expect(chunks.map((c) => c.heading)).toEqual(['One', 'One > Two']);
      expectWellFormed(doc, chunks, SMALL);
    });
  });

  describe('windows', () => {
    const options = { targetWords: 100, overlapWords: 20, minWords: 10, maxWords: 150 };

    it('cuts long unbroken text into target-sized windows that overlap by overlapWords', () => {
      const text = prose(3000);
      const chunks = chunkDocument(text, 'text', options);
      expectWellFormed(text, chunks, options);
      expect(chunks.every((c) => c.heading === null)).toBe(true);
      for (let i = 1; i < chunks.length; i++) {
        const previous = wordsOf(chunks[i - 1]!.content);
        const current = wordsOf(chunks[i]!.content);
        expect(previous.length).toBe(100);
        expect(current.slice(0, 20)).toEqual(previous.slice(-20));
        expect(countWords(text.slice(chunks[i]!.charStart, chunks[i - 1]!.charEnd))).toBe(20);
      }
      // Nothing is lost: the last window reaches the end.
      expect(chunks[chunks.length - 1]!.charEnd).toBe(text.length);
    });

    it('prefers paragraph boundaries and still overlaps', () => {
      const paragraphs = Array.from({ length: 40 }, (_, i) => prose(27, `p${i}w`));
      const text = paragraphs.join('\n\n');
      const chunks = chunkDocument(text, 'text', options);
      expectWellFormed(text, chunks, options);
      for (let i = 0; i < chunks.length - 1; i++) {
        expect(text.slice(chunks[i]!.charEnd, chunks[i]!.charEnd + 2)).toBe('\n\n');
        const shared = countWords(text.slice(chunks[i + 1]!.charStart, chunks[i]!.charEnd));
        expect(shared).toBe(20);
      }
    });

    it('never exceeds maxWords with default options on long prose', () => {
      const sentences = Array.from({ length: 2000 }, (_, i) => `Sentence ${i} says something about topic ${i % 17}.`);
      const text = sentences.join(' ');
      const chunks = chunkDocument(text, 'text');
      expectWellFormed(text, chunks);
      for (let i = 1; i < chunks.length; i++) {
        const shared = countWords(text.slice(chunks[i]!.charStart, chunks[i - 1]!.charEnd));
        expect(shared).toBeGreaterThanOrEqual(DEFAULT_CHUNKING.overlapWords * 0.5);
        expect(shared).toBeLessThanOrEqual(DEFAULT_CHUNKING.overlapWords);
      }
      // Cuts land after a full stop.
      expect(chunks.slice(0, -1).every((c) => c.content.endsWith('.'))).toBe(true);
    });

    it('ends each window past the previous one, giving up overlap before a block that must stay whole', () => {
      const fence = `\`\`\`\n${prose(28, 'c')}\n\`\`\``;
      const doc = `# T\n\n${prose(40, 'p')}\n\n${fence}\n\nafter words here\n`;
      const small = { targetWords: 20, overlapWords: 5, minWords: 5, maxWords: 30 };
      const chunks = chunkDocument(doc, 'markdown', small);
      expectWellFormed(doc, chunks, small);
      for (let i = 1; i < chunks.length; i++) expect(chunks[i]!.charEnd).toBeGreaterThan(chunks[i - 1]!.charEnd);
      expect(chunks.filter((c) => c.content.includes('c0'))).toEqual([expect.objectContaining({ content: fence })]);
      // The same holds in prose when the overlap is almost the whole target.
      const paragraphs = ['a', 'b', 'c', 'd'].map((p) => prose(12, p)).join('\n\n');
      const windows = chunkDocument(paragraphs, 'text', { targetWords: 10, overlapWords: 9, minWords: 1, maxWords: 14 });
      for (let i = 1; i < windows.length; i++) expect(windows[i]!.charEnd).toBeGreaterThan(windows[i - 1]!.charEnd);
    });

    it('merges a trailing piece smaller than minWords into the previous chunk', () => {
      const noOverlap = { targetWords: 100, overlapWords: 0, minWords: 30, maxWords: 150 };
      expect(chunkDocument(prose(110), 'text', noOverlap).map((c) => countWords(c.content))).toEqual([110]);
      expect(chunkDocument(prose(160), 'text', noOverlap).map((c) => countWords(c.content))).toEqual([100, 60]);
      // ...unless the merged chunk would exceed maxWords.
      expect(chunkDocument(prose(110), 'text', { ...noOverlap, maxWords: 105 }).map((c) => countWords(c.content))).toEqual([100, 10]);
      // With overlap, a tail that adds fewer than minWords new words is merged too.
      expect(chunkDocument(prose(110), 'text', { ...noOverlap, overlapWords: 20 }).map((c) => countWords(c.content))).toEqual([110]);
    });

    it('merges a small trailing piece within a markdown section', () => {
      const doc = `# Title\n\n${prose(120)}\n`;
      const chunks = chunkDocument(doc, 'markdown', { targetWords: 100, overlapWords: 0, minWords: 30, maxWords: 150 });
      expect(chunks).toHaveLength(1);
      expect(chunks[0]!.content).toBe(doc.trim());
    });
  });

  describe('code', () => {
    it('splits between top-level blocks and never mid-line', () => {
      const functions = Array.from(
        { length: 30 },
        (_, i) => `function f${i}(a, b) {\n  const sum = a + b;\n\n  return sum * ${i};\n}`,
      );
      const source = functions.join('\n\n') + '\n';
      const options = { targetWords: 40, overlapWords: 0, minWords: 5, maxWords: 60 };
      const chunks = chunkDocument(source, 'code', options);
      expectWellFormed(source, chunks, options);
      expect(chunks.length).toBeGreaterThan(5);
      for (const chunk of chunks) {
        expect(chunk.heading).toBeNull();
        expect(chunk.content.startsWith('function ')).toBe(true);
        expect(chunk.content.endsWith('}')).toBe(true);
      }
    });

    it('keeps indentation when an overlapping window starts on an indented line', () => {
      const source = Array.from({ length: 200 }, (_, i) => `  call(${i}, arg)`).join('\n');
      const options = { targetWords: 30, overlapWords: 7, minWords: 5, maxWords: 45 };
      const chunks = chunkDocument(source, 'code', options);
      expectWellFormed(source, chunks, options);
      for (const chunk of chunks) {
        expect(chunk.content.startsWith('  call(')).toBe(true);
        expect(chunk.content.endsWith('arg)')).toBe(true);
      }
    });
  });

  describe('exact slices', () => {
    const inputs: Array<[string, ContentType, string]> = [
      [
        'markdown with emoji and CJK',
        'markdown',
        `# 安装 🚀\n\n${'这是一个测试文档。 '.repeat(40)}\n\n## Émojis 👩‍👩‍👧‍👦\n\n${'Party 🎉🎉 time, naïve café — “quoted” text. '.repeat(60)}\n\n\`\`\`\n# 代码 😀\n\`\`\`\n\n${'日本語のテキスト 𠮷野家 '.repeat(50)}`,
      ],
      ['text with unusual whitespace', 'text', `${'alpha\u00a0beta\u3000gamma\u2003delta\tepsilon\r\n'.repeat(120)}\u2028end 🙂`],
      ['code with tabs and CRLF', 'code', 'def f():\r\n\treturn "✓ 漢字"\r\n\r\n'.repeat(150)],
      ['markdown without headings', 'markdown', `${prose(700)}\n\n${prose(300, 'z')}`],
    ];

    it.each(inputs)('%s: every chunk is exactly source.slice(charStart, charEnd)', (_name, type, doc) => {
      for (const options of [DEFAULT_CHUNKING, SMALL, { targetWords: 7, overlapWords: 3, minWords: 2, maxWords: 9 }]) {
        const chunks = chunkDocument(doc, type, options);
        expect(chunks.length).toBeGreaterThan(0);
        expectWellFormed(doc, chunks, options);
      }
    });
  });

  describe('html', () => {
    const html = `<!DOCTYPE html>
<html><head><title>Page title</title><style>body { color: red; }</style>
<script>var secret = "<p>not text</p>";</script></head>
<body>
  <h1>Tom &amp; Jerry</h1>
  <p>Caf&eacute; &lt;menu&gt; &#8364;5 &#x1F600; and&nbsp;more</p>
  <script type="module">document.write("injected")</script>
  <!-- a comment -->
  <ul><li>first item</li><li>second item</li></ul>
  <div>A <b>bold</b> word</div>
  <noscript>enable javascript</noscript>
</body></html>`;

    it('extracts readable text: no scripts or styles, entities decoded, blocks become paragraphs', () => {
      const text = extractHtmlText(html);
      expect(text).toBe('Tom & Jerry\n\nCafé <menu> €5 😀 and more\n\nfirst item\nsecond item\n\nA bold word');
    });

    it('chunks the extracted text with offsets into that text', () => {
      const chunks = chunkDocument(html, 'html');
      const text = extractHtmlText(html);
      expectWellFormed(text, chunks);
      const all = chunks.map((c) => c.content).join('\n');
      expect(all).toContain('Tom & Jerry');
      expect(all).not.toMatch(/secret|injected|color|Page title|enable javascript|<p>|&amp;/);
      expect(chunks.every((c) => c.heading === null)).toBe(true);
    });

    it('keeps preformatted whitespace and tolerates broken markup', () => {
      expect(extractHtmlText('<p>a<br>b</p><pre>\n  x\n    y</pre><p>c &unknown; AT&T < d')).toBe('a\nb\n\n  x\n    y\n\nc &unknown; AT&T < d');
      expect(extractHtmlText('<div title="a > b">text</div><script>unterminated')).toBe('text');
    });
    it('reads markup and character references as browsers do', () => {
      // A title is never rendered; a skipped element may nest in itself.
      expect(extractHtmlText('<body><title>T</title><svg><svg></svg>icon</svg>text</body>')).toBe('text');
      // Legacy references decode without their semicolon, but not inside a longer name.
      expect(extractHtmlText('<p>&copy 2024 &amp co &notit; a&b=c &#128;</p>')).toBe('© 2024 & co ¬it; a&b=c €');
      expect(extractHtmlText('<p>a &#0; &#x110000; &#xD800; b</p>')).toBe('a \ufffd \ufffd \ufffd b');
    });
  });

  it('chunks a 5 MB markdown document', () => {
    const parts: string[] = [];
    let size = 0;
    for (let i = 0; size < 5 * 1024 * 1024; i++) {
      const part =
        (i % 25 === 0 ? `# Chapter ${i / 25}\n\n` : '') +
        `## Section ${i}\n\n` +
        `${'Lorem ipsum dolor sit amet, consectetur adipiscing elit. '.repeat(1 + (i % 7))}\n\n` +
        `- item one\n- item two 🚀\n- 项目三\n\n` +
        (i % 3 === 0 ? '```js\n# not a heading\nconsole.log("hi");\n```\n\n' : '') +
        (i % 50 === 0 ? `${prose(1500, `long${i}_`)}\n\n` : '');
      parts.push(part);
      size += part.length;
    }
    const doc = parts.join('');
    expect(doc.length).toBeGreaterThanOrEqual(5 * 1024 * 1024);
    const chunks = chunkDocument(doc, 'markdown');
    expect(chunks.length).toBeGreaterThan(1000);
    expectWellFormed(doc, chunks);
    expect(chunks.every((c) => c.heading !== null && c.heading.startsWith('Chapter '))).toBe(true);
  });
});
