import http from 'node:http';
import type { AddressInfo } from 'node:net';
import JSZip from 'jszip';
import { PDFDocument, PDFHexString, PDFName, StandardFonts } from 'pdf-lib';
import { startStack, type TestStack } from '../helpers/harness';

// Uploads per docs/api.md#uploads: files built here (PDFs with pdf-lib, DOCX
// as a zip of WordprocessingML), typed by their bytes, refused as they stream
// when too large, kept as uploaded, parsed on the workers with page numbers,
// and hostile ones failed with a code instead of stalling a worker.

async function makePdf(pages: string[], options: { text?: boolean } = {}): Promise<Buffer> {
  const pdf = await PDFDocument.create();
  const font = await pdf.embedFont(StandardFonts.Helvetica);
  for (const text of pages) {
    const page = pdf.addPage([600, 800]);
    if (options.text === false) page.drawRectangle({ x: 20, y: 20, width: 200, height: 100 });
    else page.drawText(text, { x: 20, y: 780, size: 10, lineHeight: 12, font });
  }
  return Buffer.from(await pdf.save());
}

/** A PDF whose trailer says it is encrypted with a user password (the empty one does not open it). */
async function makeEncryptedPdf(): Promise<Buffer> {
  const pdf = await PDFDocument.create();
  pdf.addPage([200, 200]);
  const filled = (byte: number) => PDFHexString.of(Buffer.alloc(32, byte).toString('hex'));
  pdf.context.trailerInfo.Encrypt = pdf.context.obj({ Filter: PDFName.of('Standard'), V: 2, R: 3, Length: 128, P: -44, O: filled(0x11), U: filled(0x22) });
  pdf.context.trailerInfo.ID = pdf.context.obj([filled(0x33), filled(0x33)]);
  return Buffer.from(await pdf.save({ useObjectStreams: false }));
}

const WORD_NS = 'http://schemas.openxmlformats.org/wordprocessingml/2006/main';

async function makeDocx(paragraphs: string[], options: { documentXml?: string; extra?: Record<string, string> } = {}): Promise<Buffer> {
  const zip = new JSZip();
  zip.file('[Content_Types].xml', `<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>`);
  zip.file('_rels/.rels', `<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>`);
  const body = paragraphs.map((text) => `<w:p><w:r><w:t>${text}</w:t></w:r></w:p>`).join('');
  zip.file('word/document.xml', options.documentXml ?? `<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="${WORD_NS}"><w:body>${body}</w:body></w:document>`);
  for (const [name, content] of Object.entries(options.extra ?? {})) zip.file(name, content);
  return zip.generateAsync({ type: 'nodebuffer', compression: 'DEFLATE' });
}

interface Uploaded {
  id: string;
  title: string;
  content_type: string;
  content_bytes: number;
  status: string;
}

function upload(stack: TestStack, key: string, file: Buffer, filename: string, fields: Record<string, string | string[]> = {}) {
  const request = stack.as(key, 'post', '/api/documents/upload');
  for (const [name, value] of Object.entries(fields)) for (const item of [value].flat()) request.field(name, item);
  return request.attach('file', file, filename);
}

