import zlib from 'node:zlib';
import type { ContentType } from '../chunking/chunker';

/** The file kinds whose text is extracted on the workers; the others are text already. */
export type BinaryKind = 'pdf' | 'docx';

export interface ExtractionLimits {
  /** A PDF with more pages is refused before any page is read. */
  maxPages: number;
  /** A DOCX whose parts would expand to more bytes is refused before mammoth opens it. */
  maxExpandedBytes: number;
}

/** Why a file gives no text to index; each a document `error_code`, none worth retrying. */
export const FILE_ERROR_CODES = ['no_text_found', 'file_encrypted', 'file_unreadable', 'too_many_pages', 'file_too_large_expanded'] as const;
export type FileErrorCode = (typeof FILE_ERROR_CODES)[number];

export type Extracted =
  | {
      ok: true;
      text: string;
      /** How the text is chunked: a DOCX becomes HTML, so its headings survive. */
      contentType: ContentType;
      /** PDF: the offset in `text` where each page begins (page n at index n − 1). */
      pageStarts: number[] | null;
    }
  | { ok: false; code: FileErrorCode; message: string };

/** Zip entries a DOCX may hold (Word writes a few dozen). */
const MAX_ZIP_ENTRIES = 2_000;
/** No part of a real DOCX is compressed more than this: XML is ~10×; a bomb is ~1000×. */
const MAX_COMPRESSION_RATIO = 200;

const refused = (code: FileErrorCode, message: string): Extracted => ({ ok: false, code, message });

/** The text of a PDF or DOCX. Runs in the indexing pool's threads, under their deadline. */
export async function extractText(kind: BinaryKind, bytes: Uint8Array, limits: ExtractionLimits): Promise<Extracted> {
  return kind === 'pdf' ? extractPdf(bytes, limits) : extractDocx(bytes, limits);
}

async function extractPdf(bytes: Uint8Array, limits: ExtractionLimits): Promise<Extracted> {
  const pdfjs = await import('pdfjs-dist/legacy/build/pdf.mjs');
  let document;
  try {
    document = await pdfjs.getDocument({ data: bytes, isEvalSupported: false, disableFontFace: true, useSystemFonts: false, verbosity: 0 }).promise;
  } catch (error) {
    const name = (error as { name?: string }).name;
    if (name === 'PasswordException') return refused('file_encrypted', 'The PDF is encrypted with a password; upload it unprotected.');
    return refused('file_unreadable', `The PDF cannot be read: ${(error as Error).message}`);
  }
  try {
    if (document.numPages > limits.maxPages) {
      return refused('too_many_pages', `The PDF has ${document.numPages} pages; at most ${limits.maxPages} (UPLOAD_MAX_PAGES) are indexed.`);
    }
    const pageStarts: number[] = [];
    let text = '';
    for (let number = 1; number <= document.numPages; number++) {
      const page = await document.getPage(number);
      const content = await page.getTextContent();
      pageStarts.push(text.length);
      for (const item of content.items) {
        if (!('str' in item)) continue;
        text += item.str;
        if (item.hasEOL) text += '\n';
      }
      text += '\n\n';
      page.cleanup();
    }
    if (text.trim().length === 0) return refused('no_text_found', 'The PDF has no text layer (a scan?); run OCR on it and upload the result.');
    return { ok: true, text, contentType: 'text', pageStarts };
  } catch (error) {
    return refused('file_unreadable', `The PDF cannot be read: ${(error as Error).message}`);
  } finally {
    await document.destroy();
  }
}

async function extractDocx(bytes: Uint8Array, limits: ExtractionLimits): Promise<Extracted> {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const problem = inspectZip(buffer, limits.maxExpandedBytes);
  if (problem) return problem;
  const mammoth = await import('mammoth');
  let html: string;
  try {
    html = (await mammoth.convertToHtml({ buffer })).value;
  } catch (error) {
    return refused('file_unreadable', `The DOCX cannot be read: ${(error as Error).message}`);
  }
  if (html.replace(/<[^>]*>/g, '').trim().length === 0) return refused('no_text_found', 'The DOCX has no text.');
  return { ok: true, text: html, contentType: 'html', pageStarts: null };
}

