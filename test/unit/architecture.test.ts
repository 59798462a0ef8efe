import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { importCycles, importGraph, loadedWith } from '../helpers/import-graph';

// The layers of docs/architecture.md, read from the imports themselves:
// no cycles, the domain below the queues, the workers and the HTTP API, and
// each role loading only what it runs.

const ROOT = path.join(__dirname, '..', '..');
const graph = importGraph(ROOT, ['src', 'queues', 'workers', 'clients', 'scripts']);

const under = (folder: string) => (module: string) => module.startsWith(`${folder}/`);

/** What a process of the role loads: the entry and its start-up, and the role's own part (src/run.ts requires it when the role runs it). */
function loadedByRole(part: 'web' | 'worker' | 'scheduler'): Set<string> {
  return new Set([...loadedWith(graph, 'src/main.ts'), ...loadedWith(graph, `src/roles/${part}.ts`)]);
}

describe('the import graph', () => {
  it('reads the whole tree', () => {
    expect(graph.size).toBeGreaterThan(150);
    // The reader sees each kind of import: a static one, a type-only one, and a require() at the top of main.ts.
    expect(graph.get('src/http/route.ts')).toEqual(expect.arrayContaining([{ to: 'src/http/audit-trail.ts', typeOnly: false, dynamic: false }]));
    expect(graph.get('src/http/route.ts')).toEqual(expect.arrayContaining([{ to: 'src/http/reply.ts', typeOnly: true, dynamic: false }]));
    expect(graph.get('src/main.ts')).toEqual(expect.arrayContaining([{ to: 'src/run.ts', typeOnly: false, dynamic: false }]));
    expect(graph.get('src/run.ts')).toEqual(expect.arrayContaining([{ to: 'src/roles/web.ts', typeOnly: false, dynamic: true }]));
  });

  it('has no cycles, type-only imports included', () => {
    expect(importCycles(graph)).toEqual([]);
  });

  it('keeps the domain below the queues, the workers and the HTTP API', () => {
    const upward = [...graph].flatMap(([from, edges]) =>
      under('src/domain')(from) ? edges.filter(({ to }) => ['queues', 'workers', 'src/http'].some((folder) => under(folder)(to))).map(({ to }) => `${from} → ${to}`) : [],
    );
    expect(upward).toEqual([]);
  });

  it('loads no job processor in the web role, and none of the HTTP API in the worker or scheduler roles', () => {
    const web = loadedByRole('web');
    expect(web.has('src/http/app.ts')).toBe(true);
    expect([...web].filter(under('workers'))).toEqual([]);

    const worker = loadedByRole('worker');
    expect(worker.has('workers/indexing.ts')).toBe(true);
    expect([...worker].filter(under('src/http'))).toEqual([]);

    const scheduler = loadedByRole('scheduler');
    expect(scheduler.has('workers/scheduler.ts')).toBe(true);
    expect([...scheduler].filter((module) => under('src/http')(module) || (under('workers')(module) && module !== 'workers/scheduler.ts'))).toEqual([]);
  });

  it('starts every role from src/main.ts with nothing of any role loaded up front', () => {
    const startUp = loadedWith(graph, 'src/main.ts');
    expect([...startUp].filter((module) => under('workers')(module) || under('src/http')(module) || (under('src/roles')(module) && module !== 'src/roles/serve.ts'))).toEqual([]);
  });

  it('hands the whole platform only to the composition roots: every other module names the services it takes', () => {
    // Where the platform is built, and where a role, the HTTP app or the worker runtime wires its parts from it.
    const roots = ['src/platform.ts', 'src/run.ts', 'src/roles/web.ts', 'src/roles/worker.ts', 'src/roles/scheduler.ts', 'src/http/app.ts', 'workers/runtime.ts'];
    const takers = [...graph.keys()].filter((module) => /:\s*Platform\b/.test(readFileSync(path.join(ROOT, module), 'utf8')));
    expect(takers.sort()).toEqual([...roots].sort());
    // The narrowed signatures are what the HTTP layer and the scheduler declare.
    const declared = (module: string, alias: string) => new RegExp(`export type ${alias} = `).test(readFileSync(path.join(ROOT, module), 'utf8'));
    expect(declared('src/http/route.ts', 'ApiServices')).toBe(true);
    expect(declared('src/http/admin/pages.ts', 'AdminPageServices')).toBe(true);
    expect(declared('workers/scheduler.ts', 'SchedulerServices')).toBe(true);
  });

  it('gives each route module the few services it uses, named in its signature, never the whole platform', () => {
    const folder = path.join(ROOT, 'src', 'http', 'routes');
    for (const file of readdirSync(folder).filter((name) => name.endsWith('.ts'))) {
      const text = readFileSync(path.join(folder, file), 'utf8');
      const signature = /export function \w+Routes\(api: Api, services: (\w+)\): void/.exec(text);
      expect({ file, declares: signature !== null && new RegExp(`export type ${signature[1]} = Pick<Platform, '`).test(text) }).toEqual({ file, declares: true });
      // No parameter, variable or field of the whole Platform type: it appears only inside Pick<…>.
      expect({ file, uses: /:\s*Platform\b/.test(text) }).toEqual({ file, uses: false });
    }
  });

  it('gives each job processor the few services it uses, named in its definition, never the whole platform', () => {
    const folder = path.join(ROOT, 'workers');
    const processors = readdirSync(folder).filter((name) => name.endsWith('.ts') && /= defineProcessor</.test(readFileSync(path.join(folder, name), 'utf8')));
    expect(processors.length).toBe(7);
    for (const file of processors) {
      const text = readFileSync(path.join(folder, file), 'utf8');
      const definition = /defineProcessor<typeof \w+, (\w+)>\(/.exec(text);
      expect({ file, declares: definition !== null && new RegExp(`export type ${definition[1]} = Pick<Platform, '`).test(text) }).toEqual({ file, declares: true });
      expect({ file, uses: /:\s*Platform\b/.test(text) }).toEqual({ file, uses: false });
    }
  });
});
