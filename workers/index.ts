import { indexingProcessor } from './indexing';
import type { Processor } from './processor';
import { reconcileProcessor } from './reconcile';

/** One processor per queue. */
export const PROCESSORS: readonly Processor[] = [indexingProcessor as Processor, reconcileProcessor as Processor];
