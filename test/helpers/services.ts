// Real Postgres and Redis for integration tests, isolated per test file: each file gets a
// fresh database cloned from a migrated template and its own BullMQ queue prefix.
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import pg from "pg";
import { createPrisma, OutageLog, type PrismaClient } from "../../services/common/db.ts";
import { createLogger } from "../../services/common/logger.ts";

const ADMIN_URL = process.env.TEST_ADMIN_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/postgres";
export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
const repoRoot = path.resolve(import.meta.dirname, "../..");

function databaseUrl(name: string): string {
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

function migrationNames(): string[] {
  return fs
    .readdirSync(path.join(repoRoot, "prisma/migrations"), { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
    .sort();
}

async function withAdmin<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: ADMIN_URL });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/**
 * One template per list of migrations, named by its hash: checkouts with different migrations
 * (branches, worktrees) sharing one Postgres never drop each other's template mid-clone.
 */
const TEMPLATE = `lora_test_template_${createHash("sha256").update(migrationNames().join()).digest("hex").slice(0, 12)}`;

/** Builds (or rebuilds, when its migrations are not all applied) the template with `prisma migrate deploy`. */
async function ensureTemplate(admin: pg.Client): Promise<void> {
  await admin.query("SELECT pg_advisory_lock(727274)");
  try {
    const exists = await admin.query("SELECT 1 FROM pg_database WHERE datname = $1", [TEMPLATE]);
    if (exists.rowCount) {
      const template = new pg.Client({ connectionString: databaseUrl(TEMPLATE) });
      await template.connect();
      const applied = await template
        .query("SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL ORDER BY migration_name")
        .then((result) => result.rows.map((row) => row.migration_name as string))
        .catch(() => [] as string[]);
      await template.end();
      if (applied.join() === migrationNames().join()) return;
      await admin.query(`DROP DATABASE ${TEMPLATE}`);
    }
    await admin.query(`CREATE DATABASE ${TEMPLATE}`);
    execFileSync("bash", [path.join(repoRoot, "scripts/prisma.sh"), "migrate", "deploy"], {
      cwd: repoRoot,
      env: { ...process.env, DATABASE_URL: databaseUrl(TEMPLATE) },
      stdio: "pipe",
    });
  } finally {
    await admin.query("SELECT pg_advisory_unlock(727274)");
  }
}

export interface TestDatabase {
  url: string;
  prisma: PrismaClient;
  /** The outage log `prisma`'s pool reports to, for an app built on this database. */
  outages: OutageLog;
  drop(): Promise<void>;
}

export async function createTestDatabase(label: string): Promise<TestDatabase> {
  const name = `lora_test_${label.replace(/[^a-z0-9]/gi, "_").toLowerCase()}_${randomBytes(4).toString("hex")}`;
  await withAdmin(async (admin) => {
    await ensureTemplate(admin);
    await admin.query(`CREATE DATABASE ${name} TEMPLATE ${TEMPLATE}`);
  });
  const url = databaseUrl(name);
  const outages = new OutageLog(createLogger("silent", "test"));
  const prisma = createPrisma(url, outages);
  return {
    url,
    prisma,
    outages,
    async drop() {
      await prisma.$disconnect();
      await withAdmin((admin) => admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}

/** A queue prefix no other test file uses. */
export function testQueuePrefix(label: string): string {
  return `test-${label}-${randomBytes(4).toString("hex")}`;
}
