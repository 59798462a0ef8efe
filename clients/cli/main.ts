import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { SingleBar } from 'cli-progress';
import { Command, Option } from 'commander';
import { UPLOAD_EXTENSIONS } from '../../src/domain/files/files';
import { createRagworksClient, RagworksError, type paths, type RagworksClient } from '../typescript';

type KeyScopes = NonNullable<paths['/api/admin/api-keys']['post']['requestBody']['content']['application/json']['scopes']>;
type QueueName = paths['/api/admin/queues/{queue}/retry-failed']['post']['parameters']['path']['queue'];
type DeadLetterQueue = NonNullable<NonNullable<paths['/api/admin/dead-letters/redrive']['post']['requestBody']>['content']['application/json']['queue']>;

/** How long `import` waits for the documents it uploaded to be indexed or fail. */
const INDEXING_WAIT_MS = 10 * 60_000;
const POLL_MS = 500;

interface Connection {
  url: string;
  key?: string;
  tenant?: string;
}

/** Output and exit code, given in: tests run the CLI in-process with their own streams. */
export interface Io {
  out: NodeJS.WritableStream & { isTTY?: boolean };
  err: NodeJS.WritableStream;
}

class UsageError extends Error {}

function clientFor(connection: Connection): RagworksClient {
  if (!connection.key) throw new UsageError('Set RAGWORKS_API_KEY (or pass --key): an API key, or the operator ADMIN_TOKEN with --tenant.');
  return createRagworksClient({ baseUrl: connection.url, token: connection.key, tenant: connection.tenant });
}

/** Unwraps an openapi-fetch reply: its data, or the API's error as a RagworksError. */
function ok<T>(reply: { data?: T; error?: unknown; response: Response }): T {
  if (reply.error !== undefined || reply.data === undefined) {
    const error = (reply.error as { error?: { code: string; message: string; details?: unknown } } | undefined)?.error;
    throw new RagworksError(reply.response.status, error?.code ?? 'unexpected_reply', error?.message ?? `HTTP ${reply.response.status}`, error?.details);
  }
  return reply.data;
}

