// Near-duplicate search that stays cheap on big files: each example's normalized text becomes a
// MinHash signature over its character 5-grams, and locality-sensitive hashing (bands of the
// signature) proposes candidate pairs, so no pair of examples is ever compared blindly.
//
// Parameters (documented in services/trainer/README.md, "Dataset quality"): 64 hash functions in
// 16 bands of 4 rows; a candidate counts as a near duplicate when its signatures agree on at least
// NEAR_DUPLICATE_JACCARD (0.8) of the 64 positions, the MinHash estimate of the Jaccard similarity
// of the two 5-gram sets. Banding finds a pair of true similarity 0.8 with probability
// 1 − (1 − 0.8⁴)¹⁶ ≈ 0.9998, one of 0.5 with probability 0.64 (then refused by the estimate).

export const SHINGLE_CHARS = 5;
export const NEAR_DUPLICATE_JACCARD = 0.8;
const HASHES = 64;
const BANDS = 16;
const ROWS = HASHES / BANDS;
/**
 * Near duplicates are searched among this many examples (the first ones that are not exact
 * duplicates); later examples are checked for exact duplicates only. Bounds the time (about a second
 * per 10,000 examples of 200 characters) and memory (about 0.5 KB per example) a report may take.
 */
export const NEAR_DUPLICATE_MAX_EXAMPLES = 50_000;

/**
 * The text as compared: Unicode NFKC, lower case, every run of characters that are neither letters
 * nor digits turned into one space, trimmed. "Great film!!" and "great  film" normalize alike.
 */
export function normalizeText(text: string): string {
  // Plain ASCII (most datasets) needs neither NFKC nor Unicode classes: the same result several times faster.
  if (/^[\x00-\x7f]*$/.test(text)) return text.toLowerCase().replace(/[^a-z0-9]+/g, " ").trim();
  return text.normalize("NFKC").toLowerCase().replace(/[^\p{L}\p{N}]+/gu, " ").trim();
}

const pair = new Uint32Array(2);

/** Two independent 32-bit hashes of a text in one pass (FNV-1a and a murmur-style multiply-xor), for a 64-bit key. */
export function hashPair(text: string): Uint32Array {
  let first = 0x811c9dc5;
  let second = 0x9747b28c;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    first = Math.imul(first ^ unit, 0x01000193);
    second = Math.imul(second ^ unit, 0x5bd1e995);
    second ^= second >>> 15;
  }
  pair[0] = first >>> 0;
  pair[1] = second >>> 0;
  return pair;
}

/** FNV-1a over a string's UTF-16 units: a fast 32-bit hash for the shingle keys. */
export function fnv1a(text: string, start = 0, end = text.length): number {
  let hash = 0x811c9dc5;
  for (let i = start; i < end; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

// Fixed odd multipliers and offsets for the 64 hash functions, from a seeded generator: reports are
// reproducible from run to run.
const MULTIPLIERS = new Uint32Array(HASHES);
const OFFSETS = new Uint32Array(HASHES);
{
  let state = 0x9e3779b9;
  const next = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return state >>> 0;
  };
  for (let i = 0; i < HASHES; i++) {
    MULTIPLIERS[i] = next() | 1;
    OFFSETS[i] = next();
  }
}

function mix(value: number): number {
  value ^= value >>> 16;
  value = Math.imul(value, 0x85ebca6b);
  value ^= value >>> 13;
  return value >>> 0;
}

/** MinHash signature of a normalized text's character 5-grams (a shorter text is one shingle). */
export function signatureOf(normalized: string): Uint32Array {
  const signature = new Uint32Array(HASHES).fill(0xffffffff);
  const shingles = Math.max(1, normalized.length - SHINGLE_CHARS + 1);
  for (let start = 0; start < shingles; start++) {
    // One well-mixed hash per shingle; the 64 functions are cheap multiply-xor variations of it.
    const shingle = mix(fnv1a(normalized, start, Math.min(normalized.length, start + SHINGLE_CHARS)));
    for (let i = 0; i < HASHES; i++) {
      const hashed = Math.imul(shingle ^ OFFSETS[i], MULTIPLIERS[i]) >>> 0;
      if (hashed < signature[i]) signature[i] = hashed;
    }
  }
  return signature;
}

/** The share of positions where two signatures agree: the estimate of their sets' Jaccard similarity. */
export function estimatedJaccard(a: Uint32Array, b: Uint32Array): number {
  let same = 0;
  for (let i = 0; i < HASHES; i++) if (a[i] === b[i]) same++;
  return same / HASHES;
}

/**
 * Signatures of the examples seen so far, indexed by band. `match` answers the earliest indexed
 * example that shares a band with the signature and passes the similarity estimate.
 */
export class NearDuplicateIndex {
  private readonly bands: Map<number, number>[] = Array.from({ length: BANDS }, () => new Map());
  /** Every indexed signature, one after another: no object per example. */
  private signatures = new Uint32Array(HASHES * 1024);
  private readonly ids: number[] = [];

  get size(): number {
    return this.ids.length;
  }

  private static bandKey(signature: Uint32Array, band: number): number {
    let hash = 0x811c9dc5;
    for (let row = band * ROWS; row < (band + 1) * ROWS; row++) {
      hash ^= signature[row];
      hash = Math.imul(hash, 0x01000193);
    }
    return hash >>> 0;
  }

  match(signature: Uint32Array): { id: number; similarity: number } | undefined {
    let best: { id: number; similarity: number } | undefined;
    const tried = new Set<number>();
    for (let band = 0; band < BANDS; band++) {
      const slot = this.bands[band].get(NearDuplicateIndex.bandKey(signature, band));
      if (slot === undefined || tried.has(slot)) continue;
      tried.add(slot);
      const similarity = estimatedJaccard(signature, this.signatures.subarray(slot * HASHES, (slot + 1) * HASHES));
      if (similarity >= NEAR_DUPLICATE_JACCARD && (!best || this.ids[slot] < best.id)) best = { id: this.ids[slot], similarity };
    }
    return best;
  }

  /** Indexes a signature under `id`; each band bucket keeps its first example, the one later examples are reported against. */
  add(id: number, signature: Uint32Array): void {
    const slot = this.ids.length;
    if ((slot + 1) * HASHES > this.signatures.length) {
      const grown = new Uint32Array(this.signatures.length * 2);
      grown.set(this.signatures);
      this.signatures = grown;
    }
    this.signatures.set(signature, slot * HASHES);
    this.ids.push(id);
    for (let band = 0; band < BANDS; band++) {
      const key = NearDuplicateIndex.bandKey(signature, band);
      if (!this.bands[band].has(key)) this.bands[band].set(key, slot);
    }
  }
}
