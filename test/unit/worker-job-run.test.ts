// What a run decides for its job, with an in-memory stand-in for the job's Postgres rows and
// a scripted sandbox: each way a run can end, and that a database outage during the run's
// writes is waited out instead of failing the job.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { OutageLog } from "../../services/common/db.ts";
import { createLogger } from "../../services/common/logger.ts";
import type { CompositionRequest, TrainOptions, TrainResult } from "../../services/trainer/index.ts";
import { DatabaseStillUnavailable, Durable } from "../../services/worker/durable.ts";
import type { JobError, StoredAdapter } from "../../services/worker/job-records.ts";
import { JobRun, LEASE_BUSY_RETRY_MS, RETRY_BACKOFF_MS, type RunRecords, type RunSandbox } from "../../services/worker/job-run.ts";
import { ProgressReporter } from "../../services/worker/progress-reporter.ts";
import { SandboxLost, TrainingFailed, type SandboxListener } from "../../services/worker/sandbox.ts";

const logger = createLogger("silent", "test");
/** What pg raises when the server goes away mid-query. */
const connectionLost = () => Object.assign(new Error("terminating connection due to administrator command"), { code: "57P01" });

const completed: TrainResult = { outcome: "completed", step: 30, adapterDir: "/scratch/out", metrics: { accuracy: 0.9 }, baseline: { accuracy: 0.5 } };

/** The job's rows as a run sees them; `outages` makes the next calls of a method fail as if Postgres were down. */
class FakeRecords implements RunRecords {
  readonly jobId = "job-1";
  readonly calls: string[] = [];
  readonly outages = new Map<string, number>();
  job = { status: "queued", cancelRequestedAt: null as Date | null, pauseRequestedAt: null as Date | null, attempts: 0, maxAttempts: 3, error: null as JobError | null };
  cancelled = false;
  /** Whether a pause is still asked for when the run writes it (false: it was withdrawn). */
  pauseStands = true;
  succeedAnswer = true;

  private record(name: string, detail = ""): void {
    this.calls.push(detail ? `${name} ${detail}` : name);
    const failures = this.outages.get(name) ?? 0;
    if (failures > 0) {
      this.outages.set(name, failures - 1);
      throw connectionLost();
    }
  }

  async load() {
    this.record("load");
    return {
      ...this.job,
      id: this.jobId,
      startedAt: null,
      baseModelId: "tiny",
      baseModel: { path: "/models/tiny" },
      trainDataset: { storageKey: "datasets/train.jsonl" },
      validationDataset: null,
      validationSplit: 0.2,
      loraConfig: { r: 4 },
      hyperparameters: { epochs: 1 },
    } as unknown as Awaited<ReturnType<RunRecords["load"]>>;
  }
  async claim(attempt: number) {
    this.record("claim", String(attempt));
    this.job.attempts = attempt;
    return true;
  }
  async cancelRequested() {
    this.record("cancelRequested");
    return this.cancelled;
  }
  async stopRequested() {
    this.record("stopRequested");
    return this.cancelled ? ("cancel" as const) : this.job.pauseRequestedAt ? ("pause" as const) : undefined;
  }
  async pause(step: number | undefined) {
    this.record("pause", String(step));
    return this.pauseStands;
  }
  async newestCheckpoint() {
    this.record("newestCheckpoint");
    return undefined;
  }
  async sourceCheckpoint() {
    this.record("sourceCheckpoint");
    return undefined;
  }
  async sourceAdapter() {
    this.record("sourceAdapter");
    return undefined;
  }
  async modelPath(job: { baseModel: { path: string } }) {
    return job.baseModel.path;
  }
  async datasetPath(key: string) {
    return `/data/${key}`;
  }
  async compositionSources(): Promise<CompositionRequest> {
    throw new Error("these fake jobs train; none composes");
  }
  checkpointDir() {
    return "/data/checkpoints";
  }
  async scratchFolder() {
    return "/scratch/out";
  }
  async removeLocalCopies() {}
  async event(_level: string, type: string) {
    this.record("event", type);
  }
  async storeAdapter(): Promise<StoredAdapter> {
    this.record("storeAdapter");
    return { adapterId: "adapter-1", storageKey: "adapters/adapter-1", packed: { archiveKey: "a", sha256: "s", sizeBytes: 1, files: [] }, peftConfig: { r: 4, lora_alpha: 8, target_modules: [] }, trainableParameters: 0 };
  }
  async discardAdapter() {
    this.record("discardAdapter");
  }
  async succeed() {
    this.record("succeed");
    return this.succeedAnswer;
  }
  async cancel(message: string) {
    this.record("cancel", message);
  }
  async fail(error: JobError) {
    this.record("fail", error.code);
  }
  async requeueFailedAttempt(attempt: number) {
    this.record("requeueFailedAttempt", String(attempt));
  }
  async handBack(step: number | undefined) {
    this.record("handBack", String(step));
  }
}

