// A training sandbox: one long-lived worker thread that trains one job at a time. Training
// never runs on the main thread, whose event loop renews BullMQ locks and writes progress.
import { Worker } from "node:worker_threads";
import type { Logger } from "../common/logger.ts";
import type { EvaluationReport, StepReport, TrainOptions, TrainResult } from "../trainer/index.ts";
import { StopSignal, type EngineConfig, type FromSandbox, type SandboxInit, type StopKind, type ToSandbox } from "./protocol.ts";

/** The sandbox thread died or was terminated: the job did not fail by itself and may be retried. */
export class SandboxLost extends Error {
  override name = "SandboxLost";
}

/** The engine threw: the job's own inputs or settings are at fault, a retry would fail the same way. */
export class TrainingFailed extends Error {
  override name = "TrainingFailed";
}

export interface SandboxListener {
  onStep(report: StepReport): void;
  onEvaluation(report: EvaluationReport): void;
  /** Training waits until this settles, so the checkpoint is recorded before it goes on. */
  onCheckpoint(checkpoint: { step: number; dir: string }): Promise<void>;
}

// Worker threads do not inherit tsx's loader hooks: register them before importing the entry.
const bootstrap = `import { register } from ${JSON.stringify(import.meta.resolve("tsx/esm/api"))};
register();
await import(${JSON.stringify(new URL("./sandbox-thread.ts", import.meta.url).href)});`;
const bootstrapUrl = new URL(`data:text/javascript,${encodeURIComponent(bootstrap)}`);

export class Sandbox {
  private thread: Worker | undefined;
  private readonly control = new Int32Array(new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT));

  private readonly engine: EngineConfig;

  constructor(
    engine: EngineConfig,
    private readonly logger: Logger,
  ) {
    // Only these fields travel: workerData is copied into the thread, and the rest of a config is not its business.
    this.engine = { trainerBackend: engine.trainerBackend, trainerBlasAddon: engine.trainerBlasAddon, modelCacheSize: engine.modelCacheSize };
  }

  private spawn(): Worker {
    const init: SandboxInit = { engine: this.engine, control: this.control.buffer as SharedArrayBuffer };
    const thread = new Worker(bootstrapUrl, { workerData: init });
    thread.unref();
    thread.once("exit", () => {
      if (this.thread === thread) this.thread = undefined;
    });
    return thread;
  }

  run(options: TrainOptions, listener: SandboxListener): Promise<TrainResult> {
    const thread = (this.thread ??= this.spawn());
    return new Promise<TrainResult>((resolve, reject) => {
      const cleanup = () => {
        thread.off("message", onMessage);
        thread.off("error", onError);
        thread.off("exit", onExit);
      };
      const onMessage = (message: FromSandbox) => {
        switch (message.type) {
          case "step":
            return listener.onStep(message.report);
          case "evaluation":
            return listener.onEvaluation(message.report);
          case "checkpoint":
            // A checkpoint that cannot be recorded is not fatal: the run goes on, and a retry
            // starts from an older checkpoint.
            return void listener
              .onCheckpoint({ step: message.step, dir: message.dir })
              .catch((error) => this.logger.error({ err: error, step: message.step }, "recording a checkpoint failed"))
              .finally(() => thread.postMessage({ type: "checkpoint-saved", step: message.step } satisfies ToSandbox));
          case "done":
            cleanup();
            return resolve(message.result);
          case "failed": {
            cleanup();
            const failure = new TrainingFailed(message.message);
            failure.stack = message.stack;
            return reject(failure);
          }
        }
      };
      const onError = (error: Error) => {
        cleanup();
        this.thread = undefined;
        void thread.terminate();
        reject(new SandboxLost(`the training sandbox crashed: ${error.message}`));
      };
      const onExit = (code: number) => {
        cleanup();
        reject(new SandboxLost(`the training sandbox exited (code ${code})`));
      };
      thread.on("message", onMessage);
      thread.on("error", onError);
      thread.on("exit", onExit);
      thread.postMessage({ type: "train", options } satisfies ToSandbox);
    });
  }

  /** Asks the engine to stop at its next step boundary; a request made before `run` applies to it. */
  requestStop(kind: StopKind): void {
    Atomics.store(this.control, 0, StopSignal[kind]);
  }

  /** Forgets any stop request, so the next job starts clean. */
  clearStop(): void {
    Atomics.store(this.control, 0, StopSignal.none);
  }

  /** Ends the thread at once; a running `run` rejects with SandboxLost and the next run starts a fresh thread. */
  async terminate(): Promise<void> {
    const thread = this.thread;
    this.thread = undefined;
    await thread?.terminate();
  }
}
