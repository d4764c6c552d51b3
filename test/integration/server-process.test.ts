// The API as an operator runs it: a real process, ready within 20 s, gone cleanly on SIGTERM.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { createTestDatabase, testQueuePrefix, type TestDatabase } from "../helpers/services.ts";
import { freePort } from "../helpers/redis-server.ts";

const root = path.resolve(import.meta.dirname, "../..");

describe("API server process", () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase("server");
  });
  after(async () => db.drop());

  it("is ready within 20 s, names its backend, and exits 0 on SIGTERM", async () => {
    const port = await freePort();
    const started = Date.now();
    const server = spawn(process.execPath, ["--import", "tsx", "services/api/server.ts"], {
      cwd: root,
      env: {
        ...process.env,
        PORT: String(port),
        DATABASE_URL: db.url,
        QUEUE_PREFIX: testQueuePrefix("server"),
        DATA_DIR: "/tmp/lora-test-server",
        TRAINER_BACKEND: "cpu",
        LOG_LEVEL: "info",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let logs = "";
    server.stdout.on("data", (chunk: Buffer) => (logs += chunk.toString()));
    server.stderr.on("data", (chunk: Buffer) => (logs += chunk.toString()));
    try {
      let ready: { status: string; backend: string } | undefined;
      while (!ready && Date.now() - started < 20_000) {
        const response = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
        const body = response?.status === 200 ? ((await response.json()) as { status: string; backend: string }) : undefined;
        if (body && body.backend !== "initialising") ready = body;
        else await new Promise((resolve) => setTimeout(resolve, 200));
      }
      assert.ok(ready, `not ready within 20 s; logs:\n${logs}`);
      assert.equal(ready.backend, "cpu");

      const exited = once(server, "exit");
      server.kill("SIGTERM");
      const [code] = await exited;
      assert.equal(code, 0, logs);
      assert.match(logs, /shutdown complete/);
      assert.match(logs, /"reqId"/, "requests are logged with their request id");
      await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`));
    } finally {
      if (server.exitCode === null) server.kill("SIGKILL");
    }
  });
});
