// A job's statuses (docs/job-lifecycle.md): queued → running → succeeded | failed | cancelled. A cancel
// ends a queued or paused job at once and makes a running one `cancelling` until its worker stops; a
// retry or a hand-back on shutdown takes a running job back to `queued`. A pause stops a running job
// at a checkpoint as `paused` (a queued one at once); resume takes it back to `queued`.
import type { JobStatus } from "./generated/prisma/enums.ts";

export type { JobStatus };

export const JOB_STATUSES = ["queued", "running", "cancelling", "paused", "succeeded", "failed", "cancelled"] as const satisfies readonly JobStatus[];
/** Statuses a job never leaves. */
export const FINISHED_STATUSES = ["succeeded", "failed", "cancelled"] as const satisfies readonly JobStatus[];
/** Statuses of a job that may still read its datasets (a paused job reads them again when resumed). */
export const UNFINISHED_STATUSES = ["queued", "running", "cancelling", "paused"] as const satisfies readonly JobStatus[];

export const isFinished = (status: string): boolean => (FINISHED_STATUSES as readonly string[]).includes(status);
