// The two requests clients make most, job status and job submission, go to Postgres as
// prepared SQL over a plain pg pool: on this hardware Prisma's query compiler costs ~25×
// more per request than the query itself. Everything else uses Prisma.
import { randomUUID } from "node:crypto";
import pg from "pg";
import type { JobWithAdapter } from "./routes/jobs.ts";

const TIMESTAMP_WITHOUT_TIME_ZONE = 1114;

/** Prisma writes UTC into `timestamp(3)` columns; read them back as UTC whatever TZ says. */
const types = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    oid === TIMESTAMP_WITHOUT_TIME_ZONE
      ? (value: string) => new Date(`${value.replace(" ", "T")}Z`)
      : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

const JOB_WITH_ADAPTER = `SELECT j.*, a.id AS "adapterId" FROM "Job" j LEFT JOIN "Adapter" a ON a."jobId" = j.id WHERE j.id = $1 AND j."tenantId" = $2`;
const LIVE_DATASETS = `SELECT id, format::text FROM "Dataset" WHERE id = ANY($1::uuid[]) AND "tenantId" = $2 AND "deletedAt" IS NULL`;
const INSERT_COLUMNS = 14;
const MAX_INSERT_BATCH = 100;
/** One INSERT for `rows` jobs: one statement, one transaction, one WAL flush. */
const insertJobs = (rows: number) => {
  const tuples = Array.from({ length: rows }, (_, row) => {
    const params = Array.from({ length: INSERT_COLUMNS }, (_, column) => `$${row * INSERT_COLUMNS + column + 1}`);
    return `(${params.join(", ")}, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')`;
  });
  return `INSERT INTO "Job" (id, "tenantId", task, "baseModelId", "trainDatasetId", "validationDatasetId", "validationSplit",
  "loraConfig", hyperparameters, priority, metadata, "idempotencyKey", "requestHash", "maxAttempts", "createdAt", "updatedAt")
  VALUES ${tuples.join(", ")} RETURNING *`;
};
const MARK_ENQUEUED = `UPDATE "Job" SET "enqueuedAt" = $2 WHERE id = ANY($1::uuid[]) AND "enqueuedAt" IS NULL`;

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
}

type JobRow = Omit<JobWithAdapter, "adapter"> & { adapterId: string | null };

const withAdapter = ({ adapterId, ...row }: JobRow): JobWithAdapter => ({ ...row, adapter: adapterId ? { id: adapterId } : null });

/** True for a unique-constraint violation, from pg ("23505") or Prisma ("P2002"). */
export const isUniqueViolation = (error: unknown) => ["23505", "P2002"].includes((error as { code?: string }).code ?? "");

export class JobSql {
  private readonly pool: pg.Pool;
  private readonly inFlight = new Map<string, Promise<JobWithAdapter | undefined>>();
  private toMark: string[] = [];
  private toInsert: { job: NewJob; resolve: (job: JobWithAdapter) => void; reject: (error: unknown) => void }[] = [];
  private marking: Promise<Date> | undefined;

  constructor(databaseUrl: string, maxConnections = 10) {
    this.pool = new pg.Pool({ connectionString: databaseUrl, max: maxConnections, types });
  }

  /**
   * Requests for the same job that arrive while its query is in flight share that query:
   * many clients polling one job cost one round trip, and no answer is older than the
   * request that received it by more than one query's duration.
   */
  jobOfTenant(id: string, tenantId: string): Promise<JobWithAdapter | undefined> {
    const key = `${tenantId}/${id}`;
    let query = this.inFlight.get(key);
    if (!query) {
      query = this.pool
        .query<JobRow>({ name: "job-with-adapter", text: JOB_WITH_ADAPTER, values: [id, tenantId] })
        .then((result) => result.rows[0] && withAdapter(result.rows[0]))
        .finally(() => this.inFlight.delete(key));
      this.inFlight.set(key, query);
    }
    return query;
  }

  async liveDatasets(ids: string[], tenantId: string): Promise<{ id: string; format: string }[]> {
    return (await this.pool.query<{ id: string; format: string }>({ name: "live-datasets", text: LIVE_DATASETS, values: [ids, tenantId] })).rows;
  }

  /**
   * Inserts the jobs submitted in the same event-loop turn with one statement. If that
   * fails (an Idempotency-Key race), each is inserted alone so only its own caller fails.
   */
  insertJob(job: NewJob): Promise<JobWithAdapter> {
    return new Promise((resolve, reject) => {
      this.toInsert.push({ job, resolve, reject });
      if (this.toInsert.length === 1) setImmediate(() => this.flushInserts());
      else if (this.toInsert.length === MAX_INSERT_BATCH) this.flushInserts();
    });
  }

  private flushInserts(): void {
    const batch = this.toInsert;
    if (batch.length === 0) return;
    this.toInsert = [];
    const rows = batch.map(({ job }) => [
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
    ]);
    const insert = (values: unknown[][]) =>
      this.pool.query<JobRow>({ name: `insert-jobs-${values.length}`, text: insertJobs(values.length), values: values.flat() });
    insert(rows).then(
      (result) => {
        const byId = new Map(result.rows.map((row) => [row.id, row]));
        batch.forEach((entry, index) => entry.resolve({ ...byId.get(rows[index][0] as string)!, adapter: null }));
      },
      () =>
        batch.forEach((entry, index) =>
          insert([rows[index]]).then((result) => entry.resolve({ ...result.rows[0], adapter: null }), entry.reject),
        ),
    );
  }

  /** Records enqueuedAt for the jobs queued in the same event-loop turn with one UPDATE. */
  markEnqueued(id: string): Promise<Date> {
    this.toMark.push(id);
    this.marking ??= new Promise((resolve) => setImmediate(resolve)).then(async () => {
      const ids = this.toMark;
      this.toMark = [];
      this.marking = undefined;
      const at = new Date();
      await this.pool.query({ name: "mark-enqueued", text: MARK_ENQUEUED, values: [ids, at.toISOString().replace("T", " ").replace("Z", "")] });
      return at;
    });
    return this.marking;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