/** A sandbox whose run ends as `outcome` says, given the last stop requested; `whileRunning` acts during the run. */
class ScriptedSandbox implements RunSandbox {
  stopRequests: string[] = [];
  whileRunning = () => {};
  constructor(private readonly outcome: (stop: string | undefined) => TrainResult | Error) {}
  async run(_options: TrainOptions, listener: SandboxListener): Promise<TrainResult> {
    this.whileRunning();
    listener.onStep({ step: 1, totalSteps: 30, epoch: 0.1, loss: 1, learningRate: 1e-3, tokensPerSecond: 10, tokensSeen: 10, elapsedMs: 5, etaMs: 100 });
    await new Promise((resolve) => setTimeout(resolve, 5));
    const result = this.outcome(this.stopRequests.at(-1));
    if (result instanceof Error) throw result;
    return result;
  }
  requestStop(kind: "cancel" | "checkpoint") {
    this.stopRequests.push(kind);
  }
  clearStop() {}
  async terminate() {}
}

async function waitUntil(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 1));
}

function runOf(records: FakeRecords, sandbox: RunSandbox) {
  const outages = new OutageLog(logger);
  const durable = new Durable(outages, { initialDelayMs: 1, maxDelayMs: 5 });
  const progress = { progress: async () => {}, evaluation: async () => {}, checkpoint: async () => {} };
  const reporter = new ProgressReporter(progress, durable, outages, logger, 1000, async () => {}, () => false);
  const settings = { workerId: "worker-1", jobTimeoutMs: 60_000, shutdownTimeoutMs: 10_000, checkpointEverySteps: 10 };
  return new JobRun(records, sandbox, reporter, durable, settings, logger);
}

