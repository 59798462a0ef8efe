import { extractHtmlText } from './html';
import { outlineMarkdown, type HeadingSpan } from './markdown-outline';
import { isSpace } from './whitespace';

export type ContentType = 'markdown' | 'text' | 'code' | 'html';

/** Sizes are in words: whitespace-separated tokens, where whitespace is what `\s` matches. */
export interface ChunkingOptions {
  targetWords: number;
  overlapWords: number;
  minWords: number;
  maxWords: number;
}

export const DEFAULT_CHUNKING: ChunkingOptions = Object.freeze({
  targetWords: 512,
  overlapWords: 100,
  minWords: 50,
  maxWords: 768,
});

/**
 * `charStart`/`charEnd` are UTF-16 offsets (JavaScript string indices) such that
 * `source.slice(charStart, charEnd) === content`. For markdown, text and code the
 * source is the document as given; for html it is the text extracted from it
 * (see extractHtmlText), because markup offsets cannot be highlighted usefully.
 */
export interface Chunk {
  ordinal: number;
  content: string;
  heading: string | null;
  charStart: number;
  charEnd: number;
  /** The PDF page the chunk begins on; absent for every other kind of document. */
  page?: number;
}

const HEADING_SEPARATOR = ' > ';

// Cost of cutting between two words; lower is a better place. pickCut adds
// |length - target| / target, so e.g. a paragraph break may sit up to 30% of
// the target away from it before a cut mid-sentence is preferred.
const PARA = 0;
const LINE = 0.1;
const SENTENCE = 0.2;
const SPACE = 0.3;
// A chunk ending in a bare heading separates the heading from its text.
const AFTER_HEADING = 1;
// In code, a blank line before an unindented line separates top-level
// declarations; blank lines inside a body and other line starts are weaker.
const CODE_TOP_LEVEL = 0;
const CODE_BLANK_INDENTED = 0.15;
const CODE_LINE_TOP_LEVEL = 0.15;
const CODE_LINE = 0.2;
// Cutting mid-line in code only wins when no line break is within maxWords.
const CODE_SPACE = 5;
// Inside a fenced block that fits in one chunk.
const NEVER = Number.POSITIVE_INFINITY;

export function chunkDocument(
  content: string,
  contentType: ContentType,
  options: Partial<ChunkingOptions> = DEFAULT_CHUNKING,
): Chunk[] {
  const opts = resolveOptions(options);
  switch (contentType) {
    case 'markdown':
      return chunkMarkdown(content, opts);
    case 'text':
      return chunkPlain(content, 'prose', opts);
    case 'code':
      return chunkPlain(content, 'code', opts);
    case 'html':
      return chunkPlain(extractHtmlText(content), 'prose', opts);
    default:
      throw new RangeError(`unsupported content type: ${String(contentType satisfies never)}`);
  }
}

function resolveOptions(partial: Partial<ChunkingOptions>): ChunkingOptions {
  const o = { ...DEFAULT_CHUNKING, ...partial };
  for (const [key, value] of Object.entries(o)) {
    if (!Number.isInteger(value) || value < 0) throw new RangeError(`chunking option ${key} must be a non-negative integer`);
  }
  if (o.targetWords < 1) throw new RangeError('targetWords must be at least 1');
  if (o.maxWords < o.targetWords) throw new RangeError('maxWords must be at least targetWords');
  // Otherwise windows could not advance.
  if (o.overlapWords >= o.targetWords) throw new RangeError('overlapWords must be less than targetWords');
  if (o.minWords > o.targetWords) throw new RangeError('minWords must not exceed targetWords');
  return o;
}

// ---------------------------------------------------------------------------
// Words

interface Words {
  n: number;
  start: Int32Array;
  end: Int32Array;
}

function tokenize(content: string): Words {
  let capacity = Math.max(16, content.length >> 2);
  let start = new Int32Array(capacity);
  let end = new Int32Array(capacity);
  let n = 0;
  const len = content.length;
  let i = 0;
  while (i < len) {
    while (i < len && isSpace(content.charCodeAt(i))) i++;
    if (i >= len) break;
    const s = i;
    while (i < len && !isSpace(content.charCodeAt(i))) i++;
    if (n === capacity) {
      capacity *= 2;
      const grownStart = new Int32Array(capacity);
      grownStart.set(start);
      start = grownStart;
      const grownEnd = new Int32Array(capacity);
      grownEnd.set(end);
      end = grownEnd;
    }
    start[n] = s;
    end[n] = i;
    n++;
  }
  return { n, start, end };
}

