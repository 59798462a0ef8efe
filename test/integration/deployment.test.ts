import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { request } from 'undici';
import { parse, parseAllDocuments } from 'yaml';
import { configVariables } from '../../scripts/config-docs';
import { build } from '../../scripts/build';
import { loadConfig } from '../../src/config';
import { exitDeadlineMs, ROLES } from '../../src/run';
import { createTestDatabase, REDIS_URL, uniqueName } from '../helpers/databases';
import { ADMIN_TOKEN } from '../helpers/harness';
import { startHaproxy } from '../helpers/haproxy';
import { killLeftoverProcesses, startBuiltRagworks, unusedPort, type RagworksProcess } from '../helpers/processes';
import { deleteRedisPrefix } from '../helpers/redis';
import { waitFor } from '../helpers/wait';

/**
 * Docker and Kubernetes do not run here, so their files are read and held
 * against the code: every setting they give exists, every role and file
 * they start exists in the build, every port and probe is one the process
 * serves, every grace period outlasts the process's own exit deadline. The
 * build itself is made and run, as the image runs it.
 */

const REPO = path.join(__dirname, '..', '..');
const read = (file: string) => readFileSync(path.join(REPO, file), 'utf8');
const SETTINGS = new Set(configVariables().map((variable) => variable.name));
const IMAGE = 'ragworks:latest';

interface Probe {
  httpGet: { path: string; port: string | number };
}
interface Container {
  name: string;
  image: string;
  args?: string[];
  command?: string[];
  env?: Array<{ name: string; value?: string }>;
  envFrom?: Array<{ secretRef?: { name: string }; configMapRef?: { name: string } }>;
  ports?: Array<{ containerPort: number; name?: string }>;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
  resources?: { requests?: Record<string, string> };
}
interface PodSpec {
  terminationGracePeriodSeconds?: number;
  containers: Container[];
}
interface Manifest {
  kind: string;
  metadata: { name: string };
  spec?: { template?: { spec: PodSpec }; scaleTargetRef?: { name: string }; triggers?: Array<{ metadata: { query: string } }> };
  data?: Record<string, string>;
  stringData?: Record<string, string>;
}

const manifests = parseAllDocuments(read('ops/k8s/ragworks.yaml')).map((document) => document.toJS() as Manifest);
const ofKind = (kind: string) => manifests.filter((manifest) => manifest.kind === kind);
const compose = parse(read('docker-compose.yml')) as { services: Record<string, { image?: string; command?: string[]; environment?: Record<string, string>; stop_grace_period?: string }> };
const ragworksServices = Object.entries(compose.services).filter(([, service]) => service.image === IMAGE);

/** A container's environment as the pod sees it: Secrets and ConfigMaps of the file, then its own env. */
function environmentOf(container: Container): Record<string, string> {
  const environment: Record<string, string> = {};
  for (const source of container.envFrom ?? []) {
    const name = source.secretRef?.name ?? source.configMapRef?.name;
    const kind = source.secretRef ? 'Secret' : 'ConfigMap';
    const manifest = ofKind(kind).find((candidate) => candidate.metadata.name === name);
    if (!manifest) throw new Error(`${container.name} reads the ${kind} ${name}, which the file does not define`);
    Object.assign(environment, manifest.stringData ?? manifest.data);
  }
  for (const variable of container.env ?? []) environment[variable.name] = variable.value ?? '';
  return environment;
}

/** Every pod template of the file: the Deployments' and the Job's. */
const pods = [...ofKind('Deployment'), ...ofKind('Job')].map((manifest) => ({ name: manifest.metadata.name, spec: manifest.spec!.template!.spec }));