describe.each(['postgres', 'pglite'] as const)('uploads on %s', (database) => {
  let stack: TestStack;
  let tenant: { id: string; key: string };

  beforeAll(async () => {
    stack = await startStack({ database, env: { UPLOAD_MAX_PAGES: '4', UPLOAD_MAX_EXPANDED_BYTES: String(4 * 1024 * 1024) } });
    tenant = await stack.createTenant();
  });

  afterAll(async () => {
    await stack?.close();
  });

  const failureOf = async (id: string) => {
    const failed = await stack.waitForDocument(tenant.key, id, 'failed');
    return { error_code: failed.error_code, chunk_count: failed.chunk_count };
  };

  it('indexes a PDF on the workers, keeps each chunk\'s page, and finds it with its page', async () => {
    const pdf = await makePdf(['Apiary inspection schedule for spring.', 'Varroa mites are counted with a sugar roll.', 'Honey is extracted in late summer.']);
    const reply = await upload(stack, tenant.key, pdf, 'beekeeping.pdf', { tags: ['bees', 'guide'], metadata: JSON.stringify({ source: 'club' }) }).expect(202);
    const document = reply.body as Uploaded;
    expect(document).toMatchObject({ title: 'beekeeping', content_type: 'pdf', content_bytes: pdf.length, status: 'queued' });
    expect(reply.headers.location).toBe(`/api/documents/${document.id}`);
    const indexed = await stack.waitForDocument(tenant.key, document.id);
    expect({ tags: indexed.tags, metadata: indexed.metadata }).toEqual({ tags: ['bees', 'guide'], metadata: { source: 'club' } });

    const search = await stack.as(tenant.key, 'post', '/api/search').send({ query: 'varroa sugar roll', mode: 'keyword' }).expect(200);
    expect(search.body.results.map((hit: { title: string; page: number | null; content: string }) => ({ title: hit.title, page: hit.page }))).toEqual([{ title: 'beekeeping', page: 1 }]);
    // Chunks are cut by words, not pages: a small PDF is one chunk that begins on page 1; a page of its own begins later.
    const long = await makePdf(['Preface.', ...Array.from({ length: 3 }, (_, page) => `${'Filler words about nothing in particular.\n'.repeat(60)}Marker${'abc'[page]} appears here.`)]);
    const longDocument = (await upload(stack, tenant.key, long, 'long.pdf').expect(202)).body as Uploaded;
    await stack.waitForDocument(tenant.key, longDocument.id);
    const found = await stack.as(tenant.key, 'post', '/api/search').send({ query: 'markerc', mode: 'keyword' }).expect(200);
    expect(found.body.results[0].page).toBeGreaterThan(1);

    // The original comes back as uploaded, with its type.
    const original = await stack.as(tenant.key, 'get', `/api/documents/${document.id}/file`).buffer(true).parse((res, done) => {
      const parts: Buffer[] = [];
      res.on('data', (part: Buffer) => parts.push(part));
      res.on('end', () => done(null, Buffer.concat(parts)));
    });
    expect({ status: original.status, type: original.headers['content-type'], disposition: original.headers['content-disposition'], same: Buffer.compare(original.body, pdf) === 0 }).toEqual({
      status: 200,
      type: 'application/pdf',
      disposition: "attachment; filename*=UTF-8''beekeeping.pdf",
      same: true,
    });
    // Its text is its file's: title, tags and metadata change, the content does not.
    const patched = await stack.as(tenant.key, 'patch', `/api/documents/${document.id}`).send({ content: 'Something else entirely.' });
    expect({ status: patched.status, code: patched.body.error.code }).toEqual({ status: 409, code: 'conflict' });
    await stack.as(tenant.key, 'patch', `/api/documents/${document.id}`).send({ tags: ['bees'] }).expect(200);
    // An upload is a document like any other: its events are stored for webhooks, as a JSON document's are.
    const events = await stack.sql((db) => db('webhook_events').where({ tenant_id: tenant.id }).whereRaw(`payload->'data'->>'id' = ?`, [document.id]).pluck('type'));
    expect(events.sort()).toEqual(['document.created', 'document.indexed']);
    // The original goes with its document.
    await stack.as(tenant.key, 'delete', `/api/documents/${document.id}`).expect(204);
    await stack.as(tenant.key, 'get', `/api/documents/${document.id}/file`).expect(404);
    expect(Number((await stack.sql((db) => db('document_files').where({ document_id: document.id }).count('* as n').first()))?.n)).toBe(0);
  });

  it('indexes a DOCX and text files typed by their names and first bytes', async () => {
    const docx = (await upload(stack, tenant.key, await makeDocx(['Sourdough needs a lively starter.', 'Bake at two hundred and thirty degrees.']), 'bread.docx').expect(202)).body as Uploaded;
    const markdown = (await upload(stack, tenant.key, Buffer.from('# Compost\n\nTurn the compost heap weekly.'), 'compost.md', { title: 'Compost notes' }).expect(202)).body as Uploaded;
    const html = (await upload(stack, tenant.key, Buffer.from('<!doctype html><html><body><h1>Kites</h1><p>Fly kites on windy hills.</p></body></html>'), 'page').expect(202)).body as Uploaded;
    const code = (await upload(stack, tenant.key, Buffer.from('def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n'), 'fib.py').expect(202)).body as Uploaded;
    expect([docx, markdown, html, code].map(({ title, content_type }) => [title, content_type])).toEqual([
      ['bread', 'docx'],
      ['Compost notes', 'markdown'],
      ['page', 'html'],
      ['fib', 'code'],
    ]);
    for (const document of [docx, markdown, html, code]) await stack.waitForDocument(tenant.key, document.id);
    for (const [query, title] of [['lively starter', 'bread'], ['compost heap', 'Compost notes'], ['windy hills', 'page'], ['fibonacci', 'fib']]) {
      const search = await stack.as(tenant.key, 'post', '/api/search').send({ query, mode: 'keyword' }).expect(200);
      expect({ query, titles: search.body.results.map((hit: { title: string }) => hit.title) }).toEqual({ query, titles: [title] });
    }
  });

  it('fails hostile and textless files with a code, never a stuck worker, and stays able to index', async () => {
    const cases: Array<[string, Buffer, string]> = [
      ['encrypted.pdf', await makeEncryptedPdf(), 'file_encrypted'],
      ['corrupt.pdf', Buffer.from('%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF'), 'file_unreadable'],
      ['long.pdf', await makePdf(['one', 'two', 'three', 'four', 'five']), 'too_many_pages'],
      ['scan.pdf', await makePdf(['', ''], { text: false }), 'no_text_found'],
      ['bomb.docx', await makeDocx(['Hello'], { extra: { 'word/media/padding.xml': ' '.repeat(8 * 1024 * 1024) } }), 'file_too_large_expanded'],
      [
        'entities.docx',
        await makeDocx([], {
          documentXml: `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><w:document xmlns:w="${WORD_NS}"><w:body><w:p><w:r><w:t>&lol2;</w:t></w:r></w:p></w:body></w:document>`,
        }),
        'file_unreadable',
      ],
      ['notword.docx', await (async () => { const zip = new JSZip(); zip.file('readme.txt', 'not a document'); return zip.generateAsync({ type: 'nodebuffer', compression: 'DEFLATE' }); })(), 'file_unreadable'],
    ];
    for (const [name, bytes, code] of cases) {
      const document = (await upload(stack, tenant.key, bytes, name).expect(202)).body as Uploaded;
      expect({ name, ...(await failureOf(document.id)) }).toEqual({ name, error_code: code, chunk_count: 0 });
    }
    // The workers go on indexing.
    const after = (await upload(stack, tenant.key, await makePdf(['Still indexing after all that.']), 'after.pdf').expect(202)).body as Uploaded;
    await stack.waitForDocument(tenant.key, after.id);
  });

  it('judges the type by the bytes, not the name or the declared type, and refuses what it cannot read', async () => {
    const refusals: Array<[Buffer, string, string]> = [
      [Buffer.from('just text pretending'), 'report.pdf', 'named .pdf'],
      [Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13]), 'image.txt', 'neither PDF, DOCX nor UTF-8 text'],
      [Buffer.from([0x50, 0x4b, 0x03, 0x04, 0, 0]), 'archive.zip', 'zip archive'],
      [Buffer.from('plain words'), 'program.exe', 'extension .exe'],
    ];
    for (const [bytes, name, message] of refusals) {
      const reply = await stack.as(tenant.key, 'post', '/api/documents/upload').attach('file', bytes, { filename: name, contentType: 'application/pdf' });
      expect({ name, status: reply.status, code: reply.body.error.code }).toEqual({ name, status: 415, code: 'unsupported_media_type' });
      expect(reply.body.error.message).toContain(message);
    }
    // A PDF named .txt is a PDF.
    expect((await upload(stack, tenant.key, await makePdf(['Renamed file.']), 'notes.txt').expect(202)).body.content_type).toBe('pdf');
  });

  it('refuses a form without a file, bad fields and JSON sent here, changing nothing', async () => {
    const before = (await stack.as(tenant.key, 'get', '/api/documents?limit=100').expect(200)).body.items.length;
    const noFile = await stack.as(tenant.key, 'post', '/api/documents/upload').field('title', 'nothing');
    expect({ status: noFile.status, field: noFile.body.error.details?.field }).toEqual({ status: 400, field: 'file' });
    const badMetadata = await upload(stack, tenant.key, Buffer.from('text'), 'a.txt', { metadata: 'not json' });
    expect(badMetadata.status).toBe(400);
    const unknownField = await upload(stack, tenant.key, Buffer.from('text'), 'a.txt', { colour: 'blue' });
    expect(unknownField.status).toBe(400);
    const json = await stack.as(tenant.key, 'post', '/api/documents/upload').send({ title: 'x', content: 'y' });
    expect({ status: json.status, code: json.body.error.code }).toEqual({ status: 415, code: 'unsupported_media_type' });
    expect((await stack.as(tenant.key, 'get', '/api/documents?limit=100').expect(200)).body.items.length).toBe(before);
    // A document posted as JSON has no file.
    const posted = await stack.as(tenant.key, 'post', '/api/documents').send({ title: 'JSON', content: 'posted as JSON' }).expect(202);
    await stack.as(tenant.key, 'get', `/api/documents/${posted.body.id}/file`).expect(404);
  });
});

