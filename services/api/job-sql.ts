// The two requests clients make most, job status and job submission, go to Postgres as
// prepared SQL over a plain pg pool: on this hardware Prisma's query compiler costs ~25×
// more per request than the query itself. Everything else uses Prisma.
import { randomUUID } from "node:crypto";
import pg from "pg";
import { CallBatcher } from "../common/batcher.ts";
import { createPgPool, type OutageLog } from "../common/db.ts";
import type { JobWithAdapter } from "./job-view.ts";

const TIMESTAMP_WITHOUT_TIME_ZONE = 1114;

/** Prisma writes UTC into `timestamp(3)` columns; read them back as UTC whatever TZ says. */
const types = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    oid === TIMESTAMP_WITHOUT_TIME_ZONE
      ? (value: string) => new Date(`${value.replace(" ", "T")}Z`)
      : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

// xmin changes with every update of the row, whoever makes it: with the adapter id it
// versions everything the job view shows.
const JOB_WITH_ADAPTER = `SELECT j.*, j.xmin::text AS "rowVersion", a.id AS "adapterId" FROM "Job" j LEFT JOIN "Adapter" a ON a."jobId" = j.id WHERE j.id = $1 AND j."tenantId" = $2`;
const JOB_VERSIONS = `SELECT j.id, j."tenantId", j.xmin::text AS "rowVersion", a.id AS "adapterId" FROM "Job" j LEFT JOIN "Adapter" a ON a."jobId" = j.id WHERE j.id = ANY($1::uuid[])`;
const MAX_VERSION_BATCH = 1000;
const LIVE_DATASETS = `SELECT id, format::text, sha256, "storageKey" FROM "Dataset" WHERE id = ANY($1::uuid[]) AND "tenantId" = $2 AND "deletedAt" IS NULL`;
const INSERT_COLUMNS = 18;
const MAX_INSERT_BATCH = 100;
/** One INSERT for `rows` jobs: one statement, one transaction, one WAL flush. */
const insertJobs = (rows: number) => {
  const tuples = Array.from({ length: rows }, (_, row) => {
    const params = Array.from({ length: INSERT_COLUMNS }, (_, column) => `$${row * INSERT_COLUMNS + column + 1}`);
    return `(${params.join(", ")}, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')`;
  });
  return `INSERT INTO "Job" (id, "tenantId", task, "baseModelId", "trainDatasetId", "validationDatasetId", "validationSplit",
  "loraConfig", hyperparameters, priority, metadata, "idempotencyKey", "requestHash", "maxAttempts",
  "fromCheckpointJobId", "fromCheckpointStep", "fromAdapterId", "qualityReport", "createdAt", "updatedAt")
  VALUES ${tuples.join(", ")} RETURNING *`;
};
const MARK_ENQUEUED = `UPDATE "Job" SET "enqueuedAt" = $2 WHERE id = ANY($1::uuid[]) AND "enqueuedAt" IS NULL`;
const MAX_MARK_BATCH = 1000;

export interface NewJob {
  tenantId: string;
  task: string;
  baseModelId: string;
  trainDatasetId: string;
  validationDatasetId: string | null;
  validationSplit: number | null;
  loraConfig: object;
  hyperparameters: object;
  priority: number;
  metadata: Record<string, string>;
  idempotencyKey: string | null;
  requestHash: string | null;
  maxAttempts: number;
  fromCheckpointJobId: string | null;
  fromCheckpointStep: number | null;
  fromAdapterId: string | null;
  /** The data quality preflight the job was accepted with. */
  qualityReport: object | null;
}

/** A live dataset as a submission sees it: enough to check its format and read its bytes. */
export interface LiveDataset {
  id: string;
  format: string;
  sha256: string;
  storageKey: string;
}

type JobRow = Omit<JobWithAdapter, "adapter"> & { adapterId: string | null };
interface VersionColumns {
  rowVersion: string;
  adapterId: string | null;
}

/** A job with its version: a string that changes whenever anything the job view shows changes. */
export interface VersionedJob {
  job: JobWithAdapter;
  version: string;
}

const withAdapter = ({ adapterId, ...row }: JobRow): JobWithAdapter => ({ ...row, adapter: adapterId ? { id: adapterId } : null });
const versionOf = ({ rowVersion, adapterId }: VersionColumns) => `${rowVersion}/${adapterId ?? ""}`;

/** True for a unique-constraint violation, from pg ("23505") or Prisma ("P2002"). */
export const isUniqueViolation = (error: unknown) => ["23505", "P2002"].includes((error as { code?: string }).code ?? "");

export class JobSql {
  private readonly pool: pg.Pool;
  private readonly inFlight = new Map<string, Promise<VersionedJob | undefined>>();
  private readonly versions: CallBatcher<{ id: string; tenantId: string }, string | undefined>;
  private readonly inserts: CallBatcher<NewJob, JobWithAdapter>;
  private readonly enqueueMarks: CallBatcher<string, Date>;

