/**
 * Readable-text extraction from HTML for indexing. This is not a conforming
 * HTML parser: it is a single linear scan that is tolerant of broken markup,
 * which is what matters for arbitrary uploaded pages.
 */

// Elements whose content is never visible text.
const SKIPPED = new Set(['script', 'style', 'noscript', 'template', 'svg', 'iframe', 'object', 'canvas']);

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

const NAMED_ENTITIES: Record<string, string> = {
  amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0', ensp: '\u2002', emsp: '\u2003',
  thinsp: '\u2009', shy: '\u00ad', zwj: '\u200d', zwnj: '\u200c', lrm: '\u200e', rlm: '\u200f',
  copy: '©', reg: '®', trade: '™', hellip: '…', mdash: '—', ndash: '–', minus: '−',
  lsquo: '‘', rsquo: '’', sbquo: '‚', ldquo: '“', rdquo: '”', bdquo: '„', laquo: '«', raquo: '»',
  lsaquo: '‹', rsaquo: '›', bull: '•', middot: '·', prime: '′', Prime: '″', dagger: '†', Dagger: '‡',
  euro: '€', pound: '£', yen: '¥', cent: '¢', curren: '¤', sect: '§', para: '¶', deg: '°',
  plusmn: '±', times: '×', divide: '÷', frac12: '½', frac14: '¼', frac34: '¾', sup1: '¹', sup2: '²',
  sup3: '³', micro: 'µ', iexcl: '¡', iquest: '¿', larr: '←', rarr: '→', uarr: '↑', darr: '↓',
  harr: '↔', rArr: '⇒', lArr: '⇐', hArr: '⇔', le: '≤', ge: '≥', ne: '≠', asymp: '≈', infin: '∞',
  sum: '∑', prod: '∏', radic: '√', part: '∂', nabla: '∇', isin: '∈', notin: '∉', cap: '∩',
  cup: '∪', and: '∧', or: '∨', forall: '∀', exist: '∃', empty: '∅', alpha: 'α', beta: 'β',
  gamma: 'γ', delta: 'δ', epsilon: 'ε', lambda: 'λ', mu: 'μ', pi: 'π', sigma: 'σ', tau: 'τ',
  phi: 'φ', omega: 'ω', Delta: 'Δ', Sigma: 'Σ', Omega: 'Ω', check: '✓', star: '☆', hearts: '♥',
  Agrave: 'À', Aacute: 'Á', Acirc: 'Â', Atilde: 'Ã', Auml: 'Ä', Aring: 'Å', AElig: 'Æ', Ccedil: 'Ç',
  Egrave: 'È', Eacute: 'É', Ecirc: 'Ê', Euml: 'Ë', Igrave: 'Ì', Iacute: 'Í', Icirc: 'Î', Iuml: 'Ï',
  Ntilde: 'Ñ', Ograve: 'Ò', Oacute: 'Ó', Ocirc: 'Ô', Otilde: 'Õ', Ouml: 'Ö', Oslash: 'Ø',
  Ugrave: 'Ù', Uacute: 'Ú', Ucirc: 'Û', Uuml: 'Ü', Yacute: 'Ý', szlig: 'ß', agrave: 'à', aacute: 'á',
  acirc: 'â', atilde: 'ã', auml: 'ä', aring: 'å', aelig: 'æ', ccedil: 'ç', egrave: 'è', eacute: 'é',
  ecirc: 'ê', euml: 'ë', igrave: 'ì', iacute: 'í', icirc: 'î', iuml: 'ï', ntilde: 'ñ', ograve: 'ò',
  oacute: 'ó', ocirc: 'ô', otilde: 'õ', ouml: 'ö', oslash: 'ø', ugrave: 'ù', uacute: 'ú',
  ucirc: 'û', uuml: 'ü', yacute: 'ý', yuml: 'ÿ', OElig: 'Œ', oelig: 'œ', Scaron: 'Š', scaron: 'š',
};

