import { startTelemetry } from './telemetry';

// Telemetry must patch http, express, pg and ioredis before they are loaded,
// so the rest of the program is required only after it has started.
const telemetry = startTelemetry();
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { run } = require('./run') as typeof import('./run');

run(process.argv[2] ?? 'all', telemetry).catch((error: Error) => {
  process.stderr.write(`ragworks: could not start: ${error.message}\n`);
  process.exit(1);
});
