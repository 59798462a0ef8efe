// The dashboard is a client of the same JSON API as everyone else: the session
// cookie authenticates it as the operator, and every change carries the page's
// CSRF token.
const csrfToken = document.querySelector('meta[name="csrf-token"]').content;

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** Calls the API; `tenant` (an id) becomes X-Tenant-Id. Resolves to the parsed body (or null for 204). */
export async function api(method, path, { body, tenant } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') headers['X-CSRF-Token'] = csrfToken;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (tenant) headers['X-Tenant-Id'] = tenant;
  const response = await fetch(path, { method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401) {
    window.location.assign(`/admin/login?next=${encodeURIComponent('/admin' + window.location.hash)}`);
    throw new ApiError(401, 'unauthenticated', 'The session ended; sign in again.');
  }
  const text = await response.text();
  const parsed = text && response.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text || null;
  if (!response.ok) {
    const error = parsed?.error ?? {};
    throw new ApiError(response.status, error.code ?? 'error', error.message ?? `${method} ${path} answered ${response.status}`, error.details);
  }
  return parsed;
}

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value !== undefined && value !== null && value !== '') search.set(key, String(value));
  const text = search.toString();
  return text ? `?${text}` : '';
}
