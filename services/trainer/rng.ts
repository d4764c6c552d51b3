// A small seeded generator (mulberry32) whose whole state is one uint32, so it can be checkpointed.
export class Rng {
  constructor(private state: number) {
    this.state = state >>> 0;
  }

  static derive(seed: number, ...streams: number[]): Rng {
    let state = seed >>> 0;
    for (const stream of streams) state = Math.imul(state ^ (stream + 0x9e3779b9), 0x85ebca6b) >>> 0;
    return new Rng(state ^ 0x2545f491);
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  uniform(low: number, high: number): number {
    return low + (high - low) * this.next();
  }

  normal(mean = 0, std = 1): number {
    const u = 1 - this.next();
    const v = this.next();
    return mean + std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  int(below: number): number {
    return Math.floor(this.next() * below);
  }

  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [items[i], items[j]] = [items[j], items[i]];
    }
    return items;
  }

  fill(count: number, draw: (rng: Rng) => number): Float32Array {
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) out[i] = draw(this);
    return out;
  }
}
