import { OpenAPIRegistry, type RouteConfig } from '@asteasolutions/zod-to-openapi';
import express, { type Request, type Response } from 'express';
import { z } from 'zod';
import { QuotaExceededError } from '../domain/tenants/quotas';
import { requestScope } from '../request-scope';
import { auditedAction, RequestAudit, type AuditCall, type AuditServices, type AuditSpec } from './audit-trail';
import type { Reply } from './reply';
import { authenticate, authorize, type AuthRule, type AuthServices } from './auth';
import { requestIdOf, type RequestContext } from './context';
import { RequestRateLimits, type Admission, type AdmissionNeeds, type RateLimitServices } from './rate-limit';
import { parseInput } from './validation';

/** What declaring routes uses of the platform: authentication, rate limits and the audit trail. */
export type ApiServices = AuthServices & AuditServices & RateLimitServices;

type Method = 'get' | 'post' | 'patch' | 'delete';
type ObjectSchema = z.ZodObject;

export interface RouteInput<B, Q, P> {
  body: B;
  query: Q;
  params: P;
  ctx: RequestContext;
  req: Request;
  /** What the request took and read with its rate limits: the route's `admission` needs among them. */
  admission: Admission;
}

export interface RouteSpec<B extends z.ZodType | undefined, Q extends ObjectSchema | undefined, P extends ObjectSchema | undefined> {
  method: Method;
  /** Express syntax: `/api/documents/:id`. */
  path: string;
  /**
   * The OpenAPI operationId: camelCase, unique, what client generators name
   * their methods after. Declared rather than derived from the path, so
   * moving a path does not rename every generated client's method.
   */
  operationId: string;
  summary: string;
  tag: string;
  auth: AuthRule;
  body?: B;
  query?: Q;
  params?: P;
  responses: Record<number, { description: string; schema?: z.ZodType }>;
  /**
   * How the audit trail names a call of this mutation (docs/tenancy-and-billing.md,
   * "Audit trail"). Without it an audited call is named `METHOD /path`; `false` for
   * a read sent as POST, which is no mutation.
   */
  audit?: AuditSpec<Out<B>, Out<Q>, Out<P>> | false;
  /**
   * What the route takes and reads from Redis in the script that takes the
   * rate limits (one round trip for all): its own budgets, such as the daily
   * search quota, and values it needs, such as the cache generation. Asked
   * only for input that passed validation.
   */
  admission?(ctx: RequestContext): AdmissionNeeds;
  handler(input: RouteInput<Out<B>, Out<Q>, Out<P>>): Promise<Reply>;
}

type Out<S> = S extends z.ZodType ? z.output<S> : undefined;

export const errorSchema = z.object({
  error: z.object({ code: z.string(), message: z.string(), details: z.unknown().optional() }),
});

const COMMON_ERRORS: Record<number, string> = {
  400: 'Invalid input (`validation_failed`, `invalid_json`, `invalid_encoding`)',
  401: 'Missing or invalid credentials',
  403: 'Missing scope or suspended tenant',
  503: 'A dependency is unavailable (`dependency_unavailable`), or a statement ran past its time bound (`statement_timeout`); with `Retry-After`',
};

const OPERATION_ID = /^[a-z][a-zA-Z0-9]*$/;

const RATE_LIMITED = "An API key over its own or its tenant's request limit (`rate_limited`, with `Retry-After`, `RateLimit-Policy` and `RateLimit`)";

/**
 * Declares routes once: the Express handler that validates with the zod
 * schemas, and the OpenAPI operation generated from the same schemas.
 */
export class Api {
  readonly router = express.Router();
  readonly registry = new OpenAPIRegistry();
  private readonly rateLimits: RequestRateLimits;
  private readonly operationIds = new Set<string>();

  constructor(private readonly services: ApiServices) {
    this.rateLimits = new RequestRateLimits(services);
    this.registry.registerComponent('securitySchemes', 'bearer', { type: 'http', scheme: 'bearer', description: 'API key or operator token' });
    this.registry.registerComponent('securitySchemes', 'apiKeyHeader', { type: 'apiKey', in: 'header', name: 'X-API-Key' });
  }

  add<B extends z.ZodType | undefined = undefined, Q extends ObjectSchema | undefined = undefined, P extends ObjectSchema | undefined = undefined>(
    spec: RouteSpec<B, Q, P>,
  ): void {
    if (!OPERATION_ID.test(spec.operationId)) throw new Error(`operationId "${spec.operationId}" of ${spec.method.toUpperCase()} ${spec.path} is not camelCase`);
    if (this.operationIds.has(spec.operationId)) throw new Error(`operationId "${spec.operationId}" of ${spec.method.toUpperCase()} ${spec.path} is taken`);
    this.operationIds.add(spec.operationId);
    this.document(spec);
    const action = auditedAction(spec);
    this.router[spec.method](spec.path, async (req: Request, res: Response) => {
      // Follows the call from before authentication, so refused attempts are recorded with their status too.
      const audit = action ? new RequestAudit(this.services, spec, action, req, res) : undefined;
      try {
        await this.serve(spec, req, res, audit);
      } finally {
        audit?.settle();
      }
    });
  }

