import { cancelIndexJob, getIndexJob, listIndexJobs, requestIndexing } from '../../domain/indexing/jobs';
import type { Platform } from '../../platform';
import type { Api } from '../route';
import { idParams, indexBatchRequest, indexJobDetailSchema, indexJobListQuery, indexJobPage, indexJobSchema, indexRequest } from '../schemas';

const tag = 'Indexing';
const read = { scope: 'documents:read', tenant: 'required' } as const;
const write = { scope: 'documents:write', tenant: 'required' } as const;


/** What the indexing routes use of the platform, wired in by the app (src/http/app.ts). */
export type IndexingServices = Pick<Platform, 'db' | 'documentDeps' | 'events' | 'logger' | 'withdrawIndexing'>;

export function indexingRoutes(api: Api, services: IndexingServices): void {
  api.add({
    method: 'post', path: '/api/index', operationId: 'indexDocument', summary: 'Index one document (again with force_reindex)', tag, auth: write,
    audit: { action: 'document.index', target: ({ body }) => body?.document_id },
    body: indexRequest,
    responses: { 202: { description: 'The index job', schema: indexJobSchema }, 404: { description: 'No such document' } },
    handler: async ({ body, ctx }) => ({
      status: 202,
      body: await requestIndexing(services.documentDeps(), ctx.tenant!.id, [body.document_id], body.force_reindex),
    }),
  });
  api.add({
    method: 'post', path: '/api/index/batch', operationId: 'indexDocuments', summary: 'Index up to 1000 documents as one job', tag, auth: write,
    audit: { action: 'document.index_batch', details: ({ body }) => ({ documents: body?.document_ids.length }) },
    body: indexBatchRequest,
    responses: { 202: { description: 'The index job', schema: indexJobSchema }, 404: { description: 'Some documents do not exist' } },
    handler: async ({ body, ctx }) => ({
      status: 202,
      body: await requestIndexing(services.documentDeps(), ctx.tenant!.id, body.document_ids, body.force_reindex),
    }),
  });
  api.add({
    method: 'get', path: '/api/index/jobs', operationId: 'listIndexJobs', summary: 'List index jobs', tag, auth: read,
    query: indexJobListQuery,
    responses: { 200: { description: 'A page of index jobs', schema: indexJobPage } },
    handler: async ({ query, ctx }) => {
      const { limit, cursor, status } = query;
      return { status: 200, body: await listIndexJobs(services.db.knex, ctx.tenant!.id, { status }, { limit, cursor }) };
    },
  });
  api.add({
    method: 'get', path: '/api/index/jobs/:id', operationId: 'getIndexJob', summary: 'An index job with its progress and per-document outcome', tag, auth: read,
    params: idParams,
    responses: { 200: { description: 'The index job', schema: indexJobDetailSchema }, 404: { description: 'No such job' } },
    handler: async ({ params, ctx }) => ({ status: 200, body: await getIndexJob(services.db.knex, ctx.tenant!.id, params.id) }),
  });
  api.add({
    method: 'post', path: '/api/index/jobs/:id/cancel', operationId: 'cancelIndexJob', summary: 'Cancel a queued or running index job', tag, auth: write,
    audit: { action: 'index_job.cancel', target: ({ params }) => params?.id },
    params: idParams,
    responses: {
      200: { description: 'Canceled', schema: indexJobSchema },
      404: { description: 'No such job' },
      409: { description: 'The job has already finished' },
    },
    handler: async ({ params, ctx }) => {
      const { job, canceled } = await cancelIndexJob(services.db.knex, services.events, ctx.tenant!.id, params.id);
      await services.withdrawIndexing(canceled).catch((error) => services.logger.warn({ err: error }, 'could not withdraw canceled indexing jobs'));
      return { status: 200, body: job };
    },
  });
}
