import type { Knex } from 'knex';
import type { EventSink } from './events';
import { recordEvent, recordEvents } from './events';
import type { EventType } from './event-types';

/** The state of a document as events carry it: never its content. */
export interface DocumentState {
  id: string;
  title: string;
  content_type: string;
  tags: string[];
  metadata: Record<string, unknown>;
  source_url: string | null;
  external_id: string | null;
  status: string;
  version: number;
  chunk_count: number;
  error: string | null;
  error_code?: string | null;
  last_index_job_id?: string | null;
  indexed_at?: Date | string | null;
  created_at: Date | string;
  updated_at: Date | string;
}

const iso = (value: Date | string | null | undefined) => (value instanceof Date ? value.toISOString() : (value ?? null));

export function documentEventData(document: DocumentState): Record<string, unknown> {
  return {
    id: document.id,
    title: document.title,
    content_type: document.content_type,
    tags: document.tags,
    metadata: document.metadata,
    source_url: document.source_url,
    external_id: document.external_id,
    status: document.status,
    version: document.version,
    chunk_count: document.chunk_count,
    error: document.error,
    error_code: document.error_code ?? null,
    job_id: document.last_index_job_id ?? null,
    indexed_at: iso(document.indexed_at),
    created_at: iso(document.created_at),
    updated_at: iso(document.updated_at),
  };
}

export function recordDocumentEvent(trx: Knex.Transaction, sink: EventSink, tenantId: string, type: EventType, document: DocumentState) {
  return recordEvent(trx, sink, tenantId, type, documentEventData(document));
}

/** The same event for many documents, stored in bulk (see recordEvents). */
export function recordDocumentEvents(trx: Knex.Transaction, sink: EventSink, tenantId: string, type: EventType, documents: DocumentState[]) {
  return recordEvents(trx, sink, tenantId, type, documents.map(documentEventData));
}
