/** One document version to index for one index job. */
export interface IndexingWork {
  tenantId: string;
  indexJobId: string;
  documentId: string;
  version: number;
}

/**
 * Hands work to the indexing queue. Domain code calls it after its
 * transaction commits; the queue layer implements it.
 */
export type DispatchIndexing = (work: IndexingWork[]) => Promise<void>;