/** Every file under `folder` whose extension ragworks takes, in a stable order; the rest is reported as skipped. */
function filesUnder(folder: string): { files: string[]; skipped: string[] } {
  const files: string[] = [];
  const skipped: string[] = [];
  const walk = (directory: string) => {
    for (const entry of readdirSync(directory, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      if (entry.name.startsWith('.')) continue;
      const full = path.join(directory, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.isFile()) (UPLOAD_EXTENSIONS.has(path.extname(entry.name).toLowerCase()) ? files : skipped).push(full);
    }
  };
  walk(folder);
  return { files, skipped };
}

async function importFolder(client: RagworksClient, folder: string, options: { tag: string[]; wait: boolean }, io: Io): Promise<number> {
  if (!statSync(folder, { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(`${folder} is not a folder.`);
  const { files, skipped } = filesUnder(folder);
  const bar = new SingleBar({ format: 'uploading {bar} {value}/{total} {file}', stream: io.out, noTTYOutput: false, hideCursor: true });
  const progress = Boolean(io.out.isTTY);
  if (progress) bar.start(files.length, 0, { file: '' });
  const uploaded: Array<{ file: string; id: string }> = [];
  const refused: Array<{ file: string; reason: string }> = [];
  for (const file of files) {
    const relative = path.relative(folder, file);
    if (progress) bar.update(uploaded.length + refused.length, { file: relative });
    try {
      const document = await client.upload({ name: path.basename(file), data: readFileSync(file) }, { tags: options.tag });
      uploaded.push({ file: relative, id: document.id });
    } catch (error) {
      refused.push({ file: relative, reason: error instanceof RagworksError ? `${error.code}: ${error.message}` : String(error) });
    }
  }
  if (progress) {
    bar.update(files.length, { file: '' });
    bar.stop();
  }

  const failed: Array<{ file: string; reason: string }> = [...refused];
  let indexed = 0;
  let pending = uploaded;
  if (options.wait) {
    const deadline = Date.now() + INDEXING_WAIT_MS;
    while (pending.length > 0 && Date.now() < deadline) {
      const still: typeof pending = [];
      for (const item of pending) {
        const document = ok(await client.api.GET('/api/documents/{id}', { params: { path: { id: item.id } } }));
        if (document.status === 'indexed') indexed += 1;
        else if (document.status === 'failed' || document.status === 'canceled') failed.push({ file: item.file, reason: document.error ?? document.error_code ?? document.status });
        else still.push(item);
      }
      pending = still;
      if (pending.length > 0) await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }
  const parts = [`${files.length} file${files.length === 1 ? '' : 's'}`, options.wait ? `${indexed} indexed` : `${uploaded.length} uploaded`, `${failed.length} failed`];
  if (options.wait && pending.length > 0) parts.push(`${pending.length} still indexing`);
  if (skipped.length > 0) parts.push(`${skipped.length} skipped (not a supported kind)`);
  io.out.write(`Imported ${parts.join(', ')}.\n`);
  for (const { file, reason } of failed) io.out.write(`  failed  ${file}: ${reason}\n`);
  for (const file of skipped) io.out.write(`  skipped ${path.relative(folder, file)}\n`);
  return failed.length > 0 ? 1 : 0;
}

const modeOption = () => new Option('--mode <mode>', 'hybrid, semantic or keyword').choices(['hybrid', 'semantic', 'keyword']).default('hybrid');
const positive = (value: string) => {
  const number = Number(value);
  if (!Number.isInteger(number) || number < 1) throw new UsageError(`${value} is not a positive whole number.`);
  return number;
};

/** Builds the command line; `run` resolves with the exit code. */
export function program(io: Io, env: NodeJS.ProcessEnv = process.env): { run(argv: string[]): Promise<number> } {
  let exitCode = 0;
  const cli = new Command('ragworks')
    .description('Import files into ragworks, search them and ask questions; operate tenants, keys, jobs and dead letters.')
    .option('--url <url>', 'where ragworks listens (RAGWORKS_URL)', env.RAGWORKS_URL ?? 'http://localhost:8080')
    .option('--key <key>', 'an API key, or the operator ADMIN_TOKEN (RAGWORKS_API_KEY)', env.RAGWORKS_API_KEY)
    .option('--tenant <tenant>', 'with the operator token: the tenant id or slug to act on (RAGWORKS_TENANT)', env.RAGWORKS_TENANT)
    .configureOutput({ writeOut: (text) => io.out.write(text), writeErr: (text) => io.err.write(text) })
    .exitOverride();
  const client = () => clientFor(cli.opts<Connection>());
  const print = (value: unknown): void => {
    io.out.write(`${JSON.stringify(value, null, 2)}\n`);
  };

  cli
    .command('import')
    .description('Upload every supported file under a folder (PDF, DOCX, HTML, Markdown, text, code), wait for indexing, and summarise')
    .argument('<folder>')
    .option('--tag <tag...>', 'tags for every document', [])
    .option('--no-wait', 'return once uploaded, without waiting for indexing')
    .action(async (folder: string, options: { tag: string[]; wait: boolean }) => {
      exitCode = await importFolder(client(), folder, options, io);
    });

  cli
    .command('search')
    .description('Search the tenant\'s documents')
    .argument('<query...>')
    .addOption(modeOption())
    .option('--limit <n>', 'results', positive, 10)
    .option('--json', 'print the reply as JSON')
    .action(async (words: string[], options: { mode: 'hybrid' | 'semantic' | 'keyword'; limit: number; json?: boolean }) => {
      const reply = ok(await client().api.POST('/api/search', { body: { query: words.join(' '), mode: options.mode, limit: options.limit } }));
      if (options.json) {
        print(reply);
        return;
      }
      if (reply.did_you_mean) io.out.write(`Showing results for "${reply.did_you_mean}"\n`);
      if (reply.results.length === 0) io.out.write('No results.\n');
      reply.results.forEach((hit, index) => {
        const where = hit.page === null ? '' : `, page ${hit.page}`;
        io.out.write(`${index + 1}. ${hit.title}${where}  (${hit.score.toFixed(3)})\n   ${hit.snippet.replace(/<\/?mark>/g, '*').replace(/\s+/g, ' ')}\n`);
      });
    });

  cli
    .command('ask')
    .description('Answer a question from the documents, streamed, with its sources')
    .argument('<question...>')
    .addOption(modeOption())
    .option('--limit <n>', 'passages given to the model', positive, 6)
    .action(async (words: string[], options: { mode: 'hybrid' | 'semantic' | 'keyword'; limit: number }) => {
      const { citations, done } = await client().askStreaming(
        { query: words.join(' '), mode: options.mode, limit: options.limit },
        { onDelta: (text) => io.out.write(text) },
      );
      io.out.write('\n\nSources:\n');
      for (const citation of citations) io.out.write(`  [${citation.n}] ${citation.title}${citation.page === undefined ? '' : `, page ${citation.page}`}\n`);
      io.out.write(`(${done.model}${done.cached ? ', cached' : ''}; answer ${done.query_id})\n`);
    });

  const tenants = cli.command('tenants').description('Tenants (operator token)');
  tenants.command('list').action(async () => print(ok(await client().api.GET('/api/admin/tenants', {}))));
  tenants
    .command('create')
    .argument('<slug>')
    .option('--name <name>', 'display name (default: the slug)')
    .option('--tier <tier>', 'free, standard, enterprise or unlimited', 'free')
    .action(async (slug: string, options: { name?: string; tier: 'free' | 'standard' | 'enterprise' | 'unlimited' }) =>
      print(ok(await client().api.POST('/api/admin/tenants', { body: { slug, name: options.name ?? slug, tier: options.tier } }))),
    );

  const keys = cli.command('keys').description("A tenant's API keys (the operator token with --tenant, or a key with keys:manage)");
  keys.command('list').action(async () => print(ok(await client().api.GET('/api/admin/api-keys', {}))));
  keys
    .command('create')
    .argument('<name>')
    .option('--scopes <scope...>', 'scopes of the new key', ['admin'])
    .action(async (name: string, options: { scopes: string[] }) =>
      print(ok(await client().api.POST('/api/admin/api-keys', { body: { name, scopes: options.scopes as KeyScopes } }))),
    );

  cli
    .command('jobs')
    .description('Jobs (operator token)')
    .command('retry-failed')
    .argument('<queue>', 'indexing, webhooks, …')
    .option('--reason <text>', 'only jobs whose failure reason contains this')
    .option('--dry-run', 'count only')
    .action(async (queue: string, options: { reason?: string; dryRun?: boolean }) =>
      print(ok(await client().api.POST('/api/admin/queues/{queue}/retry-failed', { params: { path: { queue: queue as QueueName } }, body: { dry_run: options.dryRun ?? false, failed_reason_contains: options.reason } }))),
    );

  cli
    .command('dead-letters')
    .description('Dead letters (operator token, or a key with its scope)')
    .command('redrive')
    .option('--queue <queue>', 'only this queue')
    .option('--dry-run', 'count only')
    .action(async (options: { queue?: string; dryRun?: boolean }) =>
      print(ok(await client().api.POST('/api/admin/dead-letters/redrive', { body: { dry_run: options.dryRun ?? false, ...(options.queue ? { queue: options.queue as DeadLetterQueue } : {}) } }))),
    );

  return {
    async run(argv) {
      try {
        await cli.parseAsync(argv, { from: 'user' });
        return exitCode;
      } catch (error) {
        const code = (error as { code?: string }).code;
        // commander has written its own message (help, version, a usage mistake).
        if (typeof code === 'string' && code.startsWith('commander.')) return code === 'commander.helpDisplayed' || code === 'commander.help' ? 0 : 2;
        if (error instanceof UsageError) {
          io.err.write(`${error.message}\n`);
          return 2;
        }
        io.err.write(error instanceof RagworksError ? `ragworks answered ${error.status} ${error.code}: ${error.message}\n` : `${(error as Error).message ?? error}\n`);
        return 1;
      }
    },
  };
}

export async function main(argv = process.argv.slice(2)): Promise<void> {
  process.exitCode = await program({ out: process.stdout, err: process.stderr }).run(argv);
}
