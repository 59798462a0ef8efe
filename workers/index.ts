import { analyticsProcessor } from './analytics';
import { indexingProcessor } from './indexing';
import type { Processor } from './processor';
import { reconcileProcessor } from './reconcile';
import { retentionProcessor } from './retention';
import { usageProcessor } from './usage';
import { webhookFanoutProcessor } from './webhook-fanout';
import { webhooksProcessor } from './webhooks';

/** One processor per queue. */
export const PROCESSORS: readonly Processor[] = [
  indexingProcessor as Processor,
  reconcileProcessor as Processor,
  webhookFanoutProcessor as Processor,
  webhooksProcessor as Processor,
  analyticsProcessor as Processor,
  retentionProcessor as Processor,
  usageProcessor as Processor,
];
