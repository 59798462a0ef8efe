import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import express, { type Router } from 'express';
import { AppError } from '../errors';
import type { Platform } from '../platform';

/** What Bull Board uses of the platform. */
export type BoardServices = Pick<Platform, 'queues'>;

export const BOARD_PATH = '/admin/queues';

/**
 * Bull Board over exactly the queues ragworks runs, read-only: retries,
 * pauses and clean-ups go through the audited API (and the dashboard's Jobs
 * tab), so every change is in the audit trail. Mounted behind operator auth
 * by the app.
 */
export function bullBoardRouter(services: BoardServices): Router {
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(BOARD_PATH);
  createBullBoard({
    queues: services.queues.all().map((queue) => new BullMQAdapter(queue, { readOnlyMode: true })),
    serverAdapter,
    options: { uiConfig: { boardTitle: 'ragworks queues' } },
  });
  const router = express.Router();
  // Read-only means read-only: besides the per-queue flag, no change of any kind passes (its bulk and metrics endpoints included).
  router.use((req, _res, next) => {
    if (req.method === 'GET' || req.method === 'HEAD') return next();
    next(new AppError(405, 'read_only', 'Bull Board is read-only here: retry, pause and clean jobs through /api/admin (audited) or the dashboard.'));
  });
  router.use(serverAdapter.getRouter());
  return router;
}
