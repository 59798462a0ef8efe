import type { Response } from 'express';

/** What a route's handler answers; the router writes it. */
export interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
  /** Writes the body itself, for replies streamed rather than built in memory. */
  stream?: (res: Response) => Promise<void>;
  /** Work that must not delay the reply (recording it): run once the reply is written. */
  afterwards?: () => void;
  /**
   * Fields of `body` given already as JSON bytes (a cached search's results,
   * serialized once per cached answer), spliced in rather than serialized
   * again. Such a reply is new on every request, so it gets no ETag.
   */
  serialized?: Record<string, Buffer>;
}