  constructor(databaseUrl: string, outages: OutageLog, maxConnections = 10) {
    this.pool = createPgPool({ connectionString: databaseUrl, max: maxConnections, types }, outages);
    // One version read out at a time: polls arriving meanwhile go together in the next one.
    this.versions = new CallBatcher((keys) => this.readVersions(keys), MAX_VERSION_BATCH, 1);
    this.inserts = new CallBatcher((jobs) => this.insertJobs(jobs), MAX_INSERT_BATCH);
    this.enqueueMarks = new CallBatcher((ids) => this.markJobsEnqueued(ids), MAX_MARK_BATCH);
  }

  /**
   * The job's current version (see VersionedJob), undefined if the tenant has no such job. Never
   * shared with a read sent before the call: a client that just changed the job sees its change.
   */
  jobVersion(id: string, tenantId: string): Promise<string | undefined> {
    return this.versions.add({ id, tenantId });
  }

  /**
   * The job as it is now, for a caller that has just read `seenVersion`. Callers that saw the same
   * version share one read: it was sent after that version was current, so it is no older.
   */
  jobOfTenant(id: string, tenantId: string, seenVersion: string): Promise<VersionedJob | undefined> {
    const key = `${tenantId}/${id}/${seenVersion}`;
    let read = this.inFlight.get(key);
    if (!read) {
      read = this.readJob(id, tenantId).finally(() => this.inFlight.delete(key));
      this.inFlight.set(key, read);
    }
    return read;
  }

  private async readJob(id: string, tenantId: string): Promise<VersionedJob | undefined> {
    const { rows } = await this.pool.query<JobRow & VersionColumns>({ name: "job-with-adapter", text: JOB_WITH_ADAPTER, values: [id, tenantId] });
    if (!rows[0]) return undefined;
    const { rowVersion: _version, ...job } = rows[0];
    return { job: withAdapter(job), version: versionOf(rows[0]) };
  }

  async liveDatasets(ids: string[], tenantId: string): Promise<LiveDataset[]> {
    return (await this.pool.query<LiveDataset>({ name: "live-datasets", text: LIVE_DATASETS, values: [ids, tenantId] })).rows;
  }

  /** Inserts the jobs submitted in the same event-loop turn with one statement. */
  insertJob(job: NewJob): Promise<JobWithAdapter> {
    return this.inserts.add(job);
  }

  /** Records enqueuedAt for the jobs queued in the same event-loop turn with one UPDATE. */
  markEnqueued(id: string): Promise<Date> {
    return this.enqueueMarks.add(id);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  private async readVersions(keys: { id: string; tenantId: string }[]): Promise<(string | undefined)[]> {
    // Postgres answers ids in lower case, whatever case they were asked in.
    const ids = [...new Set(keys.map((key) => key.id.toLowerCase()))];
    const { rows } = await this.pool.query<VersionColumns & { id: string; tenantId: string }>({ name: "job-versions", text: JOB_VERSIONS, values: [ids] });
    const byId = new Map(rows.map((row) => [row.id, row]));
    return keys.map(({ id, tenantId }) => {
      const row = byId.get(id.toLowerCase());
      return row?.tenantId === tenantId ? versionOf(row) : undefined;
    });
  }

  /** If the shared INSERT fails (an Idempotency-Key race), each job is inserted alone so only its own caller fails. */
  private async insertJobs(jobs: NewJob[]): Promise<(JobWithAdapter | Promise<JobWithAdapter>)[]> {
    const rows = jobs.map((job) => [
      randomUUID(),
      job.tenantId,
      job.task,
      job.baseModelId,
      job.trainDatasetId,
      job.validationDatasetId,
      job.validationSplit,
      JSON.stringify(job.loraConfig),
      JSON.stringify(job.hyperparameters),
      job.priority,
      JSON.stringify(job.metadata),
      job.idempotencyKey,
      job.requestHash,
      job.maxAttempts,
      job.fromCheckpointJobId,
      job.fromCheckpointStep,
      job.fromAdapterId,
      job.qualityReport === null ? null : JSON.stringify(job.qualityReport),
    ]);
    const insert = async (values: unknown[][]) =>
      (await this.pool.query<JobRow>({ name: `insert-jobs-${values.length}`, text: insertJobs(values.length), values: values.flat() })).rows;
    try {
      const byId = new Map((await insert(rows)).map((row) => [row.id, row]));
      return rows.map(([id]) => ({ ...byId.get(id as string)!, adapter: null }));
    } catch (error) {
      if (rows.length === 1) throw error;
      return rows.map(async (row) => ({ ...(await insert([row]))[0], adapter: null }));
    }
  }

  private async markJobsEnqueued(ids: string[]): Promise<Date[]> {
    const at = new Date();
    await this.pool.query({ name: "mark-enqueued", text: MARK_ENQUEUED, values: [ids, at.toISOString().replace("T", " ").replace("Z", "")] });
    return ids.map(() => at);
  }
}
