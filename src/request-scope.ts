import { AsyncLocalStorage } from 'node:async_hooks';

/** What every log line written while serving a request should carry. */
export interface RequestScope {
  requestId: string;
  tenantId?: string;
}

/** Follows a request through its awaits, so domain code logs with its request id without being handed it. */
export const requestScope = new AsyncLocalStorage<RequestScope>();
