// A sweep as clients see it, computed from its child jobs whenever it is read: the table (one row
// per configuration), the pick with its reason once every child has finished, and the chart's points.
import type { Adapter, Job, Sweep } from "../../common/generated/prisma/client.ts";
import { isFinished } from "../../common/job-status.ts";
import { pickSmallestWithinTolerance, type SweepPick } from "../../trainer/index.ts";
import type { ChartPoint } from "./chart.ts";

export type SweepChild = Job & { adapter: Pick<Adapter, "id" | "trainableParameters" | "sizeBytes" | "files"> | null };
export type SweepWithChildren = Sweep & { jobs: SweepChild[] };

export interface SweepRequestRecord {
  baseModel: string;
  ranks: number[];
  alphaPolicy: "2r" | "fixed";
  targetModuleSets: string[][];
}

export interface SweepRow {
  jobId: string;
  status: string;
  rank: number;
  alpha: number;
  targetModules: string[];
  adapterId: string | null;
  trainableParameters: number | null;
  /** adapter_model.safetensors, the weights themselves (the download's tar.gz is `Adapter.sizeBytes`). */
  adapterBytes: number | null;
  trainingMs: number | null;
  metrics: Record<string, number>;
}

const WEIGHTS_FILE = "adapter_model.safetensors";

function rowOf(job: SweepChild): SweepRow {
  const lora = job.loraConfig as { r: number; alpha: number; targetModules: string[] };
  const files = (job.adapter?.files ?? []) as { name: string; sizeBytes: number }[];
  return {
    jobId: job.id,
    status: job.status,
    rank: lora.r,
    alpha: lora.alpha,
    targetModules: lora.targetModules,
    adapterId: job.adapter?.id ?? null,
    trainableParameters: job.adapter?.trainableParameters ?? null,
    adapterBytes: files.find((file) => file.name === WEIGHTS_FILE)?.sizeBytes ?? null,
    trainingMs: job.status === "succeeded" && job.startedAt && job.finishedAt ? job.finishedAt.getTime() - job.startedAt.getTime() : null,
    metrics: job.status === "succeeded" ? numericMetrics(job.metrics) : {},
  };
}

/** Rows in the order the configurations were asked for: target-module set, then rank. */
export function sweepRows(sweep: SweepWithChildren): SweepRow[] {
  const request = sweep.request as unknown as SweepRequestRecord;
  const setIndex = (row: SweepRow) => request.targetModuleSets.findIndex((set) => set.join(",") === row.targetModules.join(","));
  return sweep.jobs.map(rowOf).sort((a, b) => setIndex(a) - setIndex(b) || a.rank - b.rank);
}

export interface SweepDecision {
  status: "running" | "succeeded" | "failed" | "cancelled";
  pick: (SweepPick & { adapterId: string | null }) | null;
  reason: string;
}

export function decide(sweep: SweepWithChildren, rows: SweepRow[]): SweepDecision {
  const unfinished = rows.filter((row) => !isFinished(row.status)).length;
  if (unfinished > 0) return { status: "running", pick: null, reason: `waiting for ${unfinished} of ${rows.length} jobs to finish` };
  const candidates = rows.map((row) => ({
    jobId: row.jobId,
    rank: row.rank,
    targetModules: row.targetModules,
    size: row.trainableParameters ?? row.adapterBytes ?? Infinity,
    value: row.metrics[sweep.metric],
  }));
  const pick = pickSmallestWithinTolerance(candidates, sweep.metric, sweep.higherIsBetter, sweep.tolerance);
  if (!pick) {
    const cancelled = rows.every((row) => row.status === "cancelled");
    return { status: cancelled ? "cancelled" : "failed", pick: null, reason: `no job finished with a validation ${sweep.metric}` };
  }
  return { status: "succeeded", pick: { ...pick, adapterId: rows.find((row) => row.jobId === pick.jobId)!.adapterId }, reason: pick.reason };
}

export function chartPoints(sweep: SweepWithChildren, rows: SweepRow[]): ChartPoint[] {
  return rows.flatMap((row) => {
    const value = row.metrics[sweep.metric];
    const size = row.trainableParameters ?? row.adapterBytes;
    return value === undefined || size === null ? [] : [{ jobId: row.jobId, label: `r=${row.rank} ${row.targetModules.join(",")}`, size, value }];
  });
}

export function sweepView(sweep: SweepWithChildren) {
  const rows = sweepRows(sweep);
  const decision = decide(sweep, rows);
  const request = sweep.request as unknown as SweepRequestRecord;
  return {
    id: sweep.id,
    status: decision.status,
    task: sweep.task,
    baseModel: request.baseModel,
    metric: sweep.metric,
    higherIsBetter: sweep.higherIsBetter,
    tolerance: sweep.tolerance,
    ranks: request.ranks,
    alphaPolicy: request.alphaPolicy,
    targetModuleSets: request.targetModuleSets,
    table: rows,
    pick: decision.pick,
    reason: decision.reason,
    createdAt: sweep.createdAt.toISOString(),
  };
}

/** A finished job's flat metrics; its structured `report` (evaluation detail) is not a table column. */
function numericMetrics(metrics: unknown): Record<string, number> {
  return Object.fromEntries(Object.entries((metrics ?? {}) as Record<string, unknown>).filter((entry): entry is [string, number] => typeof entry[1] === "number"));
}
