import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import { PDFDocument, StandardFonts } from 'pdf-lib';
import { createRagworksClient, RagworksError } from '../../clients/typescript';
import { program } from '../../clients/cli/main';
import { ADMIN_TOKEN, startStack, type TestStack } from '../helpers/harness';
import { startChatProvider, type FakeChatProvider } from '../helpers/llm-provider';

// The typed client (clients/typescript) and the CLI (bin/ragworks.js) against
// a real ragworks listening on a port, with a fake chat model run by the test;
// and the checked-in client types against the live OpenAPI document.

const ROOT = path.join(__dirname, '..', '..');

async function pdfWith(text: string): Promise<Buffer> {
  const pdf = await PDFDocument.create();
  const font = await pdf.embedFont(StandardFonts.Helvetica);
  pdf.addPage([600, 800]).drawText(text, { x: 20, y: 780, size: 10, font });
  return Buffer.from(await pdf.save());
}

/** Runs the CLI in this process with its output captured; `terminal`: the output claims to be one. */
async function cli(env: Record<string, string>, ...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  return cliOn(false, env, ...argv);
}

async function cliOn(terminal: boolean, env: Record<string, string>, ...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out = Object.assign(new PassThrough(), { isTTY: terminal, columns: 100 });
  const err = new PassThrough();
  let outText = '';
  let errText = '';
  out.on('data', (part: Buffer) => (outText += part.toString()));
  err.on('data', (part: Buffer) => (errText += part.toString()));
  const code = await program({ out, err }, env).run(argv);
  return { code, out: outText, err: errText };
}

