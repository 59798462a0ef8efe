import { createApiKey, DEFAULT_SCOPES, listApiKeys, revokeApiKey, setApiKeyScopes, type Scope } from '../../domain/apikeys/apikeys';
import type { Platform } from '../../platform';
import { AppError } from '../../errors';
import { hasScope, type RequestContext } from '../context';
import {
  createTenant,
  deleteTenant,
  getTenant,
  listTenants,
  setTenantStatus,
  updateTenant,
} from '../../domain/tenants/tenants';
import { repliedId } from '../audit-trail';
import type { Api } from '../route';
import {
  apiKeyCreate,
  apiKeyCreated,
  apiKeyPage,
  apiKeyPatch,
  apiKeySchema,
  idOrSlugParams,
  idParams,
  listQuery,
  tenantCreate,
  tenantPage,
  tenantPatch,
  tenantSchema,
} from '../schemas';

const tag = 'Tenants and keys';

/** What the tenants routes use of the platform, wired in by the app (src/http/app.ts). */
export type TenantsServices = Pick<Platform, 'db' | 'keyChanges' | 'logger' | 'queues' | 'suspension'>;

export function tenantRoutes(api: Api, services: TenantsServices): void {
  api.add({
    method: 'post', path: '/api/admin/tenants', operationId: 'createTenant', summary: 'Create a tenant', tag, auth: 'operator',
    body: tenantCreate,
    responses: { 201: { description: 'The tenant', schema: tenantSchema }, 409: { description: 'Slug or domain taken' } },
    audit: { action: 'tenant.create', target: repliedId, targetsTenant: true, details: ({ body }) => body && { slug: body.slug, tier: body.tier } },
    handler: async ({ body }) => ({ status: 201, body: await createTenant(services.db.knex, body) }),
  });
  api.add({
    method: 'get', path: '/api/admin/tenants', operationId: 'listTenants', summary: 'List tenants', tag, auth: 'operator',
    query: listQuery,
    responses: { 200: { description: 'A page of tenants', schema: tenantPage } },
    handler: async ({ query }) => ({ status: 200, body: await listTenants(services.db.knex, query) }),
  });
  api.add({
    method: 'get', path: '/api/admin/tenants/:id', operationId: 'getTenant', summary: 'Get a tenant by id or slug', tag, auth: 'operator',
    params: idOrSlugParams,
    responses: { 200: { description: 'The tenant', schema: tenantSchema }, 404: { description: 'No such tenant' } },
    handler: async ({ params }) => ({ status: 200, body: await getTenant(services.db.knex, params.id) }),
  });
  api.add({
    method: 'patch', path: '/api/admin/tenants/:id', operationId: 'updateTenant', summary: 'Change a tenant', tag, auth: 'operator',
    params: idOrSlugParams, body: tenantPatch,
    responses: { 200: { description: 'The tenant', schema: tenantSchema }, 404: { description: 'No such tenant' }, 409: { description: 'Slug or domain taken' } },
    audit: { action: 'tenant.update', targetsTenant: true, details: ({ body }) => (body?.quotas ? { quotas: Object.keys(body.quotas).sort() } : undefined) },
    handler: async ({ params, body }) => ({ status: 200, body: await updateTenant(services.db.knex, services.keyChanges, params.id, body) }),
  });
  api.add({
    method: 'delete', path: '/api/admin/tenants/:id', operationId: 'deleteTenant', summary: 'Delete a tenant and everything it owns', tag, auth: 'operator',
    params: idOrSlugParams,
    responses: { 204: { description: 'Deleted' }, 404: { description: 'No such tenant' } },
    audit: { action: 'tenant.delete', targetsTenant: true },
    handler: async ({ params }) => {
      const deleted = await deleteTenant(services.db.knex, services.keyChanges, params.id);
      await services.suspension.forget(deleted.id).catch((error) => services.logger.warn({ err: error, tenant_id: deleted.id }, 'could not drop the held-jobs note of a deleted tenant'));
      return { status: 204 };
    },
  });
  for (const [action, status] of [['suspend', 'suspended'], ['resume', 'active']] as const) {
    api.add({
      method: 'post', path: `/api/admin/tenants/:id/${action}`, operationId: `${action}Tenant`, summary: `${action === 'suspend' ? 'Suspend' : 'Resume'} a tenant`, tag, auth: 'operator',
      params: idOrSlugParams,
      responses: { 200: { description: 'The tenant', schema: tenantSchema }, 404: { description: 'No such tenant' } },
      audit: { action: `tenant.${action}`, targetsTenant: true },
      handler: async ({ params }) => {
        const tenant = await setTenantStatus(services.db.knex, services.keyChanges, params.id, status);
        // Jobs held while it was suspended run now rather than at their next recheck.
        // Without Redis they still run, at their next recheck.
        if (status === 'active') {
          await services.suspension.release(tenant.id, (name) => services.queues.queue(name)).catch((error) =>
            services.logger.warn({ err: error, tenant_id: tenant.id }, 'could not promote the jobs held during the suspension'),
          );
        }
        return { status: 200, body: tenant };
      },
    });
  }

  const keysAuth = { scope: 'keys:manage', tenant: 'required' } as const;
  api.add({
    method: 'post', path: '/api/admin/api-keys', operationId: 'createApiKey', summary: 'Create an API key (the key is shown only here)', tag, auth: keysAuth,
    body: apiKeyCreate,
    responses: { 201: { description: 'The key, with its secret', schema: apiKeyCreated } },
    // The scopes handed out are the point of the record; the secret in the reply never is.
    audit: { action: 'api_key.create', target: repliedId, details: ({ body }) => body && { name: body.name, scopes: body.scopes ?? DEFAULT_SCOPES } },
    handler: async ({ body, ctx }) => {
      assertMayGrant(ctx, body.scopes ?? DEFAULT_SCOPES);
      const { apiKey, key } = await createApiKey(services.db.knex, ctx.tenant!.id, body, ctx.tenant!.quotas);
      return { status: 201, body: { ...publicKey(apiKey), key } };
    },
  });
  api.add({
    method: 'get', path: '/api/admin/api-keys', operationId: 'listApiKeys', summary: 'List active API keys', tag, auth: keysAuth,
    query: listQuery,
    responses: { 200: { description: 'A page of keys, without secrets', schema: apiKeyPage } },
    handler: async ({ query, ctx }) => {
      const page = await listApiKeys(services.db.knex, ctx.tenant!.id, query);
      return { status: 200, body: { ...page, items: page.items.map(publicKey) } };
    },
  });
  api.add({
    method: 'patch', path: '/api/admin/api-keys/:id', operationId: 'setApiKeyScopes', summary: "Replace an API key's scopes, effective at once", tag, auth: keysAuth,
    params: idParams, body: apiKeyPatch,
    responses: { 200: { description: 'The key, without its secret', schema: apiKeySchema }, 404: { description: 'No such key' } },
    audit: { action: 'api_key.update', details: ({ body }) => body && { scopes: body.scopes } },
    handler: async ({ params, body, ctx }) => {
      assertMayGrant(ctx, body.scopes);
      return { status: 200, body: publicKey(await setApiKeyScopes(services.db.knex, services.keyChanges, ctx.tenant!.id, params.id, body.scopes)) };
    },
  });
  api.add({
    method: 'delete', path: '/api/admin/api-keys/:id', operationId: 'revokeApiKey', summary: 'Revoke an API key, effective at once', tag, auth: keysAuth,
    params: idParams,
    responses: { 204: { description: 'Revoked' }, 404: { description: 'No such key' } },
    audit: { action: 'api_key.revoke' },
    handler: async ({ params, ctx }) => {
      await revokeApiKey(services.db.knex, services.keyChanges, ctx.tenant!.id, params.id);
      return { status: 204 };
    },
  });
}

/** A key can hand out only what it holds: keys:manage alone must not mint an admin key. */
function assertMayGrant(ctx: RequestContext, scopes: Scope[]): void {
  const beyond = scopes.filter((scope) => !hasScope(ctx.principal!, scope));
  if (ctx.principal?.kind === 'key' && beyond.length > 0) {
    throw new AppError(403, 'forbidden', 'An API key cannot grant scopes it does not have.', { scopes: beyond });
  }
}

function publicKey(apiKey: Awaited<ReturnType<typeof createApiKey>>['apiKey']) {
  const { tenant_id: _tenant, revoked_at: _revoked, ...visible } = apiKey;
  return visible;
}
