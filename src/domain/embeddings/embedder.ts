/** Turns texts into fixed-length vectors; one vector per input, in input order. */
export interface Embedder {
  /** Stored with each vector so vectors from different models are never compared. */
  readonly model: string;
  readonly dimensions: number;
  /**
   * Set by an embedder that is pure computation: the indexer then embeds in
   * its worker threads, with the embedder this names, instead of on the
   * event loop.
   */
  readonly local?: 'hashing';
  embed(texts: string[], signal?: AbortSignal): Promise<number[][]>;
}

export class EmbeddingError extends Error {
  override readonly name = 'EmbeddingError';

  /**
   * `retryable` tells a job runner whether trying again later may succeed
   * (provider overloaded or unreachable) or cannot (bad request, wrong model
   * configuration).
   */
  constructor(
    message: string,
    readonly retryable: boolean,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}
