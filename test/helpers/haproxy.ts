import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Agent } from 'undici';
import { unusedPort } from './processes';

const SHIPPED_CONFIGURATION = path.join(__dirname, '..', '..', 'ops', 'haproxy', 'haproxy.cfg');

export interface RunningHaproxy {
  httpPort: number;
  httpsPort: number;
  /** `https://127.0.0.1:<port>`, the address clients use. */
  httpsUrl: string;
  /** An undici dispatcher that trusts the proxy's certificate (made for 127.0.0.1) and nothing else new. */
  dispatcher: Agent;
  stop(): Promise<void>;
}

/**
 * Runs HAProxy on ops/haproxy/haproxy.cfg with its listening addresses on
 * free loopback ports, its backend servers replaced by the web processes
 * on `webPorts` and a self-signed certificate made for the occasion;
 * everything else — health checks on /readyz, forwarding headers, the
 * redirect to TLS, the balancing — as shipped.
 */
export async function startHaproxy(webPorts: number[]): Promise<RunningHaproxy> {
  const folder = mkdtempSync(path.join(os.tmpdir(), 'ragworks-haproxy-'));
  const [httpPort, httpsPort] = [await unusedPort(), await unusedPort()];
  const key = path.join(folder, 'key.pem');
  const certificate = path.join(folder, 'certificate.pem');
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', certificate, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'],
    { stdio: 'ignore' },
  );
  const pem = path.join(folder, 'ragworks.pem');
  writeFileSync(pem, readFileSync(certificate, 'utf8') + readFileSync(key, 'utf8'));
  const shipped = readFileSync(SHIPPED_CONFIGURATION, 'utf8');
  const servers = shipped.split('\n').filter((line) => line.trim().startsWith('server '));
  if (servers.length < 2) throw new Error('ops/haproxy/haproxy.cfg no longer lists its web servers');
  const configuration = shipped
    .replace(/^  bind :80$/m, `  bind 127.0.0.1:${httpPort}`)
    .replace(/^  bind :443 ssl crt \S+/m, `  bind 127.0.0.1:${httpsPort} ssl crt ${pem}`)
    .replace(servers.join('\n'), webPorts.map((port, index) => servers[0].replace(/server \S+ \S+:8080/, `server web${index + 1} 127.0.0.1:${port}`)).join('\n'));
  if (configuration.includes(':8080') || !configuration.includes(`127.0.0.1:${httpsPort} ssl`)) {
    throw new Error('ops/haproxy/haproxy.cfg no longer has the lines this helper adjusts');
  }
  const file = path.join(folder, 'haproxy.cfg');
  writeFileSync(file, configuration);
  const haproxy = existsSync('/usr/sbin/haproxy') ? '/usr/sbin/haproxy' : 'haproxy';
  execFileSync(haproxy, ['-c', '-q', '-f', file]);
  const child = spawn(haproxy, ['-db', '-f', file], { stdio: 'ignore' });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const dispatcher = new Agent({ connect: { ca: readFileSync(certificate, 'utf8') } });
  return {
    httpPort,
    httpsPort,
    httpsUrl: `https://127.0.0.1:${httpsPort}`,
    dispatcher,
    async stop() {
      child.kill('SIGTERM');
      await exited;
      await dispatcher.close();
      rmSync(folder, { recursive: true, force: true });
    },
  };
}
