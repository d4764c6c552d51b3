// `prisma migrate deploy` as operators run it: offline (no engine downloads), on an empty
// database, and a no-op when run again.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { randomBytes } from "node:crypto";

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, "../..");
const adminUrl = process.env.TEST_ADMIN_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/postgres";
const name = `lora_test_migrations_${randomBytes(4).toString("hex")}`;
const url = Object.assign(new URL(adminUrl), { pathname: `/${name}` }).toString();

async function admin(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  await client.query(sql).finally(() => client.end());
}

const deploy = () => run("bash", [path.join(root, "scripts/prisma.sh"), "migrate", "deploy"], { cwd: root, env: { ...process.env, DATABASE_URL: url } });

describe("migrations", () => {
  before(() => admin(`CREATE DATABASE ${name}`));
  after(() => admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));

  it("apply to an empty database and are a no-op the second time", async () => {
    const first = await deploy();
    assert.match(first.stdout, /All migrations have been successfully applied/);
    const second = await deploy();
    assert.match(second.stdout, /No pending migrations to apply/);

    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const tables = await client.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename");
      assert.deepEqual(
        tables.rows.map((row) => row.tablename),
        ["Adapter", "ApiKey", "BaseModel", "Checkpoint", "Dataset", "Evaluation", "Job", "JobEvent", "Sweep", "Tenant", "WebhookDelivery", "WebhookEndpoint", "WebhookProgressMark", "_prisma_migrations"],
      );
      // The webhook outbox is filled by a trigger, which the schema file cannot declare.
      const triggers = await client.query(`SELECT tgname FROM pg_trigger WHERE NOT tgisinternal`);
      assert.deepEqual(triggers.rows.map((row) => row.tgname), ["JobEvent_webhook_outbox"]);
    } finally {
      await client.end();
    }
  });
});
