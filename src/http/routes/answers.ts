import type { Request, Response } from 'express';
import { z } from 'zod';
import { AppError, notFound } from '../../errors';
import { ANSWER_LIMITS, answerQuestion, rateAnswer, recordAnswer, type Answer, type AnswerRequest, type Citation } from '../../domain/answers/answer';
import { newId } from '../../domain/ids';
import type { Platform } from '../../platform';
import type { RequestContext } from '../context';
import type { Admission, AdmissionNeeds } from '../rate-limit';
import type { Api } from '../route';
import type { Reply } from '../reply';
import { answerBody, safeString } from '../schemas';
import { indexReads, seenInRedis, userOf } from './search';

const tag = 'Answers';
const auth = { scope: 'search', tenant: 'required' } as const;

const citationSchema = z.object({
  n: z.number().int().describe('The number the answer cites the passage by: [n]'),
  document_id: z.uuid(),
  chunk_id: z.uuid(),
  title: z.string(),
  page: z.number().int().optional().describe('The page of an uploaded PDF the passage begins on'),
  snippet: z.string().describe('The passage\'s best part, matched terms inside <mark>…</mark>'),
});

const usageSchema = z.object({
  prompt_tokens: z.number().int(),
  completion_tokens: z.number().int(),
}).describe('The model tokens this request spent: zero when the answer came from the cache');

const answerSchema = z.object({
  answer: z.string().describe('Written from the passages only, citing them as [1], [2]…'),
  citations: z.array(citationSchema).describe('The passages the model was given, numbered as the answer cites them'),
  model: z.string(),
  usage: usageSchema,
  cached: z.boolean(),
  query_id: z.uuid().describe('Send feedback on the answer with POST /api/answer/{query_id}/feedback'),
});

/** Today's answers allowance, and what the retrieval must have seen (as a search's). */
function answerAdmission(ctx: RequestContext, services: AnswersServices): AdmissionNeeds {
  const tenant = ctx.tenant!;
  return { budgets: [services.answerQuota.budget(tenant.id, tenant.quotas.answers_per_day)], reads: indexReads(tenant.id, services) };
}

function wantsStream(req: Request, body: { stream?: boolean }): boolean {
  return body.stream ?? (req.get('accept') ?? '').includes('text/event-stream');
}

/** One Server-Sent Event. */
function sendEvent(res: Response, event: string, data: unknown): void {
  res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
}

interface AnswerCall {
  services: AnswersServices;
  ctx: RequestContext;
  admission: Admission;
  request: AnswerRequest;
  userId: string | null;
  res: Response;
}

/**
 * Answers the question and records it; `hooks` see the citations and the
 * streamed text. The model is told to stop when the client goes away. An
 * answer that failed did not happen: the day's allowance goes back.
 */
async function answer(call: AnswerCall, streamed: boolean, hooks: { onCitations?: (citations: Citation[]) => void; onDelta?: (text: string) => void } = {}): Promise<{ answer: Answer; queryId: string }> {
  const { services, ctx, admission, request, res } = call;
  const tenantId = ctx.tenant!.id;
  const started = process.hrtime.bigint();
  const gone = new AbortController();
  const onClose = () => {
    if (!res.writableFinished) gone.abort();
  };
  res.on('close', onClose);
  try {
    const result = await answerQuestion(
      { cache: services.cache, search: services.searchDeps(), chatModel: services.chatModel },
      tenantId,
      request,
      seenInRedis(services, admission),
      { ...hooks, signal: gone.signal },
    );
    const queryId = newId();
    const tookMs = Number(process.hrtime.bigint() - started) / 1e6;
    await recordAnswer(services.db.knex, tenantId, { queryId, question: request.query, answer: result, tookMs, streamed, userId: call.userId });
    services.metrics.answers.inc({ outcome: result.cached ? 'cached' : 'answered' });
    services.metrics.answerTokens.inc({ kind: 'prompt' }, result.usage.prompt_tokens);
    services.metrics.answerTokens.inc({ kind: 'completion' }, result.usage.completion_tokens);
    return { answer: result, queryId };
  } catch (error) {
    services.metrics.answers.inc({ outcome: gone.signal.aborted ? 'canceled' : 'failed' });
    for (const budget of admission.routeTaken) await services.answerQuota.giveBack(budget).catch(() => undefined);
    // Nobody is left to answer: said the way proxies log it, not as a failure of ours.
    if (gone.signal.aborted) throw new AppError(499, 'client_closed_request', 'The client went away before the answer was complete.');
    throw error;
  } finally {
    res.off('close', onClose);
  }
}

