import path from 'node:path';
import type { Knex } from 'knex';
import { AppError, notFound } from '../../errors';
import { withTenant } from '../../db/tenant-scope';
import type { ContentType } from '../chunking/chunker';
import type { BinaryKind } from './extract';

/** What an upload is, decided from its bytes first and its name second. */
export type DetectedFile = { kind: BinaryKind; mediaType: string } | { kind: 'text'; contentType: ContentType; mediaType: string; text: string };

const PDF_MAGIC = Buffer.from('%PDF-');
const ZIP_MAGIC = Buffer.from([0x50, 0x4b, 0x03, 0x04]);

const MARKDOWN = new Set(['.md', '.markdown', '.mdx']);
const HTML = new Set(['.html', '.htm', '.xhtml']);
const PLAIN = new Set(['', '.txt', '.text', '.log', '.rst', '.adoc', '.csv', '.tsv']);
const CODE = new Set([
  '.ts', '.tsx', '.js', '.jsx', '.mjs', '.cjs', '.py', '.rb', '.go', '.rs', '.java', '.kt', '.scala', '.c', '.h', '.cc', '.cpp', '.hpp', '.cs',
  '.swift', '.php', '.sh', '.bash', '.sql', '.json', '.yaml', '.yml', '.toml', '.ini', '.css', '.scss', '.vue', '.svelte', '.lua', '.r', '.pl', '.ex', '.exs', '.hs', '.dart', '.zig',
]);

/** The extensions an upload may have (a PDF is one by its bytes whatever its name); what the CLI's import picks up. */
export const UPLOAD_EXTENSIONS: ReadonlySet<string> = new Set(['.pdf', '.docx', ...MARKDOWN, ...HTML, ...[...PLAIN].filter(Boolean), ...CODE]);

const unsupported = (message: string) => new AppError(415, 'unsupported_media_type', message, { supported: ['pdf', 'docx', 'html', 'markdown', 'text', 'code'] });

/**
 * The type of an uploaded file from its magic number, then its name: `%PDF-`
 * is a PDF whatever it is called; a zip named `.docx` a Word document (its
 * parts are checked on the worker); anything else must be UTF-8 text without
 * NUL, typed by its extension (HTML also by its first tag). What the client
 * says the type is counts for nothing.
 */
export function detectFile(filename: string, bytes: Buffer): DetectedFile {
  const extension = path.extname(filename).toLowerCase();
  if (bytes.subarray(0, PDF_MAGIC.length).equals(PDF_MAGIC)) return { kind: 'pdf', mediaType: 'application/pdf' };
  if (bytes.subarray(0, ZIP_MAGIC.length).equals(ZIP_MAGIC)) {
    if (extension === '.docx') return { kind: 'docx', mediaType: 'application/vnd.openxmlformats-officedocument.wordprocessingml.document' };
    throw unsupported(`"${filename}" is a zip archive; of those only Word documents (.docx) are taken.`);
  }
  if (extension === '.pdf' || extension === '.docx') throw unsupported(`"${filename}" is named ${extension} but its bytes are not a ${extension.slice(1).toUpperCase()} file.`);
  const text = decodeText(bytes);
  if (text === null) throw unsupported(`"${filename}" is neither PDF, DOCX nor UTF-8 text.`);
  const html = HTML.has(extension) || /^\s*<(!doctype html|html)[\s>]/i.test(text.slice(0, 512));
  if (html) return { kind: 'text', contentType: 'html', mediaType: 'text/html; charset=utf-8', text };
  if (MARKDOWN.has(extension)) return { kind: 'text', contentType: 'markdown', mediaType: 'text/markdown; charset=utf-8', text };
  if (CODE.has(extension)) return { kind: 'text', contentType: 'code', mediaType: 'text/plain; charset=utf-8', text };
  if (PLAIN.has(extension)) return { kind: 'text', contentType: 'text', mediaType: 'text/plain; charset=utf-8', text };
  throw unsupported(`"${filename}" has the extension ${extension}, which is none of the supported kinds.`);
}

/** UTF-8 text (a byte-order mark dropped), or null for anything else: invalid UTF-8, or a NUL, which only binary files carry. */
function decodeText(bytes: Buffer): string | null {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    return null;
  }
  return text.includes('\u0000') ? null : text;
}

export function isBinaryKind(contentType: string): contentType is BinaryKind {
  return contentType === 'pdf' || contentType === 'docx';
}

export interface StoredFile {
  filename: string;
  media_type: string;
  data: Buffer;
}

/** The original of an uploaded document; 404 for a document posted as JSON, or another tenant's. */
export async function getDocumentFile(db: Knex, tenantId: string, documentId: string): Promise<StoredFile> {
  const file = await withTenant(db, tenantId, (trx) => trx('document_files').first('filename', 'media_type', 'data').where({ tenant_id: tenantId, document_id: documentId }));
  if (!file) throw notFound('File');
  return file;
}

/** The bytes the worker extracts text from. */
export async function readFileBytes(db: Knex, tenantId: string, documentId: string): Promise<Uint8Array> {
  const file = await withTenant(db, tenantId, (trx) => trx('document_files').first('data').where({ tenant_id: tenantId, document_id: documentId }));
  if (!file) throw new Error(`the original file of document ${documentId} is missing`);
  return new Uint8Array(file.data);
}
