import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { mulberry32 } from './settings';

/**
 * The benchmark corpus: README files of the packages under node_modules —
 * real markdown of every size and style, already on disk, no download.
 */

export interface CorpusDocument {
  title: string;
  content: string;
  /** Where it came from: the README's path under the root, with `#n` for the n-th section of a split README. */
  source: string;
}

export interface Corpus {
  root: string;
  documents: CorpusDocument[];
  /** README files found under the root, before any filter. */
  filesFound: number;
  /** Distinct files within the size bounds. */
  filesUsed: number;
  /** Files cut into their sections because there were fewer files than the target. */
  filesSplit: number;
  totalBytes: number;
  averageWords: number;
}

export interface CorpusOptions {
  root: string;
  target: number;
  minBytes: number;
  maxBytes: number;
}

interface SourceFile {
  relative: string;
  text: string;
  bytes: number;
}

const README = /^readme\.(md|markdown)$/i;

export function loadCorpus(options: CorpusOptions): Corpus {
  const found: string[] = [];
  walk(options.root, found);
  found.sort();

  const seen = new Set<string>();
  const files: SourceFile[] = [];
  for (const file of found) {
    const buffer = fs.readFileSync(file);
    if (buffer.length < options.minBytes || buffer.length > options.maxBytes) continue;
    const hash = createHash('sha256').update(buffer).digest('hex');
    if (seen.has(hash)) continue;
    seen.add(hash);
    const text = buffer.toString('utf8');
    // PostgreSQL text cannot hold NUL; the API refuses such content.
    if (text.includes('\u0000') || text.trim().length === 0) continue;
    files.push({ relative: path.relative(options.root, file), text, bytes: buffer.length });
  }

  // A node_modules with fewer READMEs than the target is cut finer rather
  // than padded with copies: the largest READMEs are split at their
  // headings, one document per section, until there are enough documents.
  // The text indexed stays the same real text either way.
  const pieces = new Map<SourceFile, string[]>(files.map((file) => [file, [file.text]]));
  let count = files.length;
  let filesSplit = 0;
  const bySize = [...files].sort((a, b) => b.bytes - a.bytes || a.relative.localeCompare(b.relative));
  for (const file of bySize) {
    if (count >= options.target) break;
    const sections = splitSections(file.text, options.minBytes);
    if (sections.length < 2) continue;
    pieces.set(file, sections);
    count += sections.length - 1;
    filesSplit += 1;
  }

  const documents: CorpusDocument[] = [];
  for (const file of files) {
    const parts = pieces.get(file)!;
    const name = packageName(file.relative);
    parts.forEach((content, index) => {
      const heading = parts.length > 1 ? firstHeading(content) : null;
      documents.push({
        title: truncate(heading ? `${name} — ${heading}` : name, 500),
        content,
        source: parts.length > 1 ? `${file.relative}#${index + 1}` : file.relative,
      });
    });
  }
  const chosen = documents.slice(0, options.target);
  const totalBytes = chosen.reduce((sum, document) => sum + Buffer.byteLength(document.content), 0);
  const words = chosen.reduce((sum, document) => sum + countWords(document.content), 0);
  return {
    root: options.root,
    documents: chosen,
    filesFound: found.length,
    filesUsed: files.length,
    filesSplit,
    totalBytes,
    averageWords: chosen.length > 0 ? words / chosen.length : 0,
  };
}

/** Every README under a directory; symbolic links are not followed, so nothing is visited twice. */
function walk(directory: string, out: string[]): void {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(directory, { withFileTypes: true });
  } catch {
    return;
  }
  for (const entry of entries) {
    const full = path.join(directory, entry.name);
    if (entry.isDirectory()) walk(full, out);
    else if (entry.isFile() && README.test(entry.name)) out.push(full);
  }
}

/**
 * Splits markdown before each level 1–3 heading outside fenced code. A
 * section shorter than minBytes joins the next one, so every piece is a
 * readable document of its own.
 */
export function splitSections(text: string, minBytes: number): string[] {
  const sections: string[] = [];
  let current: string[] = [];
  let fenced = false;
  for (const line of text.split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    if (!fenced && /^#{1,3}\s/.test(line) && current.join('\n').trim().length > 0) {
      sections.push(current.join('\n'));
      current = [];
    }
    current.push(line);
  }
  if (current.length > 0) sections.push(current.join('\n'));

  const merged: string[] = [];
  let pending = '';
  for (const section of sections) {
    pending = pending ? `${pending}\n${section}` : section;
    if (Buffer.byteLength(pending) >= minBytes) {
      merged.push(pending);
      pending = '';
    }
  }
  if (pending.trim()) {
    if (merged.length > 0) merged[merged.length - 1] += `\n${pending}`;
    else merged.push(pending);
  }
  return merged;
}

/** `express/Readme.md` → `express`, `@scope/pkg/docs/README.md` → `@scope/pkg/docs`, nested node_modules collapsed. */
function packageName(relative: string): string {
  const directory = path.dirname(relative).split(path.sep).join('/');
  const afterLast = directory.split('/node_modules/').pop() ?? directory;
  return afterLast === '.' ? 'node_modules' : afterLast;
}

function firstHeading(markdown: string): string | null {
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    if (fenced) continue;
    const match = /^#{1,6}\s+(.*)$/.exec(line);
    if (match) {
      const text = plainText(match[1]);
      if (text) return text;
    }
  }
  return null;
}

/** Markdown inline syntax, HTML tags and stray symbols removed from a heading. */
function plainText(markdown: string): string {
  return markdown
    .replace(/!\[[^\]]*\]\([^)]*\)/g, ' ')
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/\[([^\]]*)\]\[[^\]]*\]/g, '$1')
    .replace(/<[^>]+>/g, ' ')
    .replace(/[`*_~#]/g, '')
    .replace(/\s+/g, ' ')
    .trim();
}

const STOP_WORDS = new Set(
  'a an and are as at be by for from how in into is it of on or the this that to with you your use using'.split(' '),
);

/**
 * Search phrases of two to four words taken from the corpus's titles and
 * headings, in a fixed pseudo-random order so every run asks the same ones.
 */
export function pickQueries(corpus: Corpus, count: number, seed = 20): string[] {
  const phrases = new Map<string, string>();
  const consider = (text: string) => {
    const words = plainText(text).match(/[A-Za-z][A-Za-z0-9]*(?:[.'+-][A-Za-z0-9]+)*/g) ?? [];
    if (words.length < 2) return;
    const phrase = words.slice(0, 4).join(' ');
    // At least one word that is not a stop word, else the query says nothing.
    if (!words.slice(0, 4).some((word) => word.length >= 3 && !STOP_WORDS.has(word.toLowerCase()))) return;
    const key = phrase.toLowerCase();
    if (!phrases.has(key)) phrases.set(key, phrase);
  };
  for (const document of corpus.documents) {
    consider(document.title.replace(/^.*? — /, ''));
    let fenced = false;
    for (const line of document.content.split('\n')) {
      if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
      const match = !fenced && /^#{1,6}\s+(.*)$/.exec(line);
      if (match) consider(match[1]);
    }
  }
  const all = [...phrases.values()];
  shuffle(all, mulberry32(seed));
  return all.slice(0, count);
}

function shuffle<T>(items: T[], random: () => number): void {
  for (let i = items.length - 1; i > 0; i -= 1) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
}

export function countWords(text: string): number {
  return text.split(/\s+/).filter(Boolean).length;
}

function truncate(value: string, max: number): string {
  return value.length > max ? `${value.slice(0, max - 1)}…` : value;
}
