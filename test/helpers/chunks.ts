import type { Chunk, ChunkingOptions } from '../../src/domain/chunking/chunker';

/** Words as the chunker counts them: runs of characters that `\s` does not match. */
export function wordSpans(text: string): Array<[number, number]> {
  return Array.from(text.matchAll(/\S+/g), (m) => [m.index, m.index + m[0].length]);
}

export function countWords(text: string): number {
  return wordSpans(text).length;
}

const SPACE = /\s/;

/**
 * What every chunking promises, whatever the input: each chunk is exactly
 * `source.slice(charStart, charEnd)`, starts and ends on whole words, holds
 * between 1 and maxWords words, and adds words the previous chunk lacks
 * (charStart and charEnd both increase); ordinals count from 0; together the
 * chunks hold every word of the source.
 */
export function expectChunkInvariants(source: string, chunks: Chunk[], options: ChunkingOptions): void {
  chunks.forEach((chunk, i) => {
    expect(chunk.ordinal).toBe(i);
    expect(source.slice(chunk.charStart, chunk.charEnd)).toBe(chunk.content);
    const words = countWords(chunk.content);
    expect(words).toBeGreaterThan(0);
    expect(words).toBeLessThanOrEqual(options.maxWords);
    expect(chunk.charStart === 0 || SPACE.test(source[chunk.charStart - 1]!)).toBe(true);
    expect(chunk.charEnd === source.length || SPACE.test(source[chunk.charEnd]!)).toBe(true);
    expect(SPACE.test(source[chunk.charEnd - 1]!)).toBe(false);
    if (i > 0) {
      expect(chunk.charStart).toBeGreaterThan(chunks[i - 1]!.charStart);
      expect(chunk.charEnd).toBeGreaterThan(chunks[i - 1]!.charEnd);
    }
  });
  // Both offsets increase, so the first chunk reaching past a word's end is the
  // one that starts earliest among those that could hold it.
  let c = 0;
  for (const [start, end] of wordSpans(source)) {
    while (c < chunks.length && chunks[c]!.charEnd < end) c++;
    if (c === chunks.length || chunks[c]!.charStart > start) {
      throw new Error(`the word ${JSON.stringify(source.slice(start, end))} at ${start} is in no chunk`);
    }
  }
}

/**
 * CPU time of a synchronous call (this process, every thread): unlike wall
 * time it does not grow when other processes compete for the cores.
 */
export function cpuMilliseconds<T>(call: () => T): { result: T; ms: number } {
  const before = process.cpuUsage();
  const result = call();
  const used = process.cpuUsage(before);
  return { result, ms: (used.user + used.system) / 1000 };
}