describe('an upload larger than UPLOAD_MAX_BYTES', () => {
  let stack: TestStack;
  let server: http.Server;

  beforeAll(async () => {
    stack = await startStack({ database: 'pglite', workers: false, env: { UPLOAD_MAX_BYTES: String(64 * 1024) } });
    server = stack.app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    await stack?.close();
  });

  it('is answered 413 while it streams in, before the rest is sent, and stores nothing', async () => {
    const tenant = await stack.createTenant();
    const boundary = 'ragworks-test-boundary';
    const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request({
        host: '127.0.0.1',
        port: (server.address() as AddressInfo).port,
        method: 'POST',
        path: '/api/documents/upload',
        // Chunked: no length to judge by, so the limit must hold while reading.
        headers: { authorization: `Bearer ${tenant.key}`, 'content-type': `multipart/form-data; boundary=${boundary}` },
      });
      req.on('response', (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (part: string) => (text += part));
        res.on('end', () => resolve({ status: res.statusCode!, body: text }));
      });
      req.on('error', reject);
      req.write(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\nContent-Type: text/plain\r\n\r\n`);
      // 128 KB of a file allowed 64 KB; the end of the form is never sent, so only an answer given mid-stream ends this.
      req.write(Buffer.alloc(128 * 1024, 'a'));
    });
    expect(status).toBe(413);
    expect(JSON.parse(body).error).toMatchObject({ code: 'payload_too_large', details: { limit_bytes: 64 * 1024 } });
    expect((await stack.as(tenant.key, 'get', '/api/documents').expect(200)).body.items).toEqual([]);

    // A declared length over the limit is refused before any of the body is read.
    const declared = await stack.as(tenant.key, 'post', '/api/documents/upload').attach('file', Buffer.alloc(200 * 1024, 'b'), 'big.txt');
    expect({ status: declared.status, code: declared.body.error.code }).toEqual({ status: 413, code: 'payload_too_large' });
  });
});
