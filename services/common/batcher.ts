// Batching of concurrent calls into one round trip, for the API's hot paths.

/**
 * Serves many calls with one `run` over all their inputs: one SQL statement or one Redis
 * round trip, not one per request. A batch goes out at the end of the event-loop turn its
 * first call came in, or at once when `maxInputs` wait. With `maxRunning`, calls made while that many batches are out wait
 * for one to come back: under load a batch then grows with the load instead of the statements.
 * Every batch is sent after all its calls were made. `run` answers each input, in order, with
 * a value or a promise of one; if `run` fails, each call of the batch fails with it.
 */
export class CallBatcher<I, O> {
  private pending: { input: I; resolve: (output: O | PromiseLike<O>) => void; reject: (error: unknown) => void }[] = [];
  private running = 0;
  private scheduled = false;

  constructor(
    private readonly run: (inputs: I[]) => Promise<(O | PromiseLike<O>)[]>,
    private readonly maxInputs: number,
    private readonly maxRunning = Infinity,
  ) {}

  add(input: I): Promise<O> {
    return new Promise((resolve, reject) => {
      this.pending.push({ input, resolve, reject });
      if (this.pending.length >= this.maxInputs) this.flush();
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.flush();
        });
      }
    });
  }

  private flush(): void {
    if (this.pending.length === 0 || this.running >= this.maxRunning) return;
    const batch = this.pending.splice(0, this.maxInputs);
    this.running += 1;
    this.run(batch.map((entry) => entry.input))
      .then(
        (outputs) => batch.forEach((entry, index) => entry.resolve(outputs[index])),
        (error: unknown) => batch.forEach((entry) => entry.reject(error)),
      )
      .finally(() => {
        this.running -= 1;
        this.flush();
      });
  }
}