describe('the typed client and the CLI against a running ragworks', () => {
  let stack: TestStack;
  let provider: FakeChatProvider;
  let server: http.Server;
  let baseUrl: string;
  let tenant: { id: string; key: string; slug: string };
  let folder: string;

  beforeAll(async () => {
    provider = await startChatProvider({ model: 'test/chat-model', apiKey: 'k' });
    stack = await startStack({ database: 'postgres', env: provider.env });
    server = stack.app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    tenant = await stack.createTenant();
    folder = mkdtempSync(path.join(os.tmpdir(), 'ragworks-import-'));
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    await stack?.close();
    await provider?.close();
    rmSync(folder, { recursive: true, force: true });
  });

  it('checks in client types that are exactly what the live OpenAPI document generates (npm run client:generate)', async () => {
    // A process of its own: openapi-typescript is an ES module jest's module system does not load.
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', path.join(ROOT, 'scripts', 'client-types.ts'), baseUrl, '--check'], { cwd: ROOT });
    expect(stdout).toBe('clients/typescript/schema.d.ts matches the API\n');
  });

  it('calls the API with typed requests and replies, uploads a file, streams an answer, and reports errors with their code', async () => {
    const client = createRagworksClient({ baseUrl, token: tenant.key });
    const created = await client.api.POST('/api/documents', { body: { title: 'Lantern care', content: 'Trim the lantern wick weekly and polish the glass.' } });
    expect(created.response.status).toBe(202);
    const uploaded = await client.upload({ name: 'tides.pdf', data: await pdfWith('The harbour tides turn at noon.') }, { tags: ['sea'], metadata: { from: 'client' } });
    expect({ content_type: uploaded.content_type, status: uploaded.status }).toEqual({ content_type: 'pdf', status: 'queued' });
    await stack.waitForDocument(tenant.key, created.data!.id);
    await stack.waitForDocument(tenant.key, uploaded.id);

    const document = await client.api.GET('/api/documents/{id}', { params: { path: { id: uploaded.id } } });
    expect({ tags: document.data?.tags, metadata: document.data?.metadata, status: document.data?.status }).toEqual({ tags: ['sea'], metadata: { from: 'client' }, status: 'indexed' });
    const search = await client.api.POST('/api/search', { body: { query: 'harbour tides', mode: 'keyword' } });
    expect(search.data?.results.map((hit) => [hit.title, hit.page])).toEqual([['tides', 1]]);

    const deltas: string[] = [];
    const streamed = await client.askStreaming({ query: 'lantern wick', mode: 'keyword' }, { onDelta: (text) => deltas.push(text) });
    expect({ answer: streamed.answer, pieces: deltas.length > 1, titles: streamed.citations.map((citation) => citation.title), cached: streamed.done.cached }).toEqual({
      answer: 'The documents give 1 passages; the first says it best [1].',
      pieces: true,
      titles: ['Lantern care'],
      cached: false,
    });

    const missing = await client.api.GET('/api/documents/{id}', { params: { path: { id: '00000000-0000-4000-8000-000000000000' } } });
    expect({ status: missing.response.status, code: (missing.error as { error: { code: string } }).error.code }).toEqual({ status: 404, code: 'not_found' });
    await expect(client.upload({ name: 'photo.png', data: Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 0, 0, 0]) })).rejects.toMatchObject({ status: 415, code: 'unsupported_media_type' });
    await expect(createRagworksClient({ baseUrl, token: 'rw_wrong' }).askStreaming({ query: 'x' })).rejects.toBeInstanceOf(RagworksError);
  });

  it('imports a folder: uploads each supported file, waits for indexing, and sums up what was indexed, failed and why, and skipped', async () => {
    writeFileSync(path.join(folder, 'compost.md'), '# Compost\n\nTurn the compost heap weekly.');
    mkdirSync(path.join(folder, 'guides'));
    writeFileSync(path.join(folder, 'guides', 'kites.pdf'), await pdfWith('Fly kites on windy hills.'));
    writeFileSync(path.join(folder, 'guides', 'scan.pdf'), Buffer.from('%PDF-1.7\nnot really a PDF'));
    writeFileSync(path.join(folder, 'photo.jpg'), Buffer.from([0xff, 0xd8, 0xff, 0xe0]));
    writeFileSync(path.join(folder, '.hidden.md'), 'not imported');
    const env = { RAGWORKS_URL: baseUrl, RAGWORKS_API_KEY: tenant.key };

    const imported = await cli(env, 'import', folder, '--tag', 'imported');
    expect(imported.out.split('\n')).toEqual([
      'Imported 3 files, 2 indexed, 1 failed, 1 skipped (not a supported kind).',
      expect.stringMatching(/^ {2}failed {2}guides\/scan\.pdf: file_unreadable: The PDF cannot be read/),
      '  skipped photo.jpg',
      '',
    ]);
    expect(imported.code).toBe(1);
    const listed = await stack.as(tenant.key, 'get', '/api/documents?tag=imported&limit=100').expect(200);
    expect(listed.body.items.map((item: { title: string }) => item.title).sort()).toEqual(['compost', 'kites', 'scan']);

    // On a terminal, a progress bar counts the uploads (and the same summary follows).
    const again = mkdtempSync(path.join(os.tmpdir(), 'ragworks-import-'));
    try {
      writeFileSync(path.join(again, 'a.md'), '# A\n\nFirst note.');
      writeFileSync(path.join(again, 'b.md'), '# B\n\nSecond note.');
      const shown = await cliOn(true, env, 'import', again);
      expect(shown.code).toBe(0);
      expect(shown.out).toMatch(/uploading .* 2\/2/);
      expect(shown.out).toContain('Imported 2 files, 2 indexed, 0 failed.\n');
    } finally {
      rmSync(again, { recursive: true, force: true });
    }

    const search = await cli(env, 'search', 'windy', 'hils', '--mode', 'keyword');
    expect({ code: search.code, out: search.out }).toEqual({ code: 0, out: 'Showing results for "windy hills"\n1. kites, page 1  (0.100)\n   kites on *windy* *hills*\n' });

    const asked = await cli(env, 'ask', 'compost', 'heap', '--mode', 'keyword');
    expect(asked).toEqual({
      code: 0,
      out: expect.stringMatching(/^The documents give 1 passages; the first says it best \[1\]\.\n\nSources:\n {2}\[1\] compost\n\(test\/chat-model; answer [0-9a-f-]{36}\)\n$/),
      err: '',
    });
  });

  it('lets an operator manage tenants and keys, retry failed jobs and redrive dead letters', async () => {
    const operator = { RAGWORKS_URL: baseUrl, RAGWORKS_API_KEY: ADMIN_TOKEN };
    const created = await cli(operator, 'tenants', 'create', 'cli-made', '--tier', 'standard');
    expect({ code: created.code, tenant: JSON.parse(created.out) }).toMatchObject({ code: 0, tenant: { slug: 'cli-made', tier: 'standard' } });
    const listed = await cli(operator, 'tenants', 'list');
    expect(JSON.parse(listed.out).items.map((item: { slug: string }) => item.slug)).toContain('cli-made');
    const key = await cli(operator, '--tenant', 'cli-made', 'keys', 'create', 'reader', '--scopes', 'search', 'documents:read');
    const made = JSON.parse(key.out);
    expect(made).toMatchObject({ name: 'reader', scopes: ['search', 'documents:read'], key: expect.stringMatching(/^rw_/) });
    // The new key works, and can do what its scopes say only.
    await stack.as(made.key, 'get', '/api/documents').expect(200);
    await stack.as(made.key, 'post', '/api/documents').send({ title: 'x', content: 'y' }).expect(403);

    expect(JSON.parse((await cli(operator, 'jobs', 'retry-failed', 'indexing', '--dry-run')).out)).toEqual({ matched: expect.any(Number), retried: 0 });
    expect(JSON.parse((await cli(operator, 'dead-letters', 'redrive', '--dry-run')).out)).toMatchObject({ redriven: 0, matched: expect.any(Number) });

    const refused = await cli({ RAGWORKS_URL: baseUrl, RAGWORKS_API_KEY: tenant.key }, 'tenants', 'list');
    expect({ code: refused.code, err: refused.err }).toEqual({ code: 1, err: expect.stringMatching(/^ragworks answered 403 forbidden: /) });
    expect(await cli({ RAGWORKS_URL: baseUrl }, 'search', 'x')).toMatchObject({ code: 2, err: expect.stringContaining('RAGWORKS_API_KEY') });
    expect((await cli(operator, 'search', 'x', '--limit', 'none')).code).toBe(2);
  });

  it('runs as the package\'s bin, as `npx ragworks` does', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [path.join(ROOT, 'bin', 'ragworks.js'), '--url', baseUrl, '--key', tenant.key, 'search', 'compost', '--mode', 'keyword', '--json'], { cwd: ROOT });
    expect(JSON.parse(stdout).results.map((hit: { title: string }) => hit.title)).toEqual(['compost']);
  });
});
