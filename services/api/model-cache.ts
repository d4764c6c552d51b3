// Loaded base models by id for serving routes, least recently used first: loads of one model are
// shared, and beyond the capacity the least recently used model nobody is using is disposed.
export interface Disposable {
  dispose(): void;
}

interface Entry<T> {
  value: Promise<T>;
  inFlight: number;
}

export class BaseModelCache<T extends Disposable> {
  private readonly loaded = new Map<string, Entry<T>>();

  constructor(
    private readonly capacity: number,
    private readonly load: (modelDir: string) => Promise<T>,
  ) {}

  /** The loaded model, counted as in use until release(). */
  async acquire(baseModelId: string, modelDir: string): Promise<T> {
    let entry = this.loaded.get(baseModelId);
    if (entry) {
      this.loaded.delete(baseModelId);
    } else {
      const created: Entry<T> = { value: this.load(modelDir), inFlight: 0 };
      created.value.catch(() => {
        if (this.loaded.get(baseModelId) === created) this.loaded.delete(baseModelId);
      });
      entry = created;
    }
    this.loaded.set(baseModelId, entry);
    entry.inFlight += 1;
    try {
      return await entry.value;
    } catch (error) {
      entry.inFlight -= 1;
      throw error;
    } finally {
      this.evict();
    }
  }

  release(baseModelId: string): void {
    const entry = this.loaded.get(baseModelId);
    if (entry) entry.inFlight -= 1;
    this.evict();
  }

  private evict(): void {
    let excess = this.loaded.size - this.capacity;
    for (const [id, entry] of this.loaded) {
      if (excess <= 0) return;
      // Only a model nobody is using right now can be dropped; the next call tries again.
      if (entry.inFlight > 0) continue;
      excess -= 1;
      this.loaded.delete(id);
      void entry.value.then((value) => value.dispose(), () => undefined);
    }
  }
}
