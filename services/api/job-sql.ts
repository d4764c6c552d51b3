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
const INSERT_JOB = `INSERT INTO "Job" (id, "tenantId", task, "baseModelId", "trainDatasetId", "validationDatasetId", "validationSplit",
  "loraConfig", hyperparameters, priority, metadata, "idempotencyKey", "requestHash", "maxAttempts", "createdAt", "updatedAt")
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC') RETURNING *`;
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

  async insertJob(job: NewJob): Promise<JobWithAdapter> {
    const values = [
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
    ];
    const result = await this.pool.query<JobRow>({ name: "insert-job", text: INSERT_JOB, values });
    return { ...result.rows[0], adapter: null };
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
