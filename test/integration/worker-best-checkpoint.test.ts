// With the s3 store, a resumed early-stopping job must get back its best checkpoint, not only the
// newest: the engine takes the adapter's weights from it. Two stores on one bucket play the worker
// that saved the checkpoints and the one on another machine that resumes the job.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { JobRecords } from "../../services/worker/job-records.ts";
import { TestS3 } from "../helpers/s3-server.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/services.ts";

describe("resuming with the s3 store", () => {
  let db: TestDatabase;
  let s3: TestS3;
  let root: string;
  let jobId: string;

  before(async () => {
    db = await createTestDatabase("best_checkpoint");
    s3 = await TestS3.start("best-checkpoint");
    root = await fs.mkdtemp(path.join(os.tmpdir(), "lora-best-checkpoint-"));
    const tenant = await db.prisma.tenant.create({ data: { name: "t" } });
    await db.prisma.baseModel.create({ data: { id: "m", path: "/models/m", architecture: "DistilBertForSequenceClassification", modelType: "distilbert", tasks: ["classification"], config: {} } });
    const dataset = await db.prisma.dataset.create({
      data: { tenantId: tenant.id, name: "d", format: "classification", rows: 1, sizeBytes: 1n, sha256: "0", storageKey: "datasets/d.jsonl", stats: {} },
    });
    jobId = (await db.prisma.job.create({ data: { tenantId: tenant.id, task: "classification", baseModelId: "m", trainDatasetId: dataset.id, loraConfig: {}, hyperparameters: {}, status: "running" } })).id;
  });
  after(async () => {
    await s3.stop();
    await db.drop();
    await fs.rm(root, { recursive: true, force: true });
  });

  it("brings back the best checkpoint along with the newest", async () => {
    const saving = new JobRecords(db.prisma, s3.store(path.join(root, "first-machine")), jobId, "worker-1");
    for (const step of [4, 8, 12]) {
      const dir = path.join(saving.checkpointDir(), `step-${step}`);
      await fs.mkdir(dir, { recursive: true });
      await fs.writeFile(path.join(dir, "adapter_model.safetensors"), `weights at ${step}`);
      await fs.writeFile(path.join(dir, "trainer_state.json"), JSON.stringify({ step, earlyStopping: { bestStep: 4, bestValue: 0.1, stale: step === 4 ? 0 : step / 4 - 1 } }));
      await saving.checkpoint(step, dir);
    }

    const resuming = new JobRecords(db.prisma, s3.store(path.join(root, "second-machine")), jobId, "worker-2");
    const newest = await resuming.newestCheckpoint();
    assert.equal(newest?.step, 12);
    const local = resuming.checkpointDir();
    assert.equal(await fs.readFile(path.join(local, "step-4", "adapter_model.safetensors"), "utf8"), "weights at 4", "the best checkpoint is local, where the engine looks");
    assert.equal(existsSync(path.join(local, "step-8")), false, "checkpoints between them stay in the bucket");
    // The run's local copies go when it ends; the bucket keeps every checkpoint, the best included.
    await resuming.removeLocalCopies(await resuming.scratchFolder());
    assert.equal(existsSync(path.join(local, "step-4")), false);
    assert.equal(await db.prisma.checkpoint.count({ where: { jobId } }), 3);
  });
});