/** The Dockerfile's last stage: what the image runs. */
function imageStage(): { env: Record<string, string>; entrypoint: string[]; cmd: string[]; healthcheck: string[]; exposes: number[] } {
  const lines = read('Dockerfile').replace(/\\\n\s*/g, ' ').split('\n');
  const stage = lines.slice(lines.map((line) => line.startsWith('FROM ')).lastIndexOf(true));
  const instruction = (name: string) => stage.filter((line) => line.startsWith(`${name} `)).map((line) => line.slice(name.length + 1).trim());
  const env = Object.fromEntries(instruction('ENV').flatMap((line) => line.split(/\s+/).map((pair) => pair.split('=') as [string, string])));
  const json = (text: string) => JSON.parse(text.slice(text.indexOf('['))) as string[];
  return {
    env,
    entrypoint: json(instruction('ENTRYPOINT')[0]),
    cmd: json(instruction('CMD')[0]),
    healthcheck: json(instruction('HEALTHCHECK')[0]),
    exposes: instruction('EXPOSE').flatMap((line) => line.split(/\s+/).map(Number)),
  };
}

describe('deployment files against the code', () => {
  it('give ragworks only settings it has', () => {
    const given = new Map<string, string>();
    for (const { name, spec } of pods) for (const container of spec.containers) for (const variable of Object.keys(environmentOf(container))) given.set(variable, `k8s ${name}`);
    for (const [name, service] of ragworksServices) for (const variable of Object.keys(service.environment ?? {})) given.set(variable, `compose ${name}`);
    for (const variable of Object.keys(imageStage().env)) given.set(variable, 'Dockerfile');
    expect(given.size).toBeGreaterThan(8);
    const unknown = [...given].filter(([variable]) => !SETTINGS.has(variable)).map(([variable, where]) => `${variable} (${where})`);
    expect(unknown).toEqual([]);
  });

  it('start a role that exists, in every container, service and process type', () => {
    const started = [
      ...pods.flatMap(({ spec }) => spec.containers.map((container) => container.args?.[0])),
      ...ragworksServices.map(([, service]) => service.command?.[0]),
      imageStage().cmd[0],
      ...read('Procfile').trim().split('\n').map((line) => line.split(/\s+/).at(-1)),
    ];
    expect(started.filter((role) => !(ROLES as readonly unknown[]).includes(role))).toEqual([]);
    // Every long-running role is deployed, and migrations run before them.
    expect(new Set(started)).toEqual(new Set(['web', 'worker', 'scheduler', 'migrate']));
    for (const { spec } of pods) for (const container of spec.containers) expect(container.image).toBe(IMAGE);
  });

  it('never run the application as a role that bypasses row-level security: the owner migrates, another role serves', () => {
    const urls = [
      ...pods.flatMap(({ spec }) => spec.containers.map(environmentOf)),
      ...ragworksServices.map(([, service]) => service.environment ?? {}),
    ];
    for (const environment of urls) {
      expect(environment.NODE_ENV).toBe('production');
      const application = new URL(environment.DATABASE_URL.replace(/\$\{[^}]*\}/g, 'x'));
      const migrator = new URL(environment.MIGRATION_DATABASE_URL.replace(/\$\{[^}]*\}/g, 'x'));
      expect(application.username).not.toBe(migrator.username);
      expect(['postgres', '']).not.toContain(application.username);
    }
    // The compose database creates those two roles on its first start.
    const initScript = read('ops/postgres/init-roles.sh');
    expect(initScript).toContain('nosuperuser nobypassrls');
    expect(read('docker-compose.yml')).toContain('./ops/postgres/init-roles.sh:/docker-entrypoint-initdb.d/');
  });

  it('probe ports the process listens on and paths it serves, with resource requests on every container', () => {
    for (const { name, spec } of pods) {
      for (const container of spec.containers) {
        expect(container.resources?.requests).toMatchObject({ cpu: expect.any(String), memory: expect.any(String) });
        if (container.args?.[0] === 'migrate') continue;
        const environment = { ...imageStage().env, ...environmentOf(container) };
        // web serves everything on PORT; worker and scheduler their probes and metrics on METRICS_PORT.
        const listening = Number(container.args?.[0] === 'web' ? environment.PORT : environment.METRICS_PORT);
        for (const probe of [container.readinessProbe, container.livenessProbe]) {
          expect(probe).toBeDefined();
          const port = container.ports?.find((candidate) => candidate.name === probe!.httpGet.port || candidate.containerPort === probe!.httpGet.port);
          expect({ pod: name, port: port?.containerPort }).toEqual({ pod: name, port: listening });
        }
        expect(container.readinessProbe!.httpGet.path).toBe('/readyz');
        expect(container.livenessProbe!.httpGet.path).toBe('/healthz');
        expect(imageStage().exposes).toContain(listening);
      }
    }
    const service = ofKind('Service').find((manifest) => manifest.metadata.name === 'ragworks-web') as unknown as { spec: { ports: Array<{ targetPort: string }> } };
    const web = pods.find(({ name }) => name === 'ragworks-web')!.spec.containers[0];
    expect(web.ports?.map((port) => port.name)).toContain(service.spec.ports[0].targetPort);
  });

  it('give every process longer to stop than its own exit deadline, web its preStop pause too', () => {
    for (const { name, spec } of pods.filter((pod) => pod.name !== 'ragworks-migrate')) {
      const container = spec.containers[0];
      const deadline = exitDeadlineMs(loadConfig({ ...environmentOf(container), ADMIN_TOKEN }));
      const pause = Number(container.lifecycle?.preStop?.exec?.command.at(-1) ?? 0) * 1000;
      expect({ name, outlasts: (spec.terminationGracePeriodSeconds ?? 30) * 1000 > deadline + pause }).toEqual({ name, outlasts: true });
    }
    expect(pods.find(({ name }) => name === 'ragworks-web')!.spec.containers[0].lifecycle?.preStop?.exec?.command[0]).toBe('sleep');
    for (const [name, service] of ragworksServices.filter(([, service]) => service.command?.[0] !== 'migrate')) {
      const deadline = exitDeadlineMs(loadConfig({ ADMIN_TOKEN }));
      expect({ name, outlasts: parseInt(service.stop_grace_period ?? '10', 10) * 1000 > deadline }).toEqual({ name, outlasts: true });
    }
  });

  it('scale web on CPU and workers on the queue gauges ragworks exports, combined with max across pods', () => {
    const [hpa] = ofKind('HorizontalPodAutoscaler') as unknown as Array<{ spec: { scaleTargetRef: { name: string } } }>;
    expect(hpa.spec.scaleTargetRef.name).toBe('ragworks-web');
    const [scaled] = ofKind('ScaledObject');
    expect(scaled.spec!.scaleTargetRef!.name).toBe('ragworks-worker');
    const metrics = read('src/metrics.ts');
    for (const { metadata } of scaled.spec!.triggers!) {
      expect(metadata.query).toMatch(/^max\(/);
      const metric = /ragworks_[a-z_]+/.exec(metadata.query)![0];
      expect(metrics).toContain(`name: '${metric}'`);
    }
    const budgets = ofKind('PodDisruptionBudget') as unknown as Array<{ spec: { selector: { matchLabels: { role: string } } } }>;
    expect(budgets.map((budget) => budget.spec.selector.matchLabels.role).sort()).toEqual(['web', 'worker']);
  });
});

