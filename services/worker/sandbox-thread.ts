// Runs inside a worker thread: trains one job at a time with the engine and reports back.
// The thread lives as long as its sandbox, so whatever the engine keeps loaded (the
// backend, encoder base models) is reused by the next job; causal models load per job.
import { parentPort, workerData } from "node:worker_threads";
import { initBackend, train } from "../trainer/index.ts";
import { StopSignal, type FromSandbox, type SandboxInit, type ToSandbox } from "./protocol.ts";

const port = parentPort!;
const init = workerData as SandboxInit;
const control = new Int32Array(init.control);
let checkpointSaved: ((step: number) => void) | undefined;

function send(message: FromSandbox): void {
  port.postMessage(message);
}

function stopRequested(): "none" | "cancel" | "checkpoint" {
  switch (Atomics.load(control, 0)) {
    case StopSignal.cancel:
      return "cancel";
    case StopSignal.checkpoint:
      return "checkpoint";
    default:
      return "none";
  }
}

async function run(options: Extract<ToSandbox, { type: "train" }>["options"]): Promise<void> {
  try {
    await initBackend(init.engine.trainerBackend, { blasAddonPath: init.engine.trainerBlasAddon });
    const result = await train({ ...options, modelCacheSize: init.engine.modelCacheSize }, {
      onStep: (report) => send({ type: "step", report }),
      onEvaluation: (report) => send({ type: "evaluation", report }),
      // Training continues only once the main thread has recorded the checkpoint, so a
      // checkpoint the engine reports is always one a retry can find.
      onCheckpoint: ({ step, dir }) =>
        new Promise<void>((resolve) => {
          checkpointSaved = (saved) => {
            if (saved === step) resolve();
          };
          send({ type: "checkpoint", step, dir });
        }),
      stopRequested,
    });
    send({ type: "done", result });
  } catch (error) {
    const failure = error instanceof Error ? error : new Error(String(error));
    send({ type: "failed", name: failure.name, message: failure.message, stack: failure.stack });
  }
}

port.on("message", (message: ToSandbox) => {
  if (message.type === "train") void run(message.options);
  else checkpointSaved?.(message.step);
});