/**
 * Server-Sent Events: `citations` once the passages are retrieved, `delta`
 * pieces of the answer as the model writes them (a cached answer in one),
 * then `done` with the usage, or `error`. A failure before the first event
 * is an ordinary JSON error with its status.
 */
function streamedAnswer(call: AnswerCall): Reply {
  return {
    status: 200,
    headers: { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', 'X-Accel-Buffering': 'no' },
    stream: async (res) => {
      let started = false;
      let streamedText = false;
      try {
        const { answer: result, queryId } = await answer(call, true, {
          onCitations: (citations) => {
            res.flushHeaders();
            started = true;
            sendEvent(res, 'citations', { citations });
          },
          onDelta: (text) => {
            streamedText = true;
            sendEvent(res, 'delta', { text });
          },
        });
        if (!streamedText) sendEvent(res, 'delta', { text: result.answer });
        sendEvent(res, 'done', { model: result.model, usage: result.usage, cached: result.cached, query_id: queryId });
      } catch (error) {
        if (!started) throw error;
        if (res.destroyed) return;
        const failure = error as { status?: number; code?: string; message?: string };
        const known = typeof failure.status === 'number' && typeof failure.code === 'string';
        call.services.logger.warn({ err: error }, 'an answer failed while streaming');
        sendEvent(res, 'error', { error: { code: known ? failure.code : 'internal_error', message: known ? failure.message : 'The answer failed.' } });
      }
    },
  };
}

/** What the answers routes use of the platform, wired in by the app (src/http/app.ts). */
export type AnswersServices = Pick<Platform, 'answerQuota' | 'cache' | 'chatModel' | 'config' | 'db' | 'logger' | 'metrics' | 'searchDeps'>;

export function answerRoutes(api: Api, services: AnswersServices): void {
  api.add({
    method: 'post', path: '/api/answer', operationId: 'answer', summary: 'Answer a question from the tenant\'s documents, citing them', tag, auth,
    // A read sent as POST: nothing changes, so nothing to audit.
    audit: false,
    body: answerBody,
    responses: {
      200: { description: 'The answer with its citations; with `stream: true` or `Accept: text/event-stream`, Server-Sent Events `citations`, `delta`…, then `done` or `error`', schema: answerSchema },
      501: { description: 'No chat model configured (`answers_unavailable`, `details.settings`), or a retrieval mode that needs pgvector (`vector_search_unavailable`)' },
      502: { description: 'The chat model refused the request (`answer_model_failed`): a wrong model name or key' },
      503: { description: 'The chat model is unavailable after retries (`answer_model_unavailable`), or a dependency is; with `Retry-After`' },
    },
    admission: (ctx) => answerAdmission(ctx, services),
    handler: async ({ body, ctx, req, admission }) => {
      const { stream, user_id, ...request } = body;
      const call: AnswerCall = { services, ctx, admission, request, userId: userOf(req, user_id), res: req.res! };
      if (wantsStream(req, { stream })) return streamedAnswer(call);
      const { answer: result, queryId } = await answer(call, false);
      return { status: 200, body: { ...result, query_id: queryId } };
    },
  });
  api.add({
    method: 'post', path: '/api/answer/:query_id/feedback', operationId: 'rateAnswer', summary: 'Rate an answer (the last rating counts)', tag, auth,
    // Analytics, not administration.
    audit: false,
    params: z.object({ query_id: z.uuid() }),
    body: z
      .object({
        rating: z.enum(['up', 'down']),
        comment: safeString({ min: 1, max: ANSWER_LIMITS.feedbackCommentChars, trim: true }).optional(),
      })
      .strict(),
    responses: { 204: { description: 'Recorded' }, 404: { description: 'No answer of the tenant has this query_id' } },
    handler: async ({ body, params, ctx }) => {
      if (!(await rateAnswer(services.db.knex, ctx.tenant!.id, params.query_id, body))) throw notFound('Answer');
      return { status: 204 };
    },
  });
}
