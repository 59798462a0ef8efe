import path from 'node:path';
import { chunkDocument, DEFAULT_CHUNKING } from '../../src/domain/chunking/chunker';
import { embedText } from '../../src/domain/embeddings/hashing';
import { CpuPool, DocumentTooComplexError } from '../../src/domain/indexing/cpu-pool';
import { createIndexingCpu } from '../../src/domain/indexing/indexer';
import { embeddingText } from '../../src/domain/indexing/prepare';
import type * as Tasks from '../helpers/cpu-tasks';

const ENTRY = path.join(__dirname, '../helpers/cpu-tasks.ts');

describe('CPU pool', () => {
  const errors: Error[] = [];
  let pool: CpuPool<typeof Tasks>;
  const open = (threads: number, deadlineMs: number) => {
    pool = new CpuPool<typeof Tasks>({ entry: ENTRY, threads, deadlineMs, onError: (error) => errors.push(error) });
    return pool;
  };
  afterEach(async () => {
    await pool?.close();
    expect(errors).toEqual([]);
  });

  it('stops a task that holds its thread past the deadline, while the other thread keeps serving', async () => {
    open(2, 1_000);
    // Both threads have started and loaded the entry: what follows measures tasks, not start-up.
    const [first, second] = await Promise.all([pool.run('spin', 50), pool.run('spin', 50)]);
    expect(first).not.toBe(second);

    const started = Date.now();
    const runaway = pool.run('spin', 60_000).then(
      () => 'finished',
      (error: unknown) => error,
    );
    // Meanwhile the other thread takes task after task.
    const meanwhile: number[] = [];
    for (let i = 0; i < 5; i++) meanwhile.push(await pool.run('spin', 20));

    const stopped = await runaway;
    expect(stopped).toBeInstanceOf(DocumentTooComplexError);
    expect((stopped as Error).message).toMatch(/^document_too_complex: .*1000 ms/);
    // Stopped at the deadline, not after the minute it asked for.
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(new Set(meanwhile).size).toBe(1);

    // The terminated thread was replaced: two threads serve again, the runaway's one is gone.
    const after = await Promise.all([pool.run('spin', 300), pool.run('spin', 300)]);
    expect(new Set(after).size).toBe(2);
    expect(after).toContain(meanwhile[0]);
  });

  it('counts the deadline from when a thread starts the task, not from when it was queued', async () => {
    open(1, 700);
    await pool.run('spin', 1);
    // The second waits about 500 ms for the only thread, then runs 500 ms: over the deadline only if waiting counted.
    const results = await Promise.allSettled([pool.run('spin', 500), pool.run('spin', 500)]);
    expect(results.map((result) => result.status)).toEqual(['fulfilled', 'fulfilled']);
  });

  it("rejects with the caller's abort, not as too complex, and passes a task's own error through", async () => {
    open(1, 5_000);
    const controller = new AbortController();
    const running = pool.run('spin', 60_000, controller.signal).catch((error: unknown) => error);
    setTimeout(() => controller.abort(new Error('shutdown')), 200);
    const aborted = await running;
    expect(aborted).toMatchObject({ name: 'AbortError' });
    expect(aborted).not.toBeInstanceOf(DocumentTooComplexError);

    await expect(pool.run('fail', 'no such thing')).rejects.toMatchObject({ name: 'RangeError', message: 'no such thing' });
    expect(typeof (await pool.run('spin', 1))).toBe('number');
  });

  it('refuses work once closed', async () => {
    open(1, 1_000);
    await pool.run('spin', 1);
    await pool.close();
    await expect(pool.run('spin', 1)).rejects.toThrow('closed');
  });
});

describe('the indexing pool', () => {
  it('chunks and embeds in its threads exactly as the same code does on the event loop', async () => {
    const errors: Error[] = [];
    const cpu = createIndexingCpu({ threads: 1, deadlineMs: 10_000, onError: (error) => errors.push(error) });
    try {
      const content = Array.from({ length: 4 }, (_, section) => `## Part ${section}\n\n${'Herons wade and wait. '.repeat(200)}`).join('\n\n');
      const input = { title: 'Herons', content, contentType: 'markdown' as const, chunking: DEFAULT_CHUNKING, hashDimensions: 64 };
      const prepared = await cpu.run('prepareDocument', input);
      const chunks = chunkDocument(content, 'markdown', DEFAULT_CHUNKING);
      expect(prepared.chunks).toEqual(chunks);
      expect(chunks.length).toBeGreaterThan(1);
      // One flat buffer, row i being chunk i's vector (not instanceof here: jest's realm is not the thread's).
      expect(Object.prototype.toString.call(prepared.vectors)).toBe('[object Float64Array]');
      expect(Array.from(prepared.vectors!)).toEqual(chunks.flatMap((chunk) => embedText(embeddingText('Herons', chunk), 64)));

      // Without the built-in embedder (another provider, or no pgvector) it only chunks.
      expect(await cpu.run('prepareDocument', { ...input, hashDimensions: null })).toEqual({ chunks, vectors: null });
      expect(errors).toEqual([]);
    } finally {
      await cpu.close();
    }
  });
});
