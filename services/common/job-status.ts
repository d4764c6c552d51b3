// A job's statuses (docs/job-lifecycle.md): queued → running → succeeded | failed | cancelled. A cancel
// ends a queued job at once and makes a running one `cancelling` until its worker stops; a retry or a
// hand-back on shutdown takes a running job back to `queued`.
import type { JobStatus } from "./generated/prisma/enums.ts";

export type { JobStatus };

export const JOB_STATUSES = ["queued", "running", "cancelling", "succeeded", "failed", "cancelled"] as const satisfies readonly JobStatus[];
/** Statuses a job never leaves. */
export const FINISHED_STATUSES = ["succeeded", "failed", "cancelled"] as const satisfies readonly JobStatus[];
/** Statuses of a job that may still read its datasets. */
export const UNFINISHED_STATUSES = ["queued", "running", "cancelling"] as const satisfies readonly JobStatus[];

export const isFinished = (status: string): boolean => (FINISHED_STATUSES as readonly string[]).includes(status);
