import type { Platform } from '../src/platform';
import { PROCESSORS } from './index';

/**
 * Reopens what a job's final failure closed in the database (a webhook
 * delivery marked failed), through its queue's processor, so that running
 * the job again really redoes the work. Returns why it must not run again,
 * or null.
 */
export async function reopenWork(platform: Platform, queue: string, payload: unknown): Promise<string | null> {
  const processor = PROCESSORS.find((candidate) => candidate.definition.name === queue);
  const parsed = processor?.definition.payload.safeParse(payload);
  if (!processor?.beforeRedrive || !parsed?.success) return null;
  return processor.beforeRedrive(parsed.data, platform);
}