/**
 * Reads the zip's central directory and inflates every part with its
 * declared size as the most it may produce, before mammoth sees the file:
 * too many entries, too much in all, a part compressed like a bomb, a part
 * that inflates past what it declares, or an XML part with a DTD (the door
 * to entity expansion; Word never writes one) — each is refused here.
 */
function inspectZip(zip: Buffer, maxExpandedBytes: number): Extracted | null {
  const unreadable = (why: string) => refused('file_unreadable', `The DOCX is not a readable zip: ${why}.`);
  const end = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  if (end < 0 || end + 22 > zip.length) return unreadable('no end of central directory');
  const entries = zip.readUInt16LE(end + 10);
  let offset = zip.readUInt32LE(end + 16);
  if (entries > MAX_ZIP_ENTRIES) return refused('file_too_large_expanded', `The DOCX holds ${entries} parts; at most ${MAX_ZIP_ENTRIES}.`);
  let expanded = 0;
  let hasDocument = false;
  for (let index = 0; index < entries; index++) {
    if (offset + 46 > zip.length || zip.readUInt32LE(offset) !== 0x02014b50) return unreadable('a broken central directory');
    const method = zip.readUInt16LE(offset + 10);
    const compressedSize = zip.readUInt32LE(offset + 20);
    const size = zip.readUInt32LE(offset + 24);
    const nameLength = zip.readUInt16LE(offset + 28);
    const extraLength = zip.readUInt16LE(offset + 30);
    const commentLength = zip.readUInt16LE(offset + 32);
    const localOffset = zip.readUInt32LE(offset + 42);
    const name = zip.toString('utf8', offset + 46, offset + 46 + nameLength);
    offset += 46 + nameLength + extraLength + commentLength;
    if (size === 0xffffffff || compressedSize === 0xffffffff) return refused('file_too_large_expanded', 'The DOCX uses zip64 sizes; no real document needs them.');
    expanded += size;
    if (expanded > maxExpandedBytes) return refused('file_too_large_expanded', `The DOCX expands to more than ${maxExpandedBytes} bytes (UPLOAD_MAX_EXPANDED_BYTES).`);
    if (compressedSize > 0 && size / compressedSize > MAX_COMPRESSION_RATIO) {
      return refused('file_too_large_expanded', `The DOCX part ${name} is compressed ${Math.round(size / compressedSize)}:1; at most ${MAX_COMPRESSION_RATIO}:1.`);
    }
    if (name === 'word/document.xml') hasDocument = true;
    if (localOffset + 30 > zip.length || zip.readUInt32LE(localOffset) !== 0x04034b50) return unreadable(`no local header for ${name}`);
    const dataStart = localOffset + 30 + zip.readUInt16LE(localOffset + 26) + zip.readUInt16LE(localOffset + 28);
    const data = zip.subarray(dataStart, dataStart + compressedSize);
    let content: Buffer;
    try {
      if (method === 0) content = data;
      else if (method === 8) content = zlib.inflateRawSync(data, { maxOutputLength: Math.max(size, 1) });
      else return unreadable(`${name} uses compression method ${method}`);
    } catch (error) {
      if ((error as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') return refused('file_too_large_expanded', `The DOCX part ${name} inflates past its declared size.`);
      return unreadable(`${name} does not inflate`);
    }
    if (/\.(xml|rels)$/.test(name) && /<!(DOCTYPE|ENTITY)/i.test(content.toString('latin1'))) {
      return refused('file_unreadable', `The DOCX part ${name} declares a DTD; Word never writes one, and its entities could expand without bound.`);
    }
  }
  return hasDocument ? null : unreadable('no word/document.xml: not a Word document');
}
