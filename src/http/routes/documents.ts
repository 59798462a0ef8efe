import { createDocuments, deleteDocument, DOCUMENT_LIMITS, getDocument, listDocuments, updateDocument } from '../../domain/documents/documents';
import type { Platform } from '../../platform';
import { tenantStats } from '../../domain/documents/stats';
import { AppError } from '../../errors';
import { replied, repliedId } from '../audit-trail';
import type { Api } from '../route';
import {
  documentBatch,
  documentDetailSchema,
  documentInput,
  documentListQuery,
  documentPage,
  documentPatch,
  documentSummarySchema,
  idParams,
} from '../schemas';
import { z } from 'zod';

const tag = 'Documents';
const read = { scope: 'documents:read', tenant: 'required' } as const;
const write = { scope: 'documents:write', tenant: 'required' } as const;

/** Content over the limit is 413, not 400: the request is well formed but too large. */
function assertContentSize(documents: unknown[]): void {
  documents.forEach((document, index) => {
    const content = (document as { content?: unknown } | null)?.content;
    if (typeof content === 'string' && Buffer.byteLength(content, 'utf8') > DOCUMENT_LIMITS.contentBytes) {
      throw new AppError(413, 'payload_too_large', `A document's content may be at most ${DOCUMENT_LIMITS.contentBytes} bytes.`, {
        index,
        limit_bytes: DOCUMENT_LIMITS.contentBytes,
      });
    }
  });
}


/** What the documents routes use of the platform, wired in by the app (src/http/app.ts). */
export type DocumentsServices = Pick<Platform, 'config' | 'db' | 'documentDeps' | 'searchQuota'>;

export function documentRoutes(api: Api, services: DocumentsServices): void {
  api.add({
    method: 'post', path: '/api/documents', operationId: 'createDocument', summary: 'Add a document; it is indexed asynchronously', tag, auth: write,
    body: documentInput,
    responses: {
      202: { description: 'Accepted and queued for indexing', schema: documentSummarySchema },
      409: { description: 'external_id already used' },
      413: { description: 'Content too large' },
    },
    audit: { action: 'document.create', target: repliedId },
    handler: async ({ body, ctx, req }) => {
      assertContentSize([req.body]);
      const [document] = await createDocuments(services.documentDeps(), ctx.tenant!.id, [body], ctx.tenant!.quotas);
      return { status: 202, body: document, headers: { Location: `/api/documents/${document.id}` } };
    },
  });
  api.add({
    method: 'post', path: '/api/documents/batch', operationId: 'createDocuments', summary: 'Add 1 to 1000 documents as one index job', tag, auth: write,
    body: documentBatch,
    responses: { 202: { description: 'Accepted', schema: z.object({ items: z.array(documentSummarySchema), job_id: z.uuid() }) } },
    audit: { action: 'document.create_batch', target: ({ reply }) => replied(reply, 'job_id') as string | undefined, details: ({ body }) => ({ documents: body?.documents.length }) },
    handler: async ({ body, ctx, req }) => {
      const raw = (req.body as { documents?: unknown }).documents;
      assertContentSize(Array.isArray(raw) ? raw : []);
      const items = await createDocuments(services.documentDeps(), ctx.tenant!.id, body.documents, ctx.tenant!.quotas);
      return { status: 202, body: { items, job_id: items[0].job_id } };
    },
  });
  api.add({
    method: 'get', path: '/api/documents', operationId: 'listDocuments', summary: 'List documents (without content)', tag, auth: read,
    query: documentListQuery,
    responses: { 200: { description: 'A page of documents', schema: documentPage } },
    handler: async ({ query, ctx }) => {
      const { limit, cursor, ...filters } = query;
      return { status: 200, body: await listDocuments(services.db.knex, ctx.tenant!.id, filters, { limit, cursor }) };
    },
  });
  api.add({
    method: 'get', path: '/api/documents/:id', operationId: 'getDocument', summary: 'Get a document with its indexing state', tag, auth: read,
    params: idParams,
    responses: { 200: { description: 'The document', schema: documentDetailSchema }, 404: { description: 'No such document' } },
    handler: async ({ params, ctx }) => ({ status: 200, body: await getDocument(services.db.knex, ctx.tenant!.id, params.id) }),
  });
  api.add({
    method: 'patch', path: '/api/documents/:id', operationId: 'updateDocument', summary: 'Change a document; new title or content is re-indexed', tag, auth: write,
    params: idParams, body: documentPatch,
    responses: {
      200: { description: 'Changed; no re-indexing needed', schema: documentSummarySchema },
      202: { description: 'Changed; the new version is queued for indexing', schema: documentSummarySchema },
      404: { description: 'No such document' },
      413: { description: 'Content too large' },
    },
    audit: { action: 'document.update' },
    handler: async ({ params, body, ctx, req }) => {
      assertContentSize([req.body]);
      const { document, reindexed } = await updateDocument(services.documentDeps(), ctx.tenant!.id, params.id, body, ctx.tenant!.quotas);
      return { status: reindexed ? 202 : 200, body: document };
    },
  });
  api.add({
    method: 'delete', path: '/api/documents/:id', operationId: 'deleteDocument', summary: 'Delete a document and its chunks', tag, auth: write,
    params: idParams,
    responses: { 204: { description: 'Deleted' }, 404: { description: 'No such document' } },
    audit: { action: 'document.delete' },
    handler: async ({ params, ctx }) => {
      await deleteDocument(services.documentDeps(), ctx.tenant!.id, params.id);
      return { status: 204 };
    },
  });
  api.add({
    method: 'get', path: '/api/stats', operationId: 'getTenantStats', summary: "The tenant's documents, chunks, index jobs and searches today", tag, auth: read,
    responses: { 200: { description: 'Counts; `searches` is today\'s (UTC), the count `searches_per_day` limits' } },
    handler: async ({ ctx }) => {
      const [stats, searches] = await Promise.all([
        tenantStats(services.db.knex, ctx.tenant!.id),
        services.searchQuota.used(ctx.tenant!.id),
      ]);
      return { status: 200, body: { ...stats, searches } };
    },
  });
}
