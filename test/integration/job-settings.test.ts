// Acceptance for one source of job settings: the CLI with no options and the API with empty `lora`
// and `hyperparameters` train with identical settings. Compared are the settings each stores: the job
// row the API writes (what the worker hands the engine) and the CLI adapter's metrics.json.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import request from "supertest";
import { resolveJobSettings, type JobSettings } from "../../services/trainer/index.ts";
import { jsonl, startTestApi, type TestApi } from "../helpers/api.ts";
import { engineFixtures, fixtureModel } from "../helpers/engine-fixtures.ts";

const run = promisify(execFile);
const CLI = path.join(import.meta.dirname, "..", "..", "services", "trainer", "cli.ts");

describe("job settings: CLI and API agree", () => {
  let api: TestApi;
  let work: string;
  let trainFile: string;

  before(async () => {
    trainFile = path.join(await engineFixtures(), "sentiment-train.jsonl");
    work = await mkdtemp(path.join(tmpdir(), "job-settings-"));
    api = await startTestApi("job_settings");
  });
  after(async () => {
    await api.close();
    await rm(work, { recursive: true, force: true });
  });

  it("resolves the CLI with no options and the API with empty settings to the same stored settings", async () => {
    // Both sides use a DistilBERT base, so even the per-architecture target modules must agree.
    const records = (await readFile(trainFile, "utf8")).split("\n").filter(Boolean).map((line) => JSON.parse(line));
    const upload = await request(api.app.server).post("/v1/datasets").set("authorization", api.keys.a).attach("file", jsonl(records), "train.jsonl").expect(201);
    const submitted = await request(api.app.server)
      .post("/v1/jobs")
      .set("authorization", api.keys.a)
      .send({ baseModel: "tiny-distilbert", trainDatasetId: upload.body.id, lora: {}, hyperparameters: {} })
      .expect(201);
    const row = await api.db.prisma.job.findUniqueOrThrow({ where: { id: submitted.body.id } });
    const stored = { lora: row.loraConfig, hyperparameters: row.hyperparameters };

    const outDir = path.join(work, "adapter");
    await run(process.execPath, ["--import", "tsx", CLI, "train", "--model", fixtureModel("distilbert-base"), "--data", trainFile, "--out", outDir], {
      env: { ...process.env, TRAINER_BACKEND: "wasm" },
    });
    const { settings } = JSON.parse(await readFile(path.join(outDir, "metrics.json"), "utf8")) as { settings: JobSettings };

    assert.equal(settings.hyperparameters.learningRate, 2e-4, "the service's defaults, not the CLI's old ones");
    assert.deepEqual(settings, stored);
    // The worker passes the stored settings to the engine, which resolves them to themselves.
    assert.deepEqual(resolveJobSettings(settings, "distilbert"), stored);
  });
});
