import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { Router } from 'express';
import type { Platform } from '../platform';

export const BOARD_PATH = '/admin/queues';

/** Bull Board over exactly the queues ragworks runs. Mounted behind operator auth by the app. */
export function bullBoardRouter(platform: Platform): Router {
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(BOARD_PATH);
  createBullBoard({
    queues: platform.queues.all().map((queue) => new BullMQAdapter(queue)),
    serverAdapter,
    options: { uiConfig: { boardTitle: 'ragworks queues' } },
  });
  return serverAdapter.getRouter();
}
