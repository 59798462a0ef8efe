import net from 'node:net';

/**
 * A TCP proxy on 127.0.0.1 in front of a real server, so a test can take
 * that server away from one process (and give it back) without touching
 * the server itself, which other tests share.
 */
export interface TcpProxy {
  /** The port clients connect to. */
  readonly port: number;
  /** True between `cut()` and `restore()`. */
  readonly isCut: boolean;
  /** Connections currently forwarded. */
  readonly openConnections: number;
  /**
   * Loses the server: every open connection is reset and new ones are
   * accepted and reset at once. The port stays ours, so nothing else can
   * take it before `restore()`.
   */
  cut(): void;
  /**
   * Loses the server silently, as a host that stops answering: connections
   * stay open, new ones are accepted, and nothing is forwarded either way
   * until `restore()`.
   */
  hang(): void;
  /** Forwards again: new connections after a cut (clients reconnect by themselves), held ones after a hang. */
  restore(): void;
  /** Resets every connection and stops listening. */
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const pairs = new Set<{ client: net.Socket; upstream: net.Socket }>();
  let cut = false;
  let hung = false;

  const forward = ({ client, upstream }: { client: net.Socket; upstream: net.Socket }) => {
    client.pipe(upstream);
    upstream.pipe(client);
  };
  const hold = ({ client, upstream }: { client: net.Socket; upstream: net.Socket }) => {
    client.unpipe(upstream);
    upstream.unpipe(client);
    client.pause();
    upstream.pause();
  };

  const drop = (pair: { client: net.Socket; upstream: net.Socket }) => {
    pairs.delete(pair);
    // A reset, not a polite FIN: the client sees ECONNRESET as on a real network failure.
    if (!pair.client.destroyed) pair.client.resetAndDestroy();
    pair.upstream.destroy();
  };

  const server = net.createServer((client) => {
    client.on('error', () => undefined);
    if (cut) {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect({ host: target.host, port: target.port });
    upstream.setNoDelay(true);
    client.setNoDelay(true);
    upstream.on('error', () => undefined);
    const pair = { client, upstream };
    pairs.add(pair);
    if (!hung) forward(pair);
    client.on('close', () => drop(pair));
    upstream.on('close', () => drop(pair));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as net.AddressInfo).port;

  return {
    port,
    get isCut() {
      return cut;
    },
    get openConnections() {
      return pairs.size;
    },
    cut() {
      cut = true;
      for (const pair of [...pairs]) drop(pair);
    },
    hang() {
      hung = true;
      for (const pair of pairs) hold(pair);
    },
    restore() {
      cut = false;
      if (hung) {
        hung = false;
        for (const pair of pairs) forward(pair);
      }
    },
    async close() {
      cut = true;
      for (const pair of [...pairs]) drop(pair);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** `url` with its host and port replaced by the proxy's; database, user and password are kept. */
export function throughProxy(url: string, proxy: TcpProxy): string {
  const rewritten = new URL(url);
  rewritten.hostname = '127.0.0.1';
  rewritten.port = String(proxy.port);
  return rewritten.toString();
}

/** Host and port a URL points at, with the scheme's default port. */
export function targetOf(url: string, defaultPort: number): { host: string; port: number } {
  const parsed = new URL(url);
  return { host: parsed.hostname.replace(/^\[|\]$/g, ''), port: parsed.port ? Number(parsed.port) : defaultPort };
}
