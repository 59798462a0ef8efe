import type { Response } from 'express';
import type { ApiKey, Scope } from '../domain/apikeys/apikeys';
import type { Tenant } from '../domain/tenants/tenants';

/**
 * Who is calling: the operator (ADMIN_TOKEN, or a dashboard session:
 * `sessionId`) or a tenant's API key, and the tenant whose custom domain the
 * request arrived on, if any.
 */
export type Principal = ({ kind: 'operator'; sessionId?: string } | { kind: 'key'; apiKey: ApiKey; tenant: Tenant }) & { domainTenant?: Tenant };

export interface RequestContext {
  /** Absent on public routes, which authenticate nobody. */
  principal?: Principal;
  /** The tenant the request acts on: the key's, or the operator's X-Tenant-Id. */
  tenant?: Tenant;
  requestId: string;
}

export function hasScope(principal: Principal, scope: Scope): boolean {
  if (principal.kind === 'operator') return true;
  return principal.apiKey.scopes.includes('admin') || principal.apiKey.scopes.includes(scope);
}

export function requestIdOf(res: Response): string {
  return String(res.locals.requestId ?? '');
}