// Named references need their semicolon (as browsers require outside legacy
// cases), so text like "AT&T" or "a&b" in a URL is left alone.
const ENTITY = /&(?:#(\d{1,8})|#[xX]([0-9a-fA-F]{1,7})|([a-zA-Z][a-zA-Z0-9]{1,31}));?/g;

export function decodeEntities(text: string): string {
  if (!text.includes('&')) return text;
  return text.replace(ENTITY, (whole, dec: string | undefined, hex: string | undefined, name: string | undefined) => {
    if (name !== undefined) {
      if (!whole.endsWith(';')) return whole;
      return Object.prototype.hasOwnProperty.call(NAMED_ENTITIES, name) ? NAMED_ENTITIES[name] : whole;
    }
    const code = dec !== undefined ? Number.parseInt(dec, 10) : Number.parseInt(hex!, 16);
    // NUL, surrogates and out-of-range values are replaced, as browsers do.
    if (code === 0 || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return '\ufffd';
    return String.fromCodePoint(code);
  });
}

const TAG_NAME = /<(\/?)([a-zA-Z][a-zA-Z0-9:-]*)/y;

class TextSink {
  private readonly parts: string[] = [];
  private hasText = false;
  // Newlines owed before the next text; deferred so that runs of block tags
  // collapse into one paragraph break and no breaks lead or trail the output.
  private pendingBreaks = 0;
  private pendingSpace = false;

  text(raw: string, preformatted: boolean): void {
    const decoded = decodeEntities(raw);
    if (preformatted) {
      if (decoded.length === 0) return;
      this.flush();
      this.parts.push(decoded.replace(/\r\n?/g, '\n'));
      this.hasText = true;
      return;
    }
    // \s also matches the non-breaking space, which should read as a space.
    const collapsed = decoded.replace(/\s+/g, ' ');
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

/** End of a tag starting at `from`, skipping `>` inside quoted attribute values. */
function findTagEnd(html: string, from: number): number {
  let quote = 0;
  for (let i = from; i < html.length; i++) {
    const c = html.charCodeAt(i);
    if (quote !== 0) {
      if (c === quote) quote = 0;
    } else if (c === 34 || c === 39) {
      quote = c;
    } else if (c === 62) {
      return i;
    }
  }
  return -1;
}

/** Position just after the matching close tag of a skipped element, or -1 when it is never closed. */
function skipElement(html: string, name: string, from: number): number {
  const close = new RegExp(`</${name}(?=[\\s/>])`, 'gi');
  close.lastIndex = from;
  const m = close.exec(html);
  if (m === null) return -1;
  const end = findTagEnd(html, m.index + m[0].length);
  return end === -1 ? html.length : end + 1;
}

/**
 * Visible text of an HTML document: script/style/head and similar are dropped,
 * block elements become paragraph breaks (list items and table rows become line
 * breaks), whitespace is collapsed outside <pre>, and character references are
 * decoded.
 */
export function extractHtmlText(html: string): string {
  const out = new TextSink();
  const len = html.length;
  let preDepth = 0;
  // A newline directly after <pre> is not content.
  let preJustOpened = false;
  let i = 0;
  while (i < len) {
    const lt = html.indexOf('<', i);
    if (lt === -1) {
      out.text(html.slice(i), preDepth > 0);
      break;
    }
    if (lt > i) {
      let text = html.slice(i, lt);
      if (preJustOpened) text = text.replace(/^\r?\n/, '');
      out.text(text, preDepth > 0);
    }
    preJustOpened = false;

    if (html.startsWith('<!--', lt)) {
      const end = html.indexOf('-->', lt + 4);
      i = end === -1 ? len : end + 3;
      continue;
    }
    if (html.startsWith('<![CDATA[', lt)) {
      const end = html.indexOf(']]>', lt + 9);
      // CDATA is literal text, so it bypasses entity decoding.
      out.text(html.slice(lt + 9, end === -1 ? len : end).replace(/&/g, '&amp;'), preDepth > 0);
      i = end === -1 ? len : end + 3;
      continue;
    }
    const next = html.charCodeAt(lt + 1);
    if (next === 33 /* ! */ || next === 63 /* ? */) {
      const end = html.indexOf('>', lt + 2);
      i = end === -1 ? len : end + 1;
      continue;
    }

    TAG_NAME.lastIndex = lt;
    const m = TAG_NAME.exec(html);
    if (m === null) {
      // A bare "<" as in "a < b" is text.
      out.text('<', preDepth > 0);
      i = lt + 1;
      continue;
    }
    const closing = m[1] === '/';
    const name = m[2].toLowerCase();
    const tagEnd = findTagEnd(html, lt + m[0].length);
    if (tagEnd === -1) break; // truncated markup: the rest is an unfinished tag
    i = tagEnd + 1;
    const selfClosing = html.charCodeAt(tagEnd - 1) === 47; /* / */

    if (!closing && !selfClosing && SKIPPED.has(name)) {
      const after = skipElement(html, name, i);
      i = after === -1 ? len : after;
      out.space();
      continue;
    }
    if (!closing && name === 'head') {
      // </head> is optional, so the head also ends where the body starts.
      const end = /<\/head\s*>|<body[\s>]/gi;
      end.lastIndex = i;
      const found = end.exec(html);
      if (found !== null) i = found[0].startsWith('</') ? found.index + found[0].length : found.index;
      continue;
    }

    if (name === 'pre') {
      preDepth = closing ? Math.max(0, preDepth - 1) : preDepth + (selfClosing ? 0 : 1);
      preJustOpened = !closing && !selfClosing;
      out.block(2);
    } else if (name === 'br') {
      out.lineBreak();
    } else if (PARAGRAPH.has(name)) {
      out.block(2);
    } else if (LINE.has(name)) {
      out.block(1);
    } else if (SEPARATED.has(name)) {
      out.space();
    }
  }
  return out.toString();
}
