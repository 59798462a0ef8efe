import { execFileSync, spawn } from 'node:child_process';
import net from 'node:net';
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
  /** Each web server's state as HAProxy sees it (`UP`, `DOWN`, `UP 1/2`…), by name (`web1`…), from its stats socket. */
  serverStates(): Promise<Record<string, string>>;
  stop(): Promise<void>;
}

/**
 * Runs HAProxy on ops/haproxy/haproxy.cfg with its listening addresses on
 * free loopback ports, its backend servers replaced by the web processes
 * on `webPorts`, a self-signed certificate made for the occasion and a
 * stats socket for the test to read server states from; everything else — health checks on /readyz, forwarding headers, the
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
  // Each backend's block of server lines, replaced by one line per web process.
  const serverBlocks = shipped.match(/^  server .*(?:\n  server .*)*$/gm) ?? [];
  if (serverBlocks.length === 0) throw new Error('ops/haproxy/haproxy.cfg no longer lists its web servers');
  const ourServers = (block: string) =>
    webPorts.map((port, index) => block.split('\n')[0].replace(/server \S+ \S+:8080/, `server web${index + 1} 127.0.0.1:${port}`)).join('\n');
  const statsSocket = path.join(folder, 'stats.sock');
  const configuration = shipped
    .replace(/^global$/m, `global\n  stats socket ${statsSocket} mode 600`)
    .replace(/^  bind :80$/m, `  bind 127.0.0.1:${httpPort}`)
    .replace(/^  bind :443 ssl crt \S+/m, `  bind 127.0.0.1:${httpsPort} ssl crt ${pem}`)
    .replace(/^  server .*(?:\n  server .*)*$/gm, ourServers);
  if (configuration.includes(':8080') || !configuration.includes(`127.0.0.1:${httpsPort} ssl`) || !configuration.includes(statsSocket)) {
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
    async serverStates() {
      const csv = await askStatsSocket(statsSocket, 'show stat');
      const [header, ...rows] = csv.trim().replace(/^# /, '').split('\n').map((line) => line.split(','));
      const [proxyName, serverName, status] = ['pxname', 'svname', 'status'].map((column) => header.indexOf(column));
      const states: Record<string, string> = {};
      for (const row of rows) {
        if (row[proxyName] === 'ragworks_web' && row[serverName] !== 'BACKEND') states[row[serverName]] = row[status];
      }
      return states;
    },
    async stop() {
      child.kill('SIGTERM');
      await exited;
      await dispatcher.close();
      rmSync(folder, { recursive: true, force: true });
    },
  };
}

/** Sends one command to HAProxy's stats socket and answers what it said (it closes after one command). */
function askStatsSocket(socketPath: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let answer = '';
    const socket = net.createConnection(socketPath, () => socket.end(`${command}\n`));
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (answer += chunk));
    socket.once('end', () => resolve(answer));
    socket.once('error', reject);
  });
}
