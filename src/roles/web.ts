import { createApp } from '../http/app';
import type { Logger } from '../logger';
import type { Platform } from '../platform';
import { closeServer, listen, type Stop } from './serve';

/** The web role: the HTTP API, the dashboard and the docs on PORT. */
export async function startWeb(platform: Platform, logger: Logger): Promise<Stop> {
  const { config } = platform;
  const server = await listen(createApp(platform), config.PORT, config.HOST);
  server.keepAliveTimeout = config.HTTP_KEEP_ALIVE_TIMEOUT_MS;
  // Node's advice: a connection's headers may take longer than its idle time, or the two timers race.
  server.headersTimeout = config.HTTP_KEEP_ALIVE_TIMEOUT_MS + 1_000;
  logger.info({ url: `http://localhost:${(server.address() as { port: number }).port}` }, 'api listening');
  return () => closeServer(server, config.SHUTDOWN_TIMEOUT_MS);
}
