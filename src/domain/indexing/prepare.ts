import { chunkDocument, type Chunk, type ChunkingOptions, type ContentType } from '../chunking/chunker';
import { embedText } from '../embeddings/hashing';
import { extractText, type BinaryKind, type ExtractionLimits, type FileErrorCode } from '../files/extract';

export interface PrepareInput {
  title: string;
  content: string;
  contentType: ContentType;
  chunking: ChunkingOptions;
  /** Embed each chunk with the built-in hashing embedder at this size; null leaves embedding to the caller. */
  hashDimensions: number | null;
}

export interface PreparedDocument {
  chunks: Chunk[];
  /** Chunk i's vector at [i × dimensions, (i + 1) × dimensions), when hashDimensions was given: one buffer copies fast between threads. */
  vectors: Float64Array | null;
}

/**
 * The CPU-bound part of indexing a document: chunking (with HTML
 * extraction) and, for the built-in embedder, embedding. Runs in the
 * indexing pool's threads (see cpu-thread.ts), never on the event loop.
 */
export function prepareDocument(input: PrepareInput): PreparedDocument {
  const chunks = chunkDocument(input.content, input.contentType, input.chunking);
  const dimensions = input.hashDimensions;
  if (dimensions === null) return { chunks, vectors: null };
  const vectors = new Float64Array(chunks.length * dimensions);
  chunks.forEach((chunk, index) => vectors.set(embedText(embeddingText(input.title, chunk), dimensions), index * dimensions));
  return { chunks, vectors };
}

export interface PrepareFileInput extends Omit<PrepareInput, 'content' | 'contentType'> {
  kind: BinaryKind;
  bytes: Uint8Array;
  limits: ExtractionLimits;
}

/** A file's chunks, or why it has none (refusals are answers, not errors: a thread's errors lose their class on the way back). */
export type PreparedFile = { ok: true; prepared: PreparedDocument } | { ok: false; code: FileErrorCode; message: string };

/** An uploaded PDF or DOCX: its text extracted, then prepared as any document; PDF chunks learn their page. */
export async function prepareFile(input: PrepareFileInput): Promise<PreparedFile> {
  const extracted = await extractText(input.kind, input.bytes, input.limits);
  if (!extracted.ok) return extracted;
  const prepared = prepareDocument({ ...input, content: extracted.text, contentType: extracted.contentType });
  const starts = extracted.pageStarts;
  if (starts) for (const chunk of prepared.chunks) chunk.page = pageAt(starts, chunk.charStart);
  return { ok: true, prepared };
}

/** The 1-based page whose text contains `offset`, by binary search over the pages' starting offsets. */
function pageAt(starts: readonly number[], offset: number): number {
  let low = 0;
  let high = starts.length - 1;
  while (low < high) {
    const middle = Math.ceil((low + high) / 2);
    if (starts[middle] <= offset) low = middle;
    else high = middle - 1;
  }
  return low + 1;
}

/** The text an embedding is computed from: the chunk with its document title and heading for context. */
export function embeddingText(title: string, chunk: Chunk): string {
  return [title, chunk.heading, chunk.content].filter(Boolean).join('\n');
}
