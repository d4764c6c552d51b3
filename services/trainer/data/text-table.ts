// The first example of each distinct text, in typed arrays rather than a Map of objects: a dataset of
// a million examples costs some 25 MB here instead of hundreds. Texts are keyed by two independent
// 32-bit hashes (a 64-bit key: a million distinct texts collide with odds of about 3e-8).

const EMPTY = 0;

export class TextTable {
  private capacity = 1024;
  private keysHigh = new Uint32Array(this.capacity);
  private keysLow = new Uint32Array(this.capacity);
  /** 1-based line of the first example with the text; 0 marks a free slot. */
  private lines = new Uint32Array(this.capacity);
  /** The first example's label index + 1 (0: no label). */
  private labels = new Uint32Array(this.capacity);
  private conflicts = new Uint8Array(this.capacity);
  size = 0;

  /** The slot holding the key, or -1. */
  find(high: number, low: number): number {
    const mask = this.capacity - 1;
    for (let slot = (high ^ Math.imul(low, 0x9e3779b1)) & mask; ; slot = (slot + 1) & mask) {
      if (this.lines[slot] === EMPTY) return -1;
      if (this.keysHigh[slot] === high && this.keysLow[slot] === low) return slot;
    }
  }

  insert(high: number, low: number, line: number, label: number): void {
    if ((this.size + 1) * 10 > this.capacity * 7) this.grow();
    this.place(high, low, line, label + 1, 0);
    this.size += 1;
  }

  lineAt(slot: number): number {
    return this.lines[slot];
  }

  /** The label index the first example had; -1 for none. */
  labelAt(slot: number): number {
    return this.labels[slot] - 1;
  }

  conflicted(slot: number): boolean {
    return this.conflicts[slot] === 1;
  }

  markConflicted(slot: number): void {
    this.conflicts[slot] = 1;
  }

  private place(high: number, low: number, line: number, storedLabel: number, conflict: number): void {
    const mask = this.capacity - 1;
    let slot = (high ^ Math.imul(low, 0x9e3779b1)) & mask;
    while (this.lines[slot] !== EMPTY) slot = (slot + 1) & mask;
    this.keysHigh[slot] = high;
    this.keysLow[slot] = low;
    this.lines[slot] = line;
    this.labels[slot] = storedLabel;
    this.conflicts[slot] = conflict;
  }

  private grow(): void {
    const { keysHigh, keysLow, lines, labels, conflicts } = this;
    this.capacity *= 2;
    this.keysHigh = new Uint32Array(this.capacity);
    this.keysLow = new Uint32Array(this.capacity);
    this.lines = new Uint32Array(this.capacity);
    this.labels = new Uint32Array(this.capacity);
    this.conflicts = new Uint8Array(this.capacity);
    for (let slot = 0; slot < lines.length; slot++) {
      if (lines[slot] !== EMPTY) this.place(keysHigh[slot], keysLow[slot], lines[slot], labels[slot], conflicts[slot]);
    }
  }
}
