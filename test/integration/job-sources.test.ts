// POST /v1/jobs fromCheckpoint / fromAdapter through the API and a real worker: a job continued from
// another job's checkpoint matches, step for step, the run that never stopped; a job started from an
// adapter starts from its weights; sources of another tenant, missing ones and mismatched ones are refused.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import request from "supertest";
import { startTestApi, type TestApi } from "../helpers/api.ts";
import { trainingFixture, type TrainingFixture } from "../helpers/training-fixture.ts";
import { serveWithWorker, waitFor, type ServiceProcess } from "../helpers/worker-harness.ts";

describe("jobs that start from a checkpoint or an adapter", () => {
  let api: TestApi;
  let worker: ServiceProcess;
  let fixture: TrainingFixture;
  let datasetId: string;
  let sourceId: string;
  const post = (url: string, key = api.keys.a) => request(api.app.server).post(url).set("authorization", key);
  const body = (extra: object = {}) => ({
    baseModel: "tiny-distilbert",
    trainDatasetId: datasetId,
    validationSplit: 0.2,
    lora: fixture.job.lora,
    hyperparameters: { ...fixture.job.hyperparameters, epochs: 1, evalEverySteps: undefined, checkpointEverySteps: 4 },
    ...extra,
  });
  const finished = (jobId: string) =>
    waitFor(
      async () => {
        const row = await api.db.prisma.job.findUniqueOrThrow({ where: { id: jobId } });
        return ["succeeded", "failed", "cancelled"].includes(row.status) ? row : undefined;
      },
      120_000,
      () => `job ${jobId} to finish\n${worker.log}`,
    );
  const lossCurve = async (jobId: string) => {
    const adapter = await api.db.prisma.adapter.findUniqueOrThrow({ where: { jobId } });
    const metrics = JSON.parse(await fs.readFile(path.join(api.store.pathOf(adapter.storageKey), "metrics.json"), "utf8")) as { loss_curve: { step: number; loss: number }[] };
    return { adapter, curve: metrics.loss_curve };
  };

  before(async () => {
    api = await startTestApi("job_sources");
    fixture = await trainingFixture(api.modelsDir);
    datasetId = (await post("/v1/datasets").attach("file", await fs.readFile(fixture.job.datasetFile), "train.jsonl").expect(201)).body.id as string;
    ({ worker } = await serveWithWorker(api));
    sourceId = (await post("/v1/jobs").send(body()).expect(201)).body.id as string;
    const source = await finished(sourceId);
    assert.equal(source.status, "succeeded", JSON.stringify(source.error));
  });
  after(async () => {
    await worker.stop();
    await api.close();
  });

  it("continues another job from its checkpoint, matching its losses step for step within 1e-5", async () => {
    const created = await post("/v1/jobs").send(body({ fromCheckpoint: { jobId: sourceId, step: 4 } })).expect(201);
    assert.deepEqual(created.body.fromCheckpoint, { jobId: sourceId, step: 4 });
    const job = await finished(created.body.id);
    assert.equal(job.status, "succeeded", JSON.stringify(job.error));
    const started = await api.db.prisma.jobEvent.findFirstOrThrow({ where: { jobId: job.id, type: "started" } });
    assert.deepEqual((started.data as { fromCheckpoint: unknown }).fromCheckpoint, { jobId: sourceId, step: 4 });
    assert.match(started.message, new RegExp(`continues job ${sourceId} from step 4`));

    const original = (await lossCurve(sourceId)).curve;
    const continued = (await lossCurve(job.id)).curve;
    assert.ok(original.length > 6, `the source ran ${original.length} steps`);
    assert.equal(continued.length, original.length);
    for (const point of continued.filter((p) => p.step > 4)) {
      const same = original.find((p) => p.step === point.step)!;
      assert.ok(Math.abs(point.loss - same.loss) < 1e-5, `step ${point.step}: ${point.loss} vs ${same.loss}`);
    }
    // Its own checkpoints, not the source's.
    const own = await api.db.prisma.checkpoint.findMany({ where: { jobId: job.id }, orderBy: { step: "asc" } });
    assert.ok(own.length > 0 && own.every((row) => row.step > 4));
  });

  it("starts from an adapter's weights", async () => {
    const { adapter } = await lossCurve(sourceId);
    const created = await post("/v1/jobs").send(body({ fromAdapter: adapter.id })).expect(201);
    assert.equal(created.body.fromAdapter, adapter.id);
    const job = await finished(created.body.id);
    assert.equal(job.status, "succeeded", JSON.stringify(job.error));
    const started = await api.db.prisma.jobEvent.findFirstOrThrow({ where: { jobId: job.id, type: "started" } });
    assert.equal((started.data as { fromAdapter: string }).fromAdapter, adapter.id);
    // Already trained: its first step's loss is below the random start's.
    const fresh = (await lossCurve(sourceId)).curve[0].loss;
    const warm = (await lossCurve(job.id)).curve[0].loss;
    assert.ok(warm < fresh, `first loss ${warm} from the adapter, ${fresh} from scratch`);
  });

  it("refuses sources that are missing, another tenant's, or trained differently", async () => {
    const { adapter } = await lossCurve(sourceId);
    const code = async (extra: object, status: number, key = api.keys.a) => (await post("/v1/jobs", key).send(body(extra)).expect(status)).body.error.code as string;
    assert.equal(await code({ fromCheckpoint: { jobId: sourceId, step: 3 } }, 404), "checkpoint_not_found");
    assert.equal(await code({ fromCheckpoint: { jobId: adapter.id, step: 4 } }, 404), "source_not_found");
    assert.equal(await code({ fromAdapter: sourceId }, 404), "source_not_found");
    assert.equal(await code({ fromCheckpoint: { jobId: sourceId, step: 4 }, fromAdapter: adapter.id }, 400), "validation_failed");

    // Another tenant sees neither (its own dataset, so only the source is wrong).
    const otherDataset = (await post("/v1/datasets", api.keys.b).attach("file", await fs.readFile(fixture.job.datasetFile), "train.jsonl").expect(201)).body.id as string;
    const asB = async (extra: object) => (await post("/v1/jobs", api.keys.b).send({ ...body(extra), trainDatasetId: otherDataset }).expect(404)).body.error;
    assert.equal((await asB({ fromCheckpoint: { jobId: sourceId, step: 4 } })).code, "source_not_found");
    assert.equal((await asB({ fromAdapter: adapter.id })).code, "source_not_found");

    const seed = await post("/v1/jobs").send(body({ fromCheckpoint: { jobId: sourceId, step: 4 }, hyperparameters: { ...body().hyperparameters, seed: 1 } })).expect(422);
    assert.equal(seed.body.error.code, "source_mismatch");
    assert.deepEqual(seed.body.error.details.map((d: { path: string }) => d.path), ["body.hyperparameters.seed"]);
    const rank = await post("/v1/jobs").send(body({ fromAdapter: adapter.id, lora: { ...fixture.job.lora, r: 2 } })).expect(422);
    assert.equal(rank.body.error.code, "source_mismatch");
    assert.deepEqual(rank.body.error.details.map((d: { path: string }) => d.path), ["body.lora.r"]);
    // A learning rate may change: the continuation follows it from the checkpoint on.
    await post("/v1/jobs").send(body({ fromCheckpoint: { jobId: sourceId, step: 4 }, hyperparameters: { ...body().hyperparameters, learningRate: 0.001 } })).expect(201);
  });
});
