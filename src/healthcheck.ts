/**
 * The container image's HEALTHCHECK: exits 0 when the process in the
 * container answers `/healthz` within two seconds — on PORT (roles web and
 * all) or on METRICS_PORT (worker and scheduler; the image sets 9464) —
 * and 1 otherwise. The answer comes from the process's event loop, so a
 * loop blocked past the timeout is reported unhealthy.
 */
async function answers(port: string): Promise<boolean> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(2_000) });
    return response.status === 200;
  } catch {
    return false;
  }
}

async function main(): Promise<void> {
  const ports = [process.env.PORT ?? '8080', process.env.METRICS_PORT].filter((port): port is string => Boolean(port));
  for (const port of ports) if (await answers(port)) process.exit(0);
  process.exit(1);
}

void main();
