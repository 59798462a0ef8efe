import { chunkDocument, type Chunk, type ChunkingOptions, type ContentType } from '../chunking/chunker';
import { embedText } from '../embeddings/hashing';

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

/** The text an embedding is computed from: the chunk with its document title and heading for context. */
export function embeddingText(title: string, chunk: Chunk): string {
  return [title, chunk.heading, chunk.content].filter(Boolean).join('\n');
}
