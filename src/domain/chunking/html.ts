import { Tokenizer, type TokenizerCallbacks } from 'htmlparser2';
import { collapseWhitespace } from './whitespace';

/**
 * Readable-text extraction from HTML for indexing, on htmlparser2's tokenizer:
 * it reads tags, attributes, comments, CDATA, raw-text elements (script,
 * style, title, textarea) and character references the way browsers do, in one
 * linear pass that tolerates broken markup. Its Parser is not used: it keeps
 * the open elements in an array it unshifts, so nesting costs quadratic time
 * (1 MB of `<b>` took 100 s), and nothing here needs the tree.
 */

// Elements whose content is never visible text (browsers do not render a
// title either: it names the window).
const SKIPPED = new Set(['script', 'style', 'title', 'noscript', 'template', 'svg', 'iframe', 'object', 'canvas']);

// Closing or opening one of these ends the current paragraph.
const PARAGRAPH = new Set([
  'address', 'article', 'aside', 'blockquote', 'body', 'caption', 'details', 'dialog', 'div', 'dl',
  'fieldset', 'figcaption', 'figure', 'footer', 'form', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'header',
  'hgroup', 'hr', 'html', 'legend', 'main', 'menu', 'nav', 'ol', 'p', 'pre', 'section', 'summary',
  'table', 'tbody', 'tfoot', 'thead', 'ul',
]);

// Items of lists and tables read best one per line rather than as paragraphs.
const LINE = new Set(['dd', 'dt', 'li', 'option', 'tr']);

// Table cells and similar must not glue their words to the neighbour's.
const SEPARATED = new Set(['td', 'th', 'img', 'input', 'button', 'label', 'select', 'textarea']);

class TextSink {
  private readonly parts: string[] = [];
  private hasText = false;
  // Newlines owed before the next text; deferred so that runs of block tags
  // collapse into one paragraph break and no breaks lead or trail the output.
  private pendingBreaks = 0;
  private pendingSpace = false;

  text(decoded: string, preformatted: boolean): void {
    if (preformatted) {
      if (decoded.length === 0) return;
      this.flush();
      this.parts.push(decoded.replace(/\r\n?/g, '\n'));
      this.hasText = true;
      return;
    }
    // \s also matches the non-breaking space, which should read as a space.
    const collapsed = collapseWhitespace(decoded);
    if (collapsed.length === 0) return;
    if (collapsed.startsWith(' ')) this.space();
    const body = collapsed.trim();
    if (body.length > 0) {
      this.flush();
      this.parts.push(body);
      this.hasText = true;
    }
    if (body.length > 0 && collapsed.endsWith(' ')) this.space();
  }

  space(): void {
    if (this.hasText && this.pendingBreaks === 0) this.pendingSpace = true;
  }

  lineBreak(): void {
    if (this.hasText) this.pendingBreaks = Math.min(2, this.pendingBreaks + 1);
  }

  block(newlines: 1 | 2): void {
    if (this.hasText) this.pendingBreaks = Math.max(this.pendingBreaks, newlines);
  }

  toString(): string {
    return this.parts.join('');
  }

  private flush(): void {
    if (this.pendingBreaks > 0) {
      this.parts.push(this.pendingBreaks === 1 ? '\n' : '\n\n');
    } else if (this.pendingSpace) {
      this.parts.push(' ');
    }
    this.pendingBreaks = 0;
    this.pendingSpace = false;
  }
}

type TagKind = 'open' | 'self-closing' | 'close';

/** Tokenizer events → TextSink, tracking the skipped element and <pre> nesting. */
class VisibleText implements TokenizerCallbacks {
  readonly out = new TextSink();
  /** Name of the open tag whose attributes are being read. */
  private tagName = '';
  /** The skipped element being passed over, and how deeply it nests in itself. */
  private skipped: { name: string; depth: number } | null = null;
  private preDepth = 0;
  // A newline directly after <pre> is not content.
  private preJustOpened = false;

  constructor(private readonly html: string) {}

  ontext(start: number, end: number): void {
    this.text(this.html.slice(start, end));
  }

  // The decoder has already replaced NUL, surrogates and values past U+10FFFF with U+FFFD.
  ontextentity(codePoint: number): void {
    this.text(String.fromCodePoint(codePoint));
  }

  // CDATA is literal text (no entity decoding), as in the foreign content where it is allowed.
  oncdata(start: number, end: number, endOffset: number): void {
    this.text(this.html.slice(start, end - endOffset));
  }

  onopentagname(start: number, end: number): void {
    this.tagName = this.html.slice(start, end).toLowerCase();
  }

  onopentagend(): void {
    this.tag(this.tagName, 'open');
  }

  onselfclosingtag(): void {
    this.tag(this.tagName, 'self-closing');
  }

  onclosetag(start: number, end: number): void {
    this.tag(this.html.slice(start, end).toLowerCase(), 'close');
  }

  // Attributes, comments, declarations and processing instructions are never visible.
  onattribdata(): void {}
  onattribentity(): void {}
  onattribend(): void {}
  onattribname(): void {}
  oncomment(): void {}
  ondeclaration(): void {}
  onprocessinginstruction(): void {}
  onend(): void {}

  private text(text: string): void {
    if (this.skipped !== null) return;
    this.out.text(this.preJustOpened ? text.replace(/^\r?\n/, '') : text, this.preDepth > 0);
    this.preJustOpened = false;
  }

  private tag(name: string, kind: TagKind): void {
    this.preJustOpened = false;
    if (this.skipped !== null) {
      this.passOver(this.skipped, name, kind);
      return;
    }
    if (kind === 'open' && SKIPPED.has(name)) {
      this.skipped = { name, depth: 1 };
      this.out.space();
      return;
    }
    if (name === 'pre') {
      if (kind === 'open') this.preDepth++;
      else if (kind === 'close') this.preDepth = Math.max(0, this.preDepth - 1);
      this.preJustOpened = kind === 'open';
      this.out.block(2);
    } else if (name === 'br') {
      this.out.lineBreak();
    } else if (PARAGRAPH.has(name)) {
      this.out.block(2);
    } else if (LINE.has(name)) {
      this.out.block(1);
    } else if (SEPARATED.has(name)) {
      this.out.space();
    }
  }

  /** Inside a skipped element only its own tags count, to find where it ends. */
  private passOver(skipped: { name: string; depth: number }, name: string, kind: TagKind): void {
    if (name !== skipped.name) return;
    if (kind === 'open') skipped.depth++;
    else if (kind === 'close' && --skipped.depth === 0) this.skipped = null;
  }
}

/**
 * Visible text of an HTML document: script/style/title and similar are dropped,
 * block elements become paragraph breaks (list items and table rows become line
 * breaks), whitespace is collapsed outside <pre>, and character references are
 * decoded.
 */
export function extractHtmlText(html: string): string {
  const visible = new VisibleText(html);
  const tokenizer = new Tokenizer({ decodeEntities: true }, visible);
  tokenizer.write(html);
  tokenizer.end();
  return visible.out.toString();
}
