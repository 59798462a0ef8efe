import MarkdownIt from 'markdown-it';
import { collapseWhitespace } from './whitespace';

type Token = MarkdownIt.Token;

/** A fenced code block: from the start of its opening line to the start of the line after its closing fence (or the end of the document). */
export interface FenceSpan {
  start: number;
  end: number;
}

/** A heading: from the start of its first line to the start of the line after it (after the underline of a setext heading). */
export interface HeadingSpan {
  start: number;
  end: number;
  level: number;
  /** Without markers, trailing #s and underline; whitespace runs read as one space. */
  text: string;
}

export interface MarkdownOutline {
  fences: FenceSpan[];
  headings: HeadingSpan[];
}

// Only the leaf blocks that decide what is a heading or a fence. Lists and
// block quotes are not parsed: their rules cost lines × nesting depth in time
// and memory (5 MB of lazy lines under a block quote 50 deep took 16 s and
// 2.5 GB; 5 MB of `- a` lines 14 s), and the list rule reads back the tokens
// that OutlineState does not keep. Their lines read as paragraph text, so
// `> # x` and `- ```` are not structure.
// `code` and `hr` stay so that an indented `# x` or a `---` after a blank line
// is not taken for a heading; raw HTML is off in this preset.
const parser = new MarkdownIt('zero');
parser.block.ruler.enableOnly(['code', 'fence', 'heading', 'hr', 'lheading', 'paragraph']);

// Lists and block quotes are not parsed, so a paragraph line opening one of
// them followed by `---` would read as a setext heading where CommonMark sees a
// list or quote and a thematic break.
const CONTAINER_LINE = /^ {0,3}(?:>|[-+*](?:[ \t]|$)|\d{1,9}[.)](?:[ \t]|$))/m;

/** Fenced code blocks and top-level headings (ATX and setext) of a markdown document, in document order. */
export function outlineMarkdown(content: string): MarkdownOutline {
  // markdown-it reads \r\n and a lone \r as \n, as lineStarts does.
  const source = content.includes('\r') ? content.replace(/\r\n?/g, '\n') : content;
  const lines = lineStarts(content);
  const state = new OutlineState(source, (line) => (line < lines.length ? lines[line] : content.length));
  parser.block.tokenize(state, state.line, state.lineMax);
  state.end();
  return state.outline;
}

/** Offset where each line starts; a line ends at \n, \r\n or a lone \r. */
function lineStarts(content: string): number[] {
  const starts = [0];
  for (let i = 0; i < content.length; i++) {
    const c = content.charCodeAt(i);
    if (c === 10 || (c === 13 && content.charCodeAt(i + 1) !== 10)) starts.push(i + 1);
  }
  return starts;
}

/**
 * markdown-it's block state, reading the outline from the tokens as the rules
 * push them instead of keeping them, so memory stays flat on documents of
 * millions of blocks. Tokens are plain objects with the fields block rules
 * fill in (none of the rules enabled here calls a Token method): markdown-it's
 * Token constructor sets its thirteen fields through a helper call each, which
 * made parsing 5 MB of `#\n` take 3× longer. A rule fills a token in after
 * pushing it, so each token is read when the next one arrives, or at the end.
 */
class OutlineState extends parser.block.State {
  readonly outline: MarkdownOutline = { fences: [], headings: [] };
  private last: Token | null = null;
  private openHeading: Token | null = null;

  constructor(
    source: string,
    private readonly offsetOfLine: (line: number) => number,
  ) {
    super(source, parser, {}, []);
  }

  override push(type: string, tag: string, nesting: Token['nesting']): Token {
    // The level bookkeeping of StateBlock.push, which block rules rely on.
    if (nesting < 0) this.level--;
    const token = { type, tag, nesting, level: this.level, map: null, content: '', markup: '', info: '', children: null, block: true };
    if (nesting > 0) this.level++;
    if (this.last !== null) this.read(this.last);
    this.last = token as Partial<Token> as Token;
    return this.last;
  }

  end(): void {
    if (this.last !== null) this.read(this.last);
    this.last = null;
  }

  private read(token: Token): void {
    const map = token.map;
    if (token.type === 'fence' && map !== null) {
      this.outline.fences.push({ start: this.offsetOfLine(map[0]), end: this.offsetOfLine(map[1]) });
    } else if (token.type === 'heading_open') {
      this.openHeading = token;
    } else if (token.type === 'inline' && this.openHeading !== null) {
      this.readHeading(this.openHeading, token.content);
      this.openHeading = null;
    }
  }

  private readHeading(open: Token, text: string): void {
    const setext = open.markup === '=' || open.markup === '-';
    if (open.map === null || (setext && CONTAINER_LINE.test(text))) return;
    this.outline.headings.push({
      start: this.offsetOfLine(open.map[0]),
      end: this.offsetOfLine(open.map[1]),
      level: Number(open.tag.slice(1)),
      text: collapseWhitespace(text).trim(),
    });
  }
}