describe('the build the image runs', () => {
  const buildDir = mkdtempSync(path.join(os.tmpdir(), 'ragworks-build-'));
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'ragworks-build-data-'));

  beforeAll(() => {
    build(buildDir);
    // The image installs the production dependencies into the build; here the repository's serve.
    symlinkSync(path.join(REPO, 'node_modules'), path.join(buildDir, 'node_modules'), 'dir');
  }, 240_000);
  afterAll(async () => {
    await killLeftoverProcesses();
    rmSync(buildDir, { recursive: true, force: true });
    rmSync(scratch, { recursive: true, force: true });
  });

  it('holds every file the image and the Procfile start', () => {
    const stage = imageStage();
    expect(existsSync(path.join(buildDir, stage.entrypoint.at(-1)!))).toBe(true);
    expect(existsSync(path.join(buildDir, stage.healthcheck.at(-1)!))).toBe(true);
    for (const line of read('Procfile').trim().split('\n')) {
      const script = line.split(/\s+/).find((word) => word.endsWith('.js'))!;
      expect(script).toMatch(/^dist\//);
      expect(existsSync(path.join(buildDir, script.slice('dist/'.length)))).toBe(true);
    }
  });

  it('runs web and worker as production does: ready, probes answered, behind the shipped HAProxy, HEALTHCHECK passing, stopped within the grace period', async () => {
    const database = await createTestDatabase({ ownedByOwnerRole: true });
    const prefix = uniqueName('rwbuild');
    const processes: RagworksProcess[] = [];
    try {
      const [port, metricsPort] = [await unusedPort(), await unusedPort()];
      const env = {
        NODE_ENV: 'production', ADMIN_TOKEN, REDIS_URL, QUEUE_PREFIX: prefix, DATA_DIR: scratch, LOG_LEVEL: 'info',
        MIGRATION_DATABASE_URL: database.url, DATABASE_URL: database.applicationUrl,
      };
      const web = startBuiltRagworks(buildDir, 'web', { ...env, PORT: String(port) });
      processes.push(web);
      await web.waitForMessage('platform ready', { timeoutMs: 60_000 });
      const worker = startBuiltRagworks(buildDir, 'worker', { ...env, METRICS_PORT: String(metricsPort) });
      processes.push(worker);
      await worker.waitForMessage('workers started', { timeoutMs: 60_000 });

      for (const listening of [port, metricsPort]) {
        for (const probe of ['/healthz', '/readyz']) {
          const status = await waitFor(async () => (await fetch(`http://127.0.0.1:${listening}${probe}`).catch(() => null))?.status ?? null, { what: `${probe} on ${listening}` });
          expect(status).toBe(200);
        }
      }
      // The pages the compiled web process reads from disk are in the build.
      expect((await fetch(`http://127.0.0.1:${port}/docs`)).status).toBe(200);
      expect((await fetch(`http://127.0.0.1:${port}/admin/login`)).status).toBe(200);

      // ops/haproxy/haproxy.cfg itself in front of it, with only its addresses and certificate replaced.
      const proxy = await startHaproxy([port]);
      try {
        const ready = await waitFor(
          async () => {
            const response = await request(`${proxy.httpsUrl}/readyz`, { dispatcher: proxy.dispatcher }).catch(() => null);
            if (!response) return null;
            const body = await response.body.json();
            return response.statusCode === 200 ? body : null;
          },
          { what: 'haproxy to pass its health check on /readyz and forward over TLS' },
        );
        expect(ready).toMatchObject({ status: 'ready' });
        const plain = await request(`http://127.0.0.1:${proxy.httpPort}/readyz`);
        await plain.body.dump();
        expect(plain.statusCode).toBe(301);
        expect(plain.headers.location).toBe(`https://127.0.0.1:${proxy.httpPort}/readyz`);
      } finally {
        await proxy.stop();
      }

      const healthcheck = (environment: Record<string, string>) =>
        execFileSync(process.execPath, [path.join(buildDir, imageStage().healthcheck.at(-1)!)], { env: { PATH: process.env.PATH ?? '', ...environment } });
      const nothing = String(await unusedPort());
      expect(() => healthcheck({ PORT: String(port) })).not.toThrow();
      expect(() => healthcheck({ PORT: nothing, METRICS_PORT: String(metricsPort) })).not.toThrow();
      expect(() => healthcheck({ PORT: nothing })).toThrow();

      const grace = pods.find(({ name }) => name === 'ragworks-worker')!.spec.terminationGracePeriodSeconds! * 1000;
      const started = Date.now();
      const exits = await Promise.all(processes.map((child) => child.stop('SIGTERM', grace)));
      expect(exits).toEqual([{ code: 0, signal: null }, { code: 0, signal: null }]);
      expect(Date.now() - started).toBeLessThan(grace);
    } finally {
      await killLeftoverProcesses();
      await database.drop();
      await deleteRedisPrefix(prefix);
    }
  }, 180_000);
});