function endsSentence(content: string, wordEnd: number, wordStart: number): boolean {
  let p = wordEnd - 1;
  // Look through closing quotes and brackets: `end.")` still ends a sentence.
  while (p > wordStart && '"\')]}»”’'.includes(content[p])) p--;
  return '.!?。！？…'.includes(content[p]);
}

/** Newlines in content[from, to), capped at 2, and the column where `to` sits. */
function gapShape(content: string, from: number, to: number): { newlines: number; column: number } {
  let newlines = 0;
  let lastNewline = -1;
  for (let p = from; p < to; p++) {
    if (content.charCodeAt(p) === 10) {
      newlines++;
      lastNewline = p;
    }
  }
  return { newlines: Math.min(newlines, 2), column: lastNewline === -1 ? -1 : to - lastNewline - 1 };
}

// ---------------------------------------------------------------------------
// Windowing

interface Layout {
  content: string;
  words: Words;
  /** penalty[i] is the cost of cutting between word i-1 and word i. */
  penalty: Float64Array;
  /** Words in code, whose chunks should start at the line's indentation. */
  inCode: (word: number) => boolean;
  opts: ChunkingOptions;
}

interface Span {
  from: number;
  to: number;
  heading: string | null;
}

/**
 * Lowest-cost place to end a window that starts at word `s`, given that [s, b)
 * exceeds the target; not before `minEnd`, so that it holds words the previous
 * window lacks.
 */
function pickCut(layout: Layout, s: number, b: number, minEnd: number): number {
  const { penalty, opts } = layout;
  const target = opts.targetWords;
  const hi = s + Math.min(opts.maxWords, b - s);
  let best = -1;
  let bestCost = Number.POSITIVE_INFINITY;
  for (let e = Math.max(s + 1, minEnd); e <= hi; e++) {
    const p = e === b ? 0 : penalty[e];
    if (p === NEVER) continue;
    const off = e - s - target;
    const cost = p + (off < 0 ? -off : off) / target;
    if (cost < bestCost) {
      bestCost = cost;
      best = e;
    }
  }
  // Unreachable while overlapStart leaves room to pass the previous cut, but a
  // forced cut is better than an oversized chunk.
  return best === -1 ? hi : best;
}

/**
 * Where the window after [s, e) starts: overlapWords before e, but not inside
 * an unsplittable block or mid-line in code, and late enough that the window
 * can reach the first good cut after e. Otherwise, before a block that fits
 * in maxWords only without the overlap, windows would creep one word at a
 * time, each a near-duplicate of the last (and a long line of code would be
 * cut mid-line).
 */
function overlapStart(layout: Layout, s: number, e: number, b: number): number {
  const { penalty, opts } = layout;
  // Looking further than maxWords ahead cannot change the result (next ≤ e).
  let goodCut = e + 1;
  while (goodCut < b && goodCut <= e + opts.maxWords && penalty[goodCut] >= CODE_SPACE) goodCut++;
  let next = Math.min(e, Math.max(s + 1, e - opts.overlapWords, goodCut - opts.maxWords));
  // Moving forward only shortens the overlap.
  while (next < e && penalty[next] >= CODE_SPACE) next++;
  return next;
}

/**
 * Splits words [a, b) into windows of about targetWords with overlapWords of
 * overlap, each at most maxWords.
 */
