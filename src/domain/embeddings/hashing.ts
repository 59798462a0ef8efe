import type { Embedder } from './embedder';

/**
 * Offline embedder: feature hashing of word unigrams, word bigrams and
 * character trigrams into a fixed number of signed buckets. It captures lexical
 * overlap (including shared word stems via trigrams), not meaning; it lets the
 * system run with no model or network, and keeps tests deterministic.
 *
 * Changing anything that alters the vectors requires a new model name, since
 * stored vectors are only comparable with vectors from the same model.
 */
export const HASHING_MODEL = 'ragworks-hash-v1';

// Per-occurrence weights before tf damping. A word of n letters yields n
// trigrams, so trigrams are weighted well below words to keep whole-word
// matches dominant while still rewarding shared stems ("install"/"installing").
const WORD_WEIGHT = 1.0;
const BIGRAM_WEIGHT = 0.5;
const TRIGRAM_WEIGHT = 0.3;
// Without document frequencies, function words would make every English text
// look alike; damping them is the cheap substitute for IDF.
const STOPWORD_FACTOR = 0.2;
// Bounds the work for pathological tokens such as base64 blobs.
const MAX_TRIGRAM_WORD_LENGTH = 48;

const STOPWORDS = new Set(
  (
    'a an and are as at be been but by can could did do does for from had has have he her his how i if in into is it its ' +
    'me my no not of on or our she so than that the their them then there these they this those to too us was we were ' +
    'what when where which who why will with would you your'
  ).split(' '),
);

const TOKEN = /[\p{L}\p{N}\p{M}]+/gu;
// Chinese and Japanese are written without spaces; each ideograph or kana is a
// token, so unigrams and bigrams become the usual character n-grams for them.
const UNSPACED_SCRIPT = /[\p{scx=Han}\p{scx=Hiragana}\p{scx=Katakana}]/u;
const UNSPACED_SPLIT = /[\p{scx=Han}\p{scx=Hiragana}\p{scx=Katakana}]|[^\p{scx=Han}\p{scx=Hiragana}\p{scx=Katakana}]+/gu;

// Bound once: global lookups are slow in sandboxed contexts (vm, test runners),
// and these run several thousand times per text.
const imul = Math.imul;

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;
const WORD_BEGIN = 0x02;
const WORD_END = 0x03;

// Distinguish feature kinds so "ab" the word and "ab" the trigram differ.
const KIND_WORD = 1;
const KIND_BIGRAM = 2;
const KIND_TRIGRAM = 3;

// Slots of FeatureCounts: each kind, plain and stopword-damped.
const SLOT_WORD = 0;
const SLOT_BIGRAM = 2;
const SLOT_TRIGRAM = 4;

// FNV-1a over 16-bit code units (or code points for trigrams): stable across
// platforms and versions, which a stored index depends on.
function fnvStep(h: number, unit: number): number {
  return imul(h ^ unit, FNV_PRIME);
}

function fnvString(h: number, s: string): number {
  for (let i = 0; i < s.length; i++) h = imul(h ^ s.charCodeAt(i), FNV_PRIME);
  return h;
}

// murmur3's finaliser: FNV's low bits are weak, and both the bucket and the
// sign are taken from the hash.
function mix(h: number): number {
  h ^= h >>> 16;
  h = imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function tokenize(text: string): string[] {
  const tokens: string[] = [];
  for (const match of text.normalize('NFKC').toLowerCase().matchAll(TOKEN)) {
    const token = match[0];
    if (UNSPACED_SCRIPT.test(token)) {
      for (const part of token.matchAll(UNSPACED_SPLIT)) tokens.push(part[0]);
    } else {
      tokens.push(token);
    }
  }
  return tokens;
}

/** Term frequencies per hashed feature, one map per distinct weight. */
class FeatureCounts {
  readonly maps: Map<number, number>[] = [];
  readonly weights: number[] = [];

  add(slot: number, weight: number, hash: number): void {
    let map = this.maps[slot];
    if (map === undefined) {
      map = new Map();
      this.maps[slot] = map;
      this.weights[slot] = weight;
    }
    map.set(hash, (map.get(hash) ?? 0) + 1);
  }
}

const codePoints = new Int32Array(MAX_TRIGRAM_WORD_LENGTH + 2);

function addTrigrams(counts: FeatureCounts, word: string, slot: number, weight: number): void {
  let n = 0;
  codePoints[n++] = WORD_BEGIN;
  for (const ch of word) {
    if (n > MAX_TRIGRAM_WORD_LENGTH) break;
    codePoints[n++] = ch.codePointAt(0)!;
  }
  // A one-letter word's only trigram would duplicate its unigram.
  if (n <= 2) return;
  codePoints[n++] = WORD_END;
  for (let i = 0; i + 2 < n; i++) {
    let h = fnvStep(FNV_OFFSET, KIND_TRIGRAM);
    h = fnvStep(h, codePoints[i]);
    h = fnvStep(h, codePoints[i + 1]);
    h = fnvStep(h, codePoints[i + 2]);
    counts.add(slot, weight, mix(h));
  }
}

export function embedText(text: string, dimensions: number): number[] {
  const vector = new Float64Array(dimensions);
  const tokens = tokenize(text);
  const counts = new FeatureCounts();
  let previous: string | null = null;
  let previousIsStop = false;
  for (const token of tokens) {
    const isStop = STOPWORDS.has(token);
    const factor = isStop ? STOPWORD_FACTOR : 1;
    const stopSlot = isStop ? 1 : 0;
    counts.add(SLOT_WORD + stopSlot, WORD_WEIGHT * factor, mix(fnvString(fnvStep(FNV_OFFSET, KIND_WORD), token)));
    if (previous !== null) {
      const bothStop = isStop && previousIsStop;
      let h = fnvString(fnvStep(FNV_OFFSET, KIND_BIGRAM), previous);
      h = fnvString(fnvStep(h, 0), token);
      counts.add(SLOT_BIGRAM + (bothStop ? 1 : 0), BIGRAM_WEIGHT * (bothStop ? STOPWORD_FACTOR : 1), mix(h));
    }
    addTrigrams(counts, token, SLOT_TRIGRAM + stopSlot, TRIGRAM_WEIGHT * factor);
    previous = token;
    previousIsStop = isStop;
  }

  for (let slot = 0; slot < counts.maps.length; slot++) {
    const map = counts.maps[slot];
    if (map === undefined) continue;
    const weight = counts.weights[slot];
    for (const [hash, tf] of map) {
      // Bucket and sign from independent bits: the sign makes colliding
      // features cancel on average instead of piling up.
      const bucket = (hash >>> 1) % dimensions;
      const value = weight * (1 + Math.log(tf));
      vector[bucket] += (hash & 1) === 0 ? value : -value;
    }
  }

  let norm = 0;
  for (let i = 0; i < dimensions; i++) norm += vector[i] * vector[i];
  const result = new Array<number>(dimensions);
  const scale = norm > 0 ? 1 / Math.sqrt(norm) : 0;
  for (let i = 0; i < dimensions; i++) result[i] = vector[i] * scale;
  return result;
}

export function createHashingEmbedder(dimensions = 384): Embedder {
  if (!Number.isInteger(dimensions) || dimensions < 1) throw new RangeError('dimensions must be a positive integer');
  return {
    model: HASHING_MODEL,
    dimensions,
    local: 'hashing',
    async embed(texts: string[], signal?: AbortSignal): Promise<number[][]> {
      const vectors: number[][] = [];
      for (const text of texts) {
        signal?.throwIfAborted();
        vectors.push(embedText(text, dimensions));
      }
      return vectors;
    },
  };
}
