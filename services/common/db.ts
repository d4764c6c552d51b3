// Postgres for every process: the Prisma client and raw pg pools share one way of surviving
// an outage. A dropped connection (restart, failover, pg_terminate_backend) is logged once per
// outage and never crashes a process; callers learn from `isDatabaseUnavailable` that an error
// means "try again later" rather than "this request is wrong".
import { PrismaPg } from "@prisma/adapter-pg";
import pg from "pg";
import { PrismaClient } from "./generated/prisma/client.ts";
import type { Logger } from "./logger.ts";

export { PrismaClient };
export type { Prisma } from "./generated/prisma/client.ts";

/** A UUID as Postgres reads it and as ids are compared here: canonical form, any case (no "urn:uuid:", no braces). */
export const CANONICAL_UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** SQLSTATEs of a server going away or not taking connections: admin shutdown, crash, starting up, connection failures, too many clients. */
const UNAVAILABLE_SQLSTATES = new Set(["57P01", "57P02", "57P03", "08000", "08001", "08003", "08004", "08006", "53300"]);
const UNAVAILABLE_SOCKET_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH"]);
/** Prisma's codes for an unreachable server, a timeout, a closed connection, no free pooled connection, too many connections. */
const UNAVAILABLE_PRISMA_CODES = new Set(["P1001", "P1002", "P1008", "P1017", "P2024", "P2037"]);
const UNAVAILABLE_ADAPTER_KINDS = new Set(["DatabaseNotReachable", "ConnectionClosed", "SocketTimeout", "TooManyConnections"]);
/** node-postgres reports a connection that died mid-query, or a pool that could not connect in time, without a code. */
const UNAVAILABLE_MESSAGES = /^(Connection terminated|Client has encountered a connection error|timeout exceeded when trying to connect|Connection terminated due to connection timeout)/;

interface ErrorFields {
  code?: unknown;
  message?: unknown;
  cause?: unknown;
  meta?: { driverAdapterError?: { cause?: { kind?: string; code?: string } } };
}

/** True when the error says Postgres could not be reached or dropped the connection, from pg or Prisma, however deeply wrapped. */
export function isDatabaseUnavailable(error: unknown): boolean {
  for (let current = error, depth = 0; current && typeof current === "object" && depth < 5; depth++) {
    const { code, message, cause, meta } = current as ErrorFields;
    if (typeof code === "string" && (UNAVAILABLE_SQLSTATES.has(code) || UNAVAILABLE_SOCKET_CODES.has(code) || UNAVAILABLE_PRISMA_CODES.has(code))) return true;
    const adapterCause = meta?.driverAdapterError?.cause;
    if (adapterCause?.kind && UNAVAILABLE_ADAPTER_KINDS.has(adapterCause.kind)) return true;
    if (adapterCause?.kind === "postgres" && adapterCause.code && UNAVAILABLE_SQLSTATES.has(adapterCause.code)) return true;
    if (typeof message === "string" && UNAVAILABLE_MESSAGES.test(message)) return true;
    current = cause;
  }
  return false;
}

/**
 * Logs a lost database once, when it is lost, and once more when a connection succeeds again,
 * however many pools and requests see the outage in between.
 */
export class OutageLog {
  private down = false;

  constructor(
    private readonly logger: Logger,
    private readonly dependency = "postgres",
  ) {}

  get isDown(): boolean {
    return this.down;
  }

  lost(error: unknown): void {
    if (this.down) return;
    this.down = true;
    this.logger.warn({ dependency: this.dependency, err: error instanceof Error ? error.message : String(error) }, `${this.dependency} unavailable`);
  }

  restored(): void {
    if (!this.down) return;
    this.down = false;
    this.logger.info({ dependency: this.dependency }, `${this.dependency} available again`);
  }
}

/** The server ended this connection (pg_terminate_backend, a restart) or it broke: a fresh one may well work. */
const CONNECTION_DROPPED_SQLSTATES = new Set(["57P01", "57P02"]);
const isConnectionDropped = (error: unknown) => {
  const { code, message } = error as ErrorFields;
  return (typeof code === "string" && (CONNECTION_DROPPED_SQLSTATES.has(code) || code === "ECONNRESET" || code === "EPIPE")) ||
    (typeof message === "string" && message.startsWith("Connection terminated"));
};

/**
 * A pg pool whose dropped idle connections are logged through `outages`, never thrown. A statement
 * sent on a pooled connection the server had already ended is sent again: the statement never ran
 * (a terminated backend rolls back what it was doing), and without the retry the first requests
 * after a failover would fail although Postgres is up. Each failed try removes one dead connection,
 * so at most one try more than the pool holds reaches a live or new one; a server that is really
 * down answers with a refused connection instead, which is not retried.
 */
export function createPgPool(config: pg.PoolConfig, outages: OutageLog): pg.Pool {
  const pool = new pg.Pool(config);
  const query = pool.query.bind(pool) as (...args: unknown[]) => Promise<unknown>;
  pool.query = ((...args: unknown[]) => {
    // The callback form is not used here; only promises are retried.
    if (typeof args.at(-1) === "function") return query(...args);
    const attempt = (triesLeft: number): Promise<unknown> =>
      query(...args).catch((error: unknown) => {
        if (!isConnectionDropped(error) || triesLeft === 0) throw error;
        outages.lost(error);
        return attempt(triesLeft - 1);
      });
    return attempt(pool.options.max ?? 10);
  }) as typeof pool.query;
  pool.on("error", (error) => outages.lost(error));
  pool.on("connect", (client) => {
    outages.restored();
    // A checked-out client whose server goes away emits on itself, not on the pool.
    client.on("error", (error) => outages.lost(error));
  });
  return pool;
}

export function createPrisma(databaseUrl: string, outages: OutageLog): PrismaClient {
  const pool = createPgPool({ connectionString: databaseUrl }, outages);
  return new PrismaClient({ adapter: new PrismaPg(pool, { disposeExternalPool: true }) });
}

export async function pingDatabase(prisma: PrismaClient): Promise<void> {
  await prisma.$queryRawUnsafe("SELECT 1");
}