function windowsOf(layout: Layout, a: number, b: number, heading: string | null, out: Span[]): void {
  const { opts } = layout;
  if (b - a <= opts.targetWords) {
    out.push({ from: a, to: b, heading });
    return;
  }
  const spans: Span[] = [];
  let s = a;
  let previousEnd = a;
  for (;;) {
    if (b - s <= opts.targetWords) {
      spans.push({ from: s, to: b, heading });
      break;
    }
    const e = pickCut(layout, s, b, previousEnd + 1);
    spans.push({ from: s, to: e, heading });
    if (e >= b) break;
    s = overlapStart(layout, s, e, b);
    previousEnd = e;
  }
  // The trailing piece counts only the words the previous window lacks: a tail
  // that is mostly overlap is a near-duplicate, not a chunk of its own.
  if (spans.length >= 2) {
    const last = spans[spans.length - 1];
    const prev = spans[spans.length - 2];
    if (last.to - prev.to < opts.minWords && last.to - prev.from <= opts.maxWords) {
      prev.to = last.to;
      spans.pop();
    }
  }
  for (const span of spans) out.push(span);
}

function toChunks(layout: Layout, spans: Span[]): Chunk[] {
  const { content, words } = layout;
  const chunks: Chunk[] = [];
  for (const span of spans) {
    if (span.to <= span.from) continue;
    let charStart = words.start[span.from];
    const charEnd = words.end[span.to - 1];
    if (layout.inCode(span.from)) {
      let p = charStart;
      while (p > 0 && (content.charCodeAt(p - 1) === 32 || content.charCodeAt(p - 1) === 9)) p--;
      if (p === 0 || content.charCodeAt(p - 1) === 10) charStart = p;
    }
    chunks.push({ ordinal: chunks.length, content: content.slice(charStart, charEnd), heading: span.heading, charStart, charEnd });
  }
  return chunks;
}

// ---------------------------------------------------------------------------
// Plain text and code

function chunkPlain(content: string, mode: 'prose' | 'code', opts: ChunkingOptions): Chunk[] {
  const words = tokenize(content);
  if (words.n === 0) return [];
  const penalty = new Float64Array(words.n);
  for (let i = 1; i < words.n; i++) {
    const { newlines, column } = gapShape(content, words.end[i - 1], words.start[i]);
    if (mode === 'code') {
      if (newlines === 2) penalty[i] = column === 0 ? CODE_TOP_LEVEL : CODE_BLANK_INDENTED;
      else if (newlines === 1) penalty[i] = column === 0 ? CODE_LINE_TOP_LEVEL : CODE_LINE;
      else penalty[i] = CODE_SPACE;
    } else if (newlines === 2) {
      penalty[i] = PARA;
    } else if (newlines === 1) {
      penalty[i] = LINE;
    } else {
      penalty[i] = endsSentence(content, words.end[i - 1], words.start[i - 1]) ? SENTENCE : SPACE;
    }
  }
  const layout: Layout = { content, words, penalty, opts, inCode: () => mode === 'code' };
  const spans: Span[] = [];
  windowsOf(layout, 0, words.n, null, spans);
  return toChunks(layout, spans);
}

// ---------------------------------------------------------------------------
// Markdown

interface Section {
  from: number;
  to: number;
  /** First word after the heading; equals `to` when the section is only a heading. */
  bodyFrom: number;
  path: string[];
}

function headingOf(path: readonly string[]): string | null {
  const parts = path.filter((p) => p.length > 0);
  return parts.length === 0 ? null : parts.join(HEADING_SEPARATOR);
}

function commonPrefix(a: readonly string[], b: readonly string[]): string[] {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return a.slice(0, i);
}

