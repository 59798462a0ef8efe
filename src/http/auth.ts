import type { Request } from 'express';
import { isWellFormedKey, type Scope } from '../domain/apikeys/apikeys';
import { findTenant, findTenantByDomain } from '../domain/tenants/tenants';
import { AppError, badRequest, forbidden, notFound, unauthenticated } from '../errors';
import type { Platform } from '../platform';
import { sameSecret } from '../same-secret';
import { csrfValid, provenanceOf, sessionOf } from './admin/session';
import { hasScope, type Principal, type RequestContext } from './context';

/** What authentication uses of the platform. */
export type AuthServices = Pick<Platform, 'apiKeys' | 'config' | 'db' | 'keyUsage'>;

export type AuthRule = 'public' | 'operator' | { scope: Scope; tenant: 'required' | 'optional' };

/** Constant-time comparison of a presented secret with the operator token. */
export function isOperatorToken(presented: string, adminToken: string): boolean {
  return sameSecret(presented, adminToken);
}

/** The secret a request presents: `Authorization: Bearer …`, HTTP Basic's password, or `X-API-Key`. */
export function presentedSecret(req: Request): string | undefined {
  const header = req.get('authorization');
  if (header) {
    const [scheme, value] = header.split(/\s+/, 2);
    if (/^bearer$/i.test(scheme) && value) return value.trim();
    if (/^basic$/i.test(scheme) && value) {
      const decoded = Buffer.from(value, 'base64').toString('utf8');
      const separator = decoded.indexOf(':');
      return separator >= 0 ? decoded.slice(separator + 1) : decoded;
    }
  }
  return req.get('x-api-key')?.trim() || undefined;
}

/** Whether the operator is calling: its token (Bearer or HTTP Basic), or a dashboard session when no other secret is sent. */
export async function isOperatorRequest(services: Pick<Platform, 'config' | 'db'>, req: Request): Promise<boolean> {
  const secret = presentedSecret(req);
  if (secret) return isOperatorToken(secret, services.config.ADMIN_TOKEN);
  return (await sessionOf(services, req)) !== null;
}

/**
 * Finds who is calling, and the tenant whose custom domain the request came
 * in on (Host, or X-Forwarded-Host from a trusted proxy; normalised by
 * customDomainOf), side by side.
 */
export async function authenticate(services: AuthServices, req: Request): Promise<Principal> {
  // A browser sends cached HTTP Basic credentials to other origins' pages too: a change it says came from elsewhere is refused, whatever its credentials.
  if (isChange(req) && provenanceOf(req) === 'elsewhere') {
    throw new AppError(403, 'csrf_failed', 'Changes are not accepted from pages of another origin.');
  }
  const secret = presentedSecret(req);
  const sessionId = secret ? null : await sessionOf(services, req);
  if (!secret && !sessionId) throw unauthenticated('Send an API key as "Authorization: Bearer <key>" or "X-API-Key: <key>".');
  const principal = secret ? await identify(services, secret, req.host) : fromSession(services, req, sessionId!);
  // A key's lookup brought the domain's tenant along; the operator's requests look it up here.
  const onDomain = principal.kind === 'key' ? principal.domainTenant : await findTenantByDomain(services.db.knex, req.host);
  if (onDomain && principal.kind === 'key' && principal.tenant.id !== onDomain.id) {
    throw forbidden(`This API key belongs to another tenant than ${onDomain.custom_domain}.`);
  }
  return principal.kind === 'operator' && onDomain ? { ...principal, domainTenant: onDomain } : principal;
}

const isChange = (req: Request) => !['GET', 'HEAD', 'OPTIONS'].includes(req.method);

/** The dashboard acts as the operator; its changes must carry the session's CSRF token and say they come from this origin. */
function fromSession(services: AuthServices, req: Request, sessionId: string): Principal {
  if (isChange(req) && (!csrfValid(services, sessionId, req.get('x-csrf-token')) || provenanceOf(req) !== 'own-origin')) {
    throw new AppError(
      403,
      'csrf_failed',
      'This change did not come from the dashboard page (missing or wrong X-CSRF-Token, or not from this origin; behind a proxy, TRUST_PROXY must name it).',
    );
  }
  return { kind: 'operator', sessionId };
}

async function identify(services: AuthServices, secret: string, host: string | undefined): Promise<Principal> {
  const { ADMIN_TOKEN } = services.config;
  // A secret shaped like an API key is no operator token (unless that token is shaped like one): nothing to compare. Shapes are no secret.
  if ((!isWellFormedKey(secret) || isWellFormedKey(ADMIN_TOKEN)) && isOperatorToken(secret, ADMIN_TOKEN)) return { kind: 'operator' };
  const verdict = await services.apiKeys.verify(secret, { host });
  if (!verdict.ok) {
    const messages = { unknown: 'The API key is not valid.', revoked: 'The API key has been revoked.', expired: 'The API key has expired.' };
    throw unauthenticated(messages[verdict.reason]);
  }
  services.keyUsage.record(verdict.apiKey.id);
  return { kind: 'key', apiKey: verdict.apiKey, tenant: verdict.tenant, domainTenant: verdict.domainTenant ?? undefined };
}

/** Applies a route's rule to an authenticated caller and finds the tenant it acts on. */
export async function authorize(services: AuthServices, req: Request, principal: Principal, rule: Exclude<AuthRule, 'public'>, requestId: string): Promise<RequestContext> {
  if (rule === 'operator') {
    if (principal.kind !== 'operator') throw forbidden('Only the operator may do this.');
    return { principal, requestId };
  }
  if (!hasScope(principal, rule.scope)) throw forbidden(`This API key lacks the "${rule.scope}" scope.`);
  if (principal.kind === 'key') {
    if (principal.tenant.status === 'suspended') throw new AppError(403, 'tenant_suspended', 'This tenant is suspended.');
    return { principal, tenant: principal.tenant, requestId };
  }
  const named = req.get('x-tenant-id')?.trim();
  if (!named) {
    if (principal.domainTenant) return { principal, tenant: principal.domainTenant, requestId };
    if (rule.tenant === 'optional') return { principal, requestId };
    throw badRequest('The operator must name a tenant with the X-Tenant-Id header (id or slug).', { header: 'X-Tenant-Id' });
  }
  const tenant = await findTenant(services.db.knex, named);
  if (!tenant) throw notFound('Tenant');
  if (principal.domainTenant && principal.domainTenant.id !== tenant.id) {
    throw forbidden(`X-Tenant-Id names another tenant than ${principal.domainTenant.custom_domain}.`);
  }
  return { principal, tenant, requestId };
}
