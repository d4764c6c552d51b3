// A job's lifecycle (ARCHITECTURE.md): queued → running ⇄ cancelling → succeeded | failed | cancelled.
import type { JobStatus } from "./generated/prisma/enums.ts";

export type { JobStatus };

export const JOB_STATUSES = ["queued", "running", "cancelling", "succeeded", "failed", "cancelled"] as const satisfies readonly JobStatus[];
/** Statuses a job never leaves. */
export const FINISHED_STATUSES = ["succeeded", "failed", "cancelled"] as const satisfies readonly JobStatus[];
/** Statuses of a job that may still read its datasets. */
export const UNFINISHED_STATUSES = ["queued", "running", "cancelling"] as const satisfies readonly JobStatus[];

export const isFinished = (status: string): boolean => (FINISHED_STATUSES as readonly string[]).includes(status);