function chunkMarkdown(content: string, opts: ChunkingOptions): Chunk[] {
  const words = tokenize(content);
  if (words.n === 0) return [];
  const { fences, headings } = outlineMarkdown(content);
  const { n, start, end } = words;

  // Which fence each word belongs to (-1 for none); both lists are in document order.
  const fenceOf = new Int32Array(n).fill(-1);
  const fenceWords = new Int32Array(fences.length);
  for (let w = 0, f = 0; w < n && f < fences.length; w++) {
    while (f < fences.length && fences[f].end <= start[w]) f++;
    if (f < fences.length && start[w] >= fences[f].start) {
      fenceOf[w] = f;
      fenceWords[f]++;
    }
  }

  const penalty = new Float64Array(n);
  for (let i = 1; i < n; i++) {
    const f = fenceOf[i];
    if (f !== fenceOf[i - 1]) {
      penalty[i] = PARA;
      continue;
    }
    const { newlines } = gapShape(content, end[i - 1], start[i]);
    if (f >= 0) {
      // A block that fits is kept whole; a larger one may only be cut between lines.
      if (fenceWords[f] <= opts.maxWords) penalty[i] = NEVER;
      else penalty[i] = newlines === 2 ? PARA : newlines === 1 ? LINE : CODE_SPACE;
    } else if (newlines === 2) {
      penalty[i] = PARA;
    } else if (newlines === 1) {
      penalty[i] = LINE;
    } else {
      penalty[i] = endsSentence(content, end[i - 1], start[i - 1]) ? SENTENCE : SPACE;
    }
  }

  // Sections: text before the first heading, then one per heading.
  const sections: Section[] = [];
  const stack: HeadingSpan[] = [];
  let w = 0;
  const firstHeadingStart = headings.length > 0 ? headings[0].start : content.length;
  while (w < n && start[w] < firstHeadingStart) w++;
  if (w > 0) sections.push({ from: 0, to: w, bodyFrom: 0, path: [] });
  for (let h = 0; h < headings.length; h++) {
    const heading = headings[h];
    while (stack.length > 0 && stack[stack.length - 1].level >= heading.level) stack.pop();
    stack.push(heading);
    const from = w;
    const nextStart = h + 1 < headings.length ? headings[h + 1].start : content.length;
    while (w < n && start[w] < heading.end) w++;
    const bodyFrom = w;
    while (w < n && start[w] < nextStart) w++;
    if (w > from) sections.push({ from, to: w, bodyFrom, path: stack.map((x) => x.text) });
  }

  for (const section of sections) {
    if (section.path.length > 0 && section.bodyFrom < n) penalty[section.bodyFrom] = Math.max(penalty[section.bodyFrom], AFTER_HEADING);
  }

  const layout: Layout = { content, words, penalty, opts, inCode: (word) => fenceOf[word] >= 0 };
  const spans: Span[] = [];

  // Small adjacent sections are merged while the total stays within
  // targetWords. A section may join a group when it shares the first section's
  // parent heading: it is the first section's descendant, its sibling, or a
  // sibling's descendant; top-level siblings (no shared heading) and text
  // before the first heading are never merged. The merged chunk's heading is
  // the common parent of the sections that have body text, so "# Install"
  // immediately followed by "## Linux" and its text is headed
  // "Install > Linux", while "### Debian" + "### Fedora" becomes
  // "Install > Linux".
  interface Group {
    from: number;
    to: number;
    firstPath: string[];
    sharedPath: string[];
    bodyPath: string[] | null;
  }
  let group: Group | null = null;
  const flush = (): void => {
    if (group !== null) spans.push({ from: group.from, to: group.to, heading: headingOf(group.bodyPath ?? group.sharedPath) });
    group = null;
  };
  for (const section of sections) {
    const hasBody = section.bodyFrom < section.to;
    const current: Group | null = group;
    if (current !== null && current.firstPath.length > 0) {
      const shared = commonPrefix(current.sharedPath, section.path);
      if (section.to - current.from <= opts.targetWords && shared.length >= Math.max(1, current.firstPath.length - 1)) {
        current.to = section.to;
        current.sharedPath = shared;
        if (hasBody) current.bodyPath = current.bodyPath === null ? section.path : commonPrefix(current.bodyPath, section.path);
        continue;
      }
    }
    let from = section.from;
    // Parent headings with no text of their own ("# Install" directly followed
    // by "## Linux") would be a chunk of bare headings; they lead into the
    // descendant section instead, which then gives the heading.
    if (current !== null && current.bodyPath === null && commonPrefix(current.sharedPath, section.path).length === current.sharedPath.length && current.sharedPath.length > 0) {
      from = current.from;
      group = null;
    } else {
      flush();
    }
    if (section.to - from > opts.targetWords) {
      windowsOf(layout, from, section.to, headingOf(section.path), spans);
      continue;
    }
    group = { from, to: section.to, firstPath: section.path, sharedPath: section.path, bodyPath: hasBody ? section.path : null };
  }
  flush();
  return toChunks(layout, spans);
}
