// Length statistics of a dataset's examples (characters at upload, tokens at a job's preflight):
// a few percentiles and a power-of-two histogram, compact and readable across orders of magnitude.

export interface LengthStats {
  min: number;
  max: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  histogram: { upTo: number; count: number }[];
}

function percentile(sorted: Float64Array, fraction: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))];
}

export function lengthStats(lengths: ArrayLike<number>): LengthStats {
  const sorted = Float64Array.from(lengths).sort();
  if (sorted.length === 0) return { min: 0, max: 0, mean: 0, p50: 0, p90: 0, p99: 0, histogram: [] };
  const buckets = new Map<number, number>();
  for (const length of sorted) {
    const upTo = length <= 1 ? 1 : 2 ** Math.ceil(Math.log2(length));
    buckets.set(upTo, (buckets.get(upTo) ?? 0) + 1);
  }
  return {
    min: sorted[0],
    max: sorted[sorted.length - 1],
    mean: sorted.reduce((sum, value) => sum + value, 0) / sorted.length,
    p50: percentile(sorted, 0.5),
    p90: percentile(sorted, 0.9),
    p99: percentile(sorted, 0.99),
    histogram: [...buckets].map(([upTo, count]) => ({ upTo, count })),
  };
}

/** Growable list of lengths (whole numbers) without a boxed number per example. */
export class LengthList {
  private values = new Uint32Array(1024);
  private used = 0;

  push(value: number): void {
    if (this.used === this.values.length) {
      const grown = new Uint32Array(this.values.length * 2);
      grown.set(this.values);
      this.values = grown;
    }
    this.values[this.used++] = value;
  }

  stats(): LengthStats {
    return lengthStats(this.values.subarray(0, this.used));
  }
}
