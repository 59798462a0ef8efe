import type { Response } from 'express';
import type { Platform } from '../../platform';
import { z } from 'zod';
import { badRequest } from '../../errors';
import {
  answerStats,
  EXPORT_COLUMNS,
  exportEvents,
  noResultQueries,
  popularQueries,
  searchStats,
  searchTimeseries,
  trendingQueries,
  userActivity,
} from '../../domain/analytics/reports';
import { csvRecord } from '../csv';
import type { Api } from '../route';
import { safeString } from '../schemas';

const tag = 'Analytics';
const auth = { scope: 'analytics:read', tenant: 'required' } as const;

const limit = z.coerce.number().int().min(1).max(100).default(10);
const days = z.coerce.number().int().min(1).max(400).default(30);
const instant = z.iso.datetime({ offset: true }).refine((value) => {
  const year = new Date(value).getUTCFullYear();
  return year >= 1970 && year <= 9999;
}, 'must be between 1970 and 9999');

/**
 * Writes respecting back-pressure: a slow client slows the export, memory
 * stays flat. Resolves false once the client has gone, so the export stops
 * reading pages (a closed response never emits 'drain' and would leave the
 * export waiting forever).
 */
async function write(res: Response, chunk: string): Promise<boolean> {
  if (res.destroyed) return false;
  if (res.write(chunk)) return true;
  if (res.destroyed) return false;
  await new Promise<void>((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
  return !res.destroyed;
}

/** What the analytics routes use of the platform, wired in by the app (src/http/app.ts). */
export type AnalyticsServices = Pick<Platform, 'config' | 'db' | 'reportRead'>;

export function analyticsRoutes(api: Api, services: AnalyticsServices): void {
  api.add({
    method: 'get', path: '/api/admin/analytics/popular', operationId: 'getPopularQueries', summary: 'Most searched queries', tag, auth,
    query: z.object({ limit, days }),
    responses: { 200: { description: 'Queries with their search counts' } },
    handler: async ({ query, ctx }) => ({ status: 200, body: { days: query.days, items: await services.reportRead((db) => popularQueries(db, ctx.tenant!.id, query)) } }),
  });
  api.add({
    method: 'get', path: '/api/admin/analytics/trending', operationId: 'getTrendingQueries', summary: 'Week-over-week growth; the formula is in the reply', tag, auth,
    query: z.object({ limit }),
    responses: { 200: { description: 'Growing queries, with this and last week’s counts' } },
    handler: async ({ query, ctx }) => ({
      status: 200,
      body: await services.reportRead((db) => trendingQueries(db, ctx.tenant!.id, { limit: query.limit, minVolume: services.config.ANALYTICS_TRENDING_MIN_VOLUME })),
    }),
  });
  api.add({
    method: 'get', path: '/api/admin/analytics/no-results', operationId: 'getNoResultQueries', summary: 'Queries that found nothing', tag, auth,
    query: z.object({ limit, days }),
    responses: { 200: { description: 'Queries with their counts of empty searches' } },
    handler: async ({ query, ctx }) => ({ status: 200, body: { days: query.days, items: await services.reportRead((db) => noResultQueries(db, ctx.tenant!.id, query)) } }),
  });
  api.add({
    method: 'get', path: '/api/admin/analytics/stats', operationId: 'getSearchStats', summary: 'Totals: searches, unique queries and users, latency, results, modes, cache hit ratio, click-through rate', tag, auth,
    query: z.object({ days }),
    responses: { 200: { description: 'Totals' } },
    handler: async ({ query, ctx }) => ({ status: 200, body: await services.reportRead((db) => searchStats(db, ctx.tenant!.id, query.days)) }),
  });
  api.add({
    method: 'get', path: '/api/admin/analytics/answers', operationId: 'getAnswerStats', summary: 'Answers: count, latency, no-citation rate, tokens, feedback and the latest answers rated down', tag, auth,
    query: z.object({ days }),
    responses: { 200: { description: 'Totals' } },
    handler: async ({ query, ctx }) => ({ status: 200, body: await services.reportRead((db) => answerStats(db, ctx.tenant!.id, query.days)) }),
  });
  api.add({
    method: 'get', path: '/api/admin/analytics/timeseries', operationId: 'getSearchTimeseries', summary: 'Searches per hour or day, empty buckets included', tag, auth,
    query: z.object({ start: instant, end: instant, interval: z.enum(['hour', 'day']).default('hour') }),
    responses: { 200: { description: 'Buckets' } },
    handler: async ({ query, ctx }) => ({ status: 200, body: await services.reportRead((db) => searchTimeseries(db, ctx.tenant!.id, query)) }),
  });
  api.add({
    method: 'get', path: '/api/admin/analytics/users/:user_id', operationId: 'getUserSearchActivity', summary: "One user's searching", tag, auth,
    params: z.object({ user_id: safeString({ min: 1, max: 200 }) }),
    query: z.object({ days }),
    responses: { 200: { description: 'Totals, favourite mode and top terms' } },
    handler: async ({ params, query, ctx }) => ({
      status: 200,
      body: await services.reportRead((db) => userActivity(db, ctx.tenant!.id, params.user_id, query.days)),
    }),
  });
  api.add({
    method: 'get', path: '/api/admin/analytics/export', operationId: 'exportSearchEvents', summary: 'Raw search events as CSV or JSON, streamed', tag, auth,
    query: z.object({ format: z.enum(['csv', 'json']).default('json'), start: instant, end: instant }),
    responses: { 200: { description: 'The events (text/csv or application/json)' } },
    handler: async ({ query, ctx }) => {
      // As for the time series: an empty or reversed range is a mistake, not an empty export.
      if (!(new Date(query.end) > new Date(query.start))) throw badRequest('`end` must be after `start`.', { field: 'end' });
      // On the primary: an export reads for long, and a standby cancels long reads that hold up its replay.
      const rows = exportEvents(services.db.knex, ctx.tenant!.id, query);
      const filename = `search-events-${query.start.slice(0, 10)}-${query.end.slice(0, 10)}.${query.format}`;
      return {
        status: 200,
        headers: {
          'Content-Type': query.format === 'csv' ? 'text/csv; charset=utf-8' : 'application/json; charset=utf-8',
          'Content-Disposition': `attachment; filename="${filename}"`,
        },
        stream: async (res) => {
          if (query.format === 'csv') {
            if (!(await write(res, csvRecord(EXPORT_COLUMNS)))) return;
            for await (const row of rows) {
              if (!(await write(res, csvRecord(EXPORT_COLUMNS.map((column) => row[column]))))) return;
            }
            return;
          }
          if (!(await write(res, '['))) return;
          let first = true;
          for await (const row of rows) {
            if (!(await write(res, `${first ? '' : ','}\n${JSON.stringify(row)}`))) return;
            first = false;
          }
          await write(res, '\n]\n');
        },
      };
    },
  });
}