  private async serve<B extends z.ZodType | undefined, Q extends ObjectSchema | undefined, P extends ObjectSchema | undefined>(
    spec: RouteSpec<B, Q, P>,
    req: Request,
    res: Response,
    audit: RequestAudit | undefined,
  ): Promise<void> {
    const requestId = requestIdOf(res);
    let ctx: RequestContext = { requestId };
    if (spec.auth !== 'public') {
      const principal = await authenticate(this.services, req);
      if (audit) audit.principal = principal;
      ctx = await authorize(this.services, req, principal, spec.auth, requestId);
    }
    res.locals.tenantId = ctx.tenant?.id;
    if (audit) audit.tenant = ctx.tenant;
    const scope = requestScope.getStore();
    if (scope && ctx.tenant) scope.tenantId = ctx.tenant.id;
    const call = (audit?.call ?? {}) as AuditCall<Out<B>, Out<Q>, Out<P>>;
    let invalid: unknown;
    try {
      call.body = (spec.body ? parseInput(spec.body, req.body, 'body') : undefined) as Out<B>;
      call.query = (spec.query ? parseInput(spec.query, req.query, 'query') : undefined) as Out<Q>;
      call.params = (spec.params ? parseInput(spec.params, req.params, 'params') : undefined) as Out<P>;
    } catch (error) {
      invalid = error;
    }
    // Malformed requests spend the rate limits too (and a rate limit refuses them before they are judged); the route's own budgets only valid ones.
    const admission = await this.rateLimits.admit(ctx, invalid === undefined ? spec.admission?.(ctx) : undefined);
    for (const [name, value] of Object.entries(admission.headers)) res.setHeader(name, value);
    if (invalid !== undefined) throw invalid;
    await audit?.lookUpTenantTarget();
    const reply = await spec
      .handler({
        body: call.body as Out<B>,
        query: call.query as Out<Q>,
        params: call.params as Out<P>,
        ctx,
        req,
        admission,
      })
      .catch(async (error: unknown) => {
        // A request a quota refused spends none of the rate limits either.
        if (error instanceof QuotaExceededError) for (const [name, value] of Object.entries(await this.rateLimits.giveBack(admission))) res.setHeader(name, value);
        throw error;
      });
    call.reply = reply;
    for (const [name, value] of Object.entries(reply.headers ?? {})) res.setHeader(name, value);
    if (reply.stream) {
      res.status(reply.status);
      await reply.stream(res);
      res.end();
    } else if (reply.body === undefined) res.status(reply.status).end();
    else if (reply.serialized) sendJson(res.status(reply.status), reply.body as Record<string, unknown>, reply.serialized);
    else res.status(reply.status).json(reply.body);
    reply.afterwards?.();
  }

  private document(spec: RouteSpec<z.ZodType | undefined, ObjectSchema | undefined, ObjectSchema | undefined>): void {
    const responses: RouteConfig['responses'] = {};
    for (const [status, response] of Object.entries(spec.responses)) {
      responses[status] = {
        description: response.description,
        ...(response.schema ? { content: { 'application/json': { schema: response.schema } } } : {}),
      };
    }
    for (const [status, description] of Object.entries(COMMON_ERRORS)) {
      if (spec.auth === 'public' && (status === '401' || status === '403')) continue;
      responses[status] ??= { description, content: { 'application/json': { schema: errorSchema } } };
    }
    if (typeof spec.auth === 'object') {
      responses[429] ??= { description: RATE_LIMITED, content: { 'application/json': { schema: errorSchema } } };
    }
    const operatorTenant = typeof spec.auth === 'object';
    const auditAction = auditedAction(spec);
    this.registry.registerPath({
      method: spec.method,
      path: spec.path.replace(/:([A-Za-z_]+)/g, '{$1}'),
      operationId: spec.operationId,
      summary: spec.summary,
      tags: [spec.tag],
      description: describeAuth(spec.auth),
      security: spec.auth === 'public' ? [] : [{ bearer: [] }, { apiKeyHeader: [] }],
      request: {
        ...(spec.params ? { params: spec.params } : {}),
        ...(spec.query ? { query: spec.query } : {}),
        ...(operatorTenant ? { headers: z.object({ 'x-tenant-id': z.string().optional().describe('Operator only: the tenant id or slug to act on') }) } : {}),
        ...(spec.body ? { body: { required: true, content: { 'application/json': { schema: spec.body } } } } : {}),
      },
      responses,
      // Tells API readers (the dashboard's audit view among them) what a call is recorded as.
      ...(auditAction ? { 'x-audit-action': auditAction } : {}),
    });
  }
}

/** `body` as JSON, its `serialized` fields first, as the bytes given: written side by side in one go, never copied together. */
function sendJson(res: Response, body: Record<string, unknown>, serialized: Record<string, Buffer>): void {
  const rest: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(body)) if (!(name in serialized)) rest[name] = value;
  const parts: Array<string | Buffer> = Object.entries(serialized).flatMap(([name, bytes], index) => [`${index === 0 ? '{' : ','}${JSON.stringify(name)}:`, bytes]);
  const tail = JSON.stringify(rest);
  parts.push(tail === '{}' ? '}' : `,${tail.slice(1)}`);
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', parts.reduce((length, part) => length + Buffer.byteLength(part), 0));
  res.cork();
  for (const part of parts.slice(0, -1)) res.write(part);
  res.end(parts.at(-1));
}

function describeAuth(rule: AuthRule): string {
  if (rule === 'public') return 'No credentials needed.';
  if (rule === 'operator') return 'Operator token only.';
  return `API key with the \`${rule.scope}\` scope (or \`admin\`), or the operator token with \`X-Tenant-Id\`${rule.tenant === 'optional' ? ' (optional: without it, every tenant)' : ''}.`;
}
