import { cpuTask } from './cpu-task';
import { prepareDocument as prepare, prepareFile as prepareUpload } from './prepare';

/**
 * Entry of the indexing pool's worker threads (see cpu-pool.ts): one export
 * per task. Loaded only inside those threads.
 */
export const prepareDocument = cpuTask(prepare);
export const prepareFile = cpuTask(prepareUpload);
