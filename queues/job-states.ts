/** The states a BullMQ job can be listed in. */
export const JOB_STATES = ['waiting', 'active', 'delayed', 'completed', 'failed', 'prioritized', 'waiting-children'] as const;
export type JobState = (typeof JOB_STATES)[number];

/** States in which a job is still going to run (or running). */
export const LIVE_STATES: ReadonlySet<string> = new Set<JobState>(['waiting', 'active', 'delayed', 'prioritized', 'waiting-children']);
