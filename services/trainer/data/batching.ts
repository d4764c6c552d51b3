// How any task's examples are split and batched: a seeded validation split, and per-epoch batches
// that depend only on (seed, epoch) so a resumed run sees the same order.
import { Rng } from "../rng.ts";

/** Splits off a seeded fraction of the records for validation. */
export function splitValidation<T>(records: T[], fraction: number, seed: number): { train: T[]; validation: T[] } {
  const order = Rng.derive(seed, 0x5b1).shuffle(records.map((_, i) => i));
  const count = Math.max(1, Math.floor(records.length * fraction));
  const held = new Set(order.slice(0, count));
  return { train: records.filter((_, i) => !held.has(i)), validation: records.filter((_, i) => held.has(i)) };
}

const BUCKET_BATCHES = 50;

/**
 * The batches of one epoch as example indices: a seeded shuffle, then within windows of
 * 50 batches examples are sorted by length so each batch pads little, then the batch order is
 * shuffled again. Depends only on (seed, epoch), so a resumed run sees the same order.
 */
export function epochBatches(lengths: number[], batchSize: number, seed: number, epoch: number): number[][] {
  const rng = Rng.derive(seed, 0xe90c, epoch);
  const order = rng.shuffle(lengths.map((_, i) => i));
  const batches: number[][] = [];
  const window = batchSize * BUCKET_BATCHES;
  for (let start = 0; start < order.length; start += window) {
    const bucket = order.slice(start, start + window).sort((a, b) => lengths[b] - lengths[a]);
    for (let i = 0; i < bucket.length; i += batchSize) batches.push(bucket.slice(i, i + batchSize));
  }
  return rng.shuffle(batches);
}