describe("a job run's decisions", () => {
  it("publishes a completed run's adapter and ends succeeded", async () => {
    const records = new FakeRecords();
    const outcome = await runOf(records, new ScriptedSandbox(() => completed)).execute();
    assert.deepEqual(outcome, { kind: "final", status: "succeeded" });
    assert.deepEqual(records.calls, ["load", "claim 1", "newestCheckpoint", "event started", "storeAdapter", "succeed"]);
  });

  it("waits out a Postgres outage at the final write instead of failing or retraining the job", async () => {
    const records = new FakeRecords();
    records.outages.set("succeed", 3);
    records.outages.set("event", 2);
    const outcome = await runOf(records, new ScriptedSandbox(() => completed)).execute();
    assert.deepEqual(outcome, { kind: "final", status: "succeeded" });
    assert.equal(records.calls.filter((call) => call === "succeed").length, 4);
    assert.equal(records.calls.filter((call) => call.startsWith("claim")).length, 1, "trained once");
    assert.ok(!records.calls.some((call) => call.startsWith("fail") || call === "discardAdapter"), records.calls.join());
  });

  it("fails the job when the engine refuses it, and retries it when the sandbox dies", async () => {
    const refused = new FakeRecords();
    assert.deepEqual(await runOf(refused, new ScriptedSandbox(() => new TrainingFailed("bad label"))).execute(), { kind: "final", status: "failed" });
    assert.equal(refused.calls.at(-1), "fail training_failed");

    const crashed = new FakeRecords();
    assert.deepEqual(await runOf(crashed, new ScriptedSandbox(() => new SandboxLost("exited"))).execute(), { kind: "requeue", delayMs: RETRY_BACKOFF_MS });
    assert.equal(crashed.calls.at(-1), "requeueFailedAttempt 1");

    const lastChance = new FakeRecords();
    lastChance.job.attempts = 2;
    assert.deepEqual(await runOf(lastChance, new ScriptedSandbox(() => new SandboxLost("exited"))).execute(), { kind: "final", status: "failed" });
    assert.equal(lastChance.calls.at(-1), "fail max_attempts_exceeded");
  });

  it("finishes without training a job cancelled or out of attempts before it runs", async () => {
    const cancelled = new FakeRecords();
    cancelled.job.cancelRequestedAt = new Date();
    assert.deepEqual(await runOf(cancelled, new ScriptedSandbox(() => completed)).execute(), { kind: "final", status: "cancelled" });
    assert.deepEqual(cancelled.calls, ["load", "cancel cancelled before it could run"]);

    const exhausted = new FakeRecords();
    exhausted.job.attempts = 3;
    assert.deepEqual(await runOf(exhausted, new ScriptedSandbox(() => completed)).execute(), { kind: "final", status: "failed" });
    assert.deepEqual(exhausted.calls, ["load", "fail max_attempts_exceeded"]);
  });

  it("cancels a job whose cancel arrives as it finishes, and keeps nothing of its adapter", async () => {
    const records = new FakeRecords();
    records.succeedAnswer = false;
    records.cancelled = true;
    assert.deepEqual(await runOf(records, new ScriptedSandbox(() => completed)).execute(), { kind: "final", status: "cancelled" });
    assert.deepEqual(records.calls.slice(-4), ["succeed", "discardAdapter", "cancelRequested", "cancel cancelled as it finished"]);
  });

  it("hands a job back on shutdown and writes nothing after losing its lease", async () => {
    const checkpointed = (stop: string | undefined): TrainResult => ({ outcome: stop === "checkpoint" ? "checkpointed" : "cancelled", step: 12, metrics: {}, baseline: {} });
    const leaving = new FakeRecords();
    const deploySandbox = new ScriptedSandbox(checkpointed);
    const shutdownRun = runOf(leaving, deploySandbox);
    deploySandbox.whileRunning = () => shutdownRun.stop("shutdown");
    assert.deepEqual(await shutdownRun.execute(), { kind: "requeue", delayMs: 0 });
    assert.deepEqual(deploySandbox.stopRequests, ["checkpoint"]);
    assert.equal(leaving.calls.at(-1), "handBack 12");

    const robbed = new FakeRecords();
    const robbedSandbox = new ScriptedSandbox(() => completed);
    const robbedRun = runOf(robbed, robbedSandbox);
    robbedSandbox.whileRunning = () => robbedRun.stop("lease_lost");
    assert.deepEqual(await robbedRun.execute(), { kind: "requeue", delayMs: LEASE_BUSY_RETRY_MS });
    assert.ok(!robbed.calls.some((call) => ["succeed", "storeAdapter", "handBack"].some((write) => call.startsWith(write))), robbed.calls.join());
  });

  it("pauses at a checkpoint on request, and goes on when the pause was withdrawn meanwhile", async () => {
    const checkpointed = (stop: string | undefined): TrainResult => ({ outcome: stop === "checkpoint" ? "checkpointed" : "cancelled", step: 12, metrics: {}, baseline: {} });
    const pausing = new FakeRecords();
    const sandbox = new ScriptedSandbox(checkpointed);
    const run = runOf(pausing, sandbox);
    sandbox.whileRunning = () => run.stop("pause");
    assert.deepEqual(await run.execute(), { kind: "final", status: "paused" });
    assert.deepEqual(sandbox.stopRequests, ["checkpoint"], "a pause saves a checkpoint first");
    assert.equal(pausing.calls.at(-1), "pause 12");

    const withdrawn = new FakeRecords();
    withdrawn.pauseStands = false;
    const resumedSandbox = new ScriptedSandbox(checkpointed);
    const resumedRun = runOf(withdrawn, resumedSandbox);
    resumedSandbox.whileRunning = () => resumedRun.stop("pause");
    assert.deepEqual(await resumedRun.execute(), { kind: "requeue", delayMs: 0 });
    assert.deepEqual(withdrawn.calls.slice(-3), ["pause 12", "cancelRequested", "handBack 12"]);

    const waiting = new FakeRecords();
    waiting.job.status = "paused";
    assert.deepEqual(await runOf(waiting, new ScriptedSandbox(() => completed)).execute(), { kind: "final", status: "paused" });
    assert.deepEqual(waiting.calls, ["load"], "a paused job's stale queue entry trains nothing");

    const asked = new FakeRecords();
    asked.job.status = "running";
    asked.job.pauseRequestedAt = new Date();
    assert.deepEqual(await runOf(asked, new ScriptedSandbox(() => completed)).execute(), { kind: "final", status: "paused" });
    assert.deepEqual(asked.calls, ["load", "pause undefined"], "a job asked to pause before its run started is paused without training");
  });

  it("stops waiting for Postgres once the worker shuts down, leaving the job to the next worker", async () => {
    const records = new FakeRecords();
    records.outages.set("succeed", Number.MAX_SAFE_INTEGER);
    const run = runOf(records, new ScriptedSandbox(() => completed));
    const outcome = run.execute();
    await waitUntil(() => records.calls.filter((call) => call === "succeed").length >= 3);
    run.stop("shutdown");
    await assert.rejects(outcome, DatabaseStillUnavailable);
    assert.equal(records.calls.at(-1), "discardAdapter", "an adapter never published is removed");
  });
});
