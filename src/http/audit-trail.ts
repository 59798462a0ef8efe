import type { Request, Response } from 'express';
import { recordAudit, type AuditEntry } from '../domain/audit/audit';
import { findTenant, type Tenant } from '../domain/tenants/tenants';
import type { Platform } from '../platform';
import type { Principal } from './context';
import type { AuthRule } from './auth';
import type { Reply } from './reply';

/** What the audit trail uses of the platform. */
export type AuditServices = Pick<Platform, 'db'>;

const MUTATING_METHODS = new Set(['post', 'patch', 'delete']);
/** A target is an id; anything longer was typed by someone, and only its start is worth keeping. */
const TARGET_MAX_CHARS = 200;

/** What the audit trail reads of a route's declaration (route.ts RouteSpec). */
type AnyRouteSpec = { method: string; path: string; auth: AuthRule; audit?: AuditSpec | false };

/** What an audit row can be built from: the input that passed validation, and the reply when there was one. */
export interface AuditCall<B = unknown, Q = unknown, P = unknown> {
  body?: B;
  query?: Q;
  params?: P;
  reply?: Reply;
}

export interface AuditSpec<B = unknown, Q = unknown, P = unknown> {
  /** `noun.verb`: `tenant.update`, `api_key.create`, `queue.pause`. */
  action: string;
  /** The id acted on; by default the `:id` path parameter. */
  target?(call: AuditCall<B, Q, P>): string | null | undefined;
  /**
   * The target names a tenant (id or slug): it is looked up before the
   * handler runs, so a deletion still records the tenant's id and slug, or
   * after it when the request created the tenant.
   */
  targetsTenant?: boolean;
  /** Names and counts only: never a secret, never a body as given. A PATCH records its field names by itself. */
  details?(call: AuditCall<B, Q, P>): Record<string, unknown> | undefined;
}


/**
 * The action a route's calls are recorded as, or undefined when they never
 * are: reads, public routes (they authenticate nobody) and routes marked
 * `audit: false`.
 */
export function auditedAction(spec: AnyRouteSpec): string | undefined {
  if (!MUTATING_METHODS.has(spec.method) || spec.auth === 'public' || spec.audit === false) return undefined;
  return spec.audit?.action ?? `${spec.method.toUpperCase()} ${spec.path}`;
}

/**
 * Whose calls are recorded: the operator's everywhere; an API key's on the
 * admin routes (keys, webhooks, jobs) or anywhere when it holds the `admin`
 * scope. An ordinary key's documents are business data, not administration.
 */
function isAuditedCaller(principal: Principal, path: string): boolean {
  if (principal.kind === 'operator') return true;
  return path.startsWith('/api/admin/') || principal.apiKey.scopes.includes('admin');
}

/**
 * One call of an audited route. The router fills in the caller, the tenant
 * and the input as they become known. The row is written once the work has
 * settled and the connection is done with: after the answer, with its
 * status, so refusals and errors are recorded too — also when the client
 * hung up before the answer reached it, so leaving early hides no change.
 * Writing never delays nor fails the answer: a failure is logged.
 */
export class RequestAudit {
  principal?: Principal;
  /** The tenant the request acted on, once authorised. */
  tenant?: Tenant;
  readonly call: AuditCall = {};
  /** For routes whose target is a tenant: that tenant, looked up while it still existed. */
  private targetTenant?: Tenant | null;
  /** Read now: Express restores the params of the enclosing router once the route hands an error on. */
  private readonly pathId: unknown;
  /** Read now: once the client has gone, its socket no longer knows its address. */
  private readonly ip: string | undefined;
  private settled = false;
  private closed = false;

  constructor(
    private readonly services: AuditServices,
    private readonly spec: AnyRouteSpec,
    private readonly action: string,
    private readonly req: Request,
    private readonly res: Response,
  ) {
    this.pathId = req.params.id;
    this.ip = req.ip;
    // 'close' follows 'finish' after an answer, and comes alone when the client hung up.
    res.once('close', () => {
      this.closed = true;
      this.writeWhenDone();
    });
  }

  /** The handler returned or threw. A thrown error is answered right after, so its status is awaited a turn. */
  settle(): void {
    setImmediate(() => {
      this.settled = true;
      this.writeWhenDone();
    });
  }

  /** Looks the targeted tenant up before the handler can delete or rename it. */
  async lookUpTenantTarget(): Promise<void> {
    if (!this.spec.audit || !this.spec.audit.targetsTenant) return;
    const named = this.target();
    if (named) this.targetTenant = await findTenant(this.services.db.knex, named).catch(() => null);
  }

  private writeWhenDone(): void {
    if (!this.settled || !this.closed) return;
    this.write().catch((error) => this.req.log?.warn({ err: error, action: this.action }, 'could not record the audit entry'));
  }

  private async write(): Promise<void> {
    const principal = this.principal;
    // Without a caller (no or a wrong credential) there is nobody to record; the log has the attempt.
    if (!principal || !isAuditedCaller(principal, this.spec.path)) return;
    let target = this.target();
    let tenant = this.tenant ?? (principal.kind === 'key' ? principal.tenant : undefined);
    if (this.spec.audit && this.spec.audit.targetsTenant) {
      // A tenant the request created exists only now.
      if (this.targetTenant === undefined && target) this.targetTenant = await findTenant(this.services.db.knex, target).catch(() => null);
      tenant = this.targetTenant ?? undefined;
      if (tenant) target = tenant.id;
    }
    await recordAudit(this.services.db.knex, {
      actor: principal.kind === 'key' ? { kind: 'key', keyId: principal.apiKey.id } : { kind: 'operator', sessionId: (principal as { sessionId?: string }).sessionId ?? null },
      action: this.action,
      tenantId: tenant?.id ?? null,
      tenantSlug: tenant?.slug ?? null,
      target: target?.slice(0, TARGET_MAX_CHARS) ?? null,
      method: this.req.method,
      path: this.spec.path,
      status: this.res.writableEnded ? this.res.statusCode : undefined,
      ip: this.ip ?? null,
      requestId: String(this.res.locals.requestId ?? ''),
      details: this.details(),
    } satisfies AuditEntry);
  }

  private target(): string | undefined {
    const audit = this.spec.audit || undefined;
    if (audit?.target) return this.ask(() => audit.target!(this.call)) ?? undefined;
    return typeof this.pathId === 'string' && this.pathId !== '' ? this.pathId : undefined;
  }

  private details(): Record<string, unknown> {
    const audit = this.spec.audit || undefined;
    const body = this.call.body;
    // Which fields a change touched, never their values: a value can be a secret or personal data.
    const fields = this.spec.method === 'patch' && isPlainObject(body) ? { fields: Object.keys(body).sort() } : {};
    const declared = audit?.details ? this.ask(() => audit.details!(this.call)) : undefined;
    return { ...fields, ...declared };
  }

  /** A route's audit function must not cost the row: if it throws on an odd input, the row goes without it. */
  private ask<T>(question: () => T): T | undefined {
    try {
      return question();
    } catch (error) {
      this.req.log?.warn({ err: error, action: this.action }, 'an audit field could not be computed');
      return undefined;
    }
  }
}

/** A field of a JSON reply, for audit targets and details (the id a create returns, a bulk action's counts). */
export function replied(reply: Reply | undefined, field: string): unknown {
  return isPlainObject(reply?.body) ? (reply.body as Record<string, unknown>)[field] : undefined;
}

/** The id a create returns, as an audit target. */
export const repliedId = ({ reply }: AuditCall): string | undefined => {
  const id = replied(reply, 'id');
  return typeof id === 'string' ? id : undefined;
};

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
