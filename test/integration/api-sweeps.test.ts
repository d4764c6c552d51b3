// Adapter size search through HTTP with a real worker: a sweep over 5 ranks runs as 5 ordinary
// jobs, reports the table (rank, modules, trainable parameters, adapter bytes, time, metrics),
// picks by the rule of services/api/sweeps/pick.ts, draws the chart with the pick ringed, and
// cancels as a group.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import request from "supertest";
import { pickSmallestWithinTolerance } from "../../services/trainer/index.ts";
import { startTestApi, type TestApi } from "../helpers/api.ts";
import { trainingFixture, type TrainingFixture } from "../helpers/training-fixture.ts";
import { serveWithWorker, waitFor, type ServiceProcess } from "../helpers/worker-harness.ts";

interface SweepBody {
  id: string;
  status: string;
  metric: string;
  higherIsBetter: boolean;
  tolerance: number;
  table: { jobId: string; status: string; rank: number; alpha: number; targetModules: string[]; adapterId: string | null; trainableParameters: number | null; adapterBytes: number | null; trainingMs: number | null; metrics: Record<string, number> }[];
  pick: { jobId: string; adapterId: string; reason: string } | null;
  reason: string;
}

describe("sweeps with a worker", () => {
  let api: TestApi;
  let worker: ServiceProcess;
  let fixture: TrainingFixture;
  let datasetId: string;
  const ranks = [1, 2, 4, 8, 16];

  before(async () => {
    api = await startTestApi("sweeps");
    fixture = await trainingFixture(api.modelsDir);
    ({ worker } = await serveWithWorker(api));
    const uploaded = await request(api.app.server).post("/v1/datasets").set("authorization", api.keys.a).attach("file", await fs.readFile(fixture.job.datasetFile), "train.jsonl").expect(201);
    datasetId = uploaded.body.id as string;
  });
  after(async () => {
    await worker.stop();
    await api.close();
  });

  const sweepRequest = (extra: object) => ({
    baseModel: "tiny-distilbert",
    trainDatasetId: datasetId,
    validationSplit: 0.2,
    ranks,
    lora: { dropout: 0 },
    hyperparameters: { epochs: 1, maxSteps: 3, batchSize: 8, learningRate: 0.01, warmupRatio: 0, maxSeqLength: 16, seed: 7 },
    ...extra,
  });

  async function chartOf(sweepId: string): Promise<{ svg: string; contentType: string }> {
    const response = await fetch(`http://127.0.0.1:${(api.app.server.address() as { port: number }).port}/v1/sweeps/${sweepId}/chart.svg`, { headers: { authorization: api.keys.a } });
    assert.equal(response.status, 200);
    return { svg: await response.text(), contentType: response.headers.get("content-type") ?? "" };
  }

  it("runs 5 ranks as 5 jobs, reports the table and the chart, and picks the smallest adapter within tolerance", async () => {
    const created = await request(api.app.server).post("/v1/sweeps").set("authorization", api.keys.a).send(sweepRequest({ tolerance: 0.05 })).expect(201);
    const sweepId = created.body.id as string;
    assert.equal(created.body.status, "running");
    assert.equal(created.body.metric, "macro_f1");
    assert.deepEqual((created.body as SweepBody).table.map((row) => [row.rank, row.alpha]), ranks.map((r) => [r, 2 * r]));
    assert.equal(await api.db.prisma.job.count({ where: { sweepId } }), 5, "one ordinary job per rank");

    const sweep = await waitFor(
      async () => {
        const body = (await request(api.app.server).get(`/v1/sweeps/${sweepId}`).set("authorization", api.keys.a).expect(200)).body as SweepBody;
        return body.status !== "running" ? body : undefined;
      },
      240_000,
      () => `sweep ${sweepId} to finish\n${worker.log}`,
    );
    assert.equal(sweep.status, "succeeded", sweep.reason);
    for (const row of sweep.table) {
      assert.equal(row.status, "succeeded");
      assert.deepEqual(row.targetModules, ["q_lin", "v_lin"]);
      assert.ok(row.adapterId && row.trainableParameters! > 0 && row.adapterBytes! > 0 && row.trainingMs! > 0, JSON.stringify(row));
      assert.ok(Number.isFinite(row.metrics.macro_f1) && Number.isFinite(row.metrics.loss), JSON.stringify(row.metrics));
    }
    // LoRA's parameters grow with the rank; the head's are the same in every adapter.
    const parameters = sweep.table.map((row) => row.trainableParameters!);
    const perRank = (parameters[1] - parameters[0]) / (ranks[1] - ranks[0]);
    assert.ok(perRank > 0);
    sweep.table.forEach((row, index) => assert.equal(row.trainableParameters, parameters[0] + perRank * (row.rank - ranks[0])));
    // Each child is an ordinary job that names its sweep; its adapter shows the trainable parameters the table counts.
    for (const row of sweep.table) {
      const child = (await request(api.app.server).get(`/v1/jobs/${row.jobId}`).set("authorization", api.keys.a).expect(200)).body;
      assert.equal(child.sweepId, sweepId);
      assert.equal(child.composition, null);
      const adapter = (await request(api.app.server).get(`/v1/adapters/${row.adapterId}`).set("authorization", api.keys.a).expect(200)).body;
      assert.equal(adapter.trainableParameters, row.trainableParameters);
    }

    const expected = pickSmallestWithinTolerance(
      sweep.table.map((row) => ({ jobId: row.jobId, rank: row.rank, targetModules: row.targetModules, size: row.trainableParameters!, value: row.metrics.macro_f1 })),
      "macro_f1",
      true,
      0.05,
    )!;
    assert.equal(sweep.pick!.jobId, expected.jobId);
    assert.equal(sweep.pick!.adapterId, sweep.table.find((row) => row.jobId === expected.jobId)!.adapterId);
    assert.equal(sweep.reason, expected.reason);

    const chart = await chartOf(sweepId);
    assert.match(chart.contentType, /^image\/svg\+xml/);
    const svg = chart.svg;
    assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    assert.equal(svg.match(/<circle class="point"/g)?.length, 5);
    const ringed = [...svg.matchAll(/<circle class="pick" data-job-id="([^"]+)"/g)].map((match) => match[1]);
    assert.deepEqual(ringed, [sweep.pick!.jobId]);

    await request(api.app.server).get(`/v1/sweeps/${sweepId}`).set("authorization", api.keys.b).expect(404);

    // Forged child metrics at the tolerance's edges (5 % here): best 0.9 at rank 8, rank 2 exactly 5 %
    // behind (0.855), rank 1 just over (0.8549). The pick is rank 2, in the table, the reason and the chart.
    const forged = [0.8549, 0.855, 0.87, 0.9, 0.88];
    for (const [index, row] of sweep.table.entries()) {
      await api.db.prisma.job.update({ where: { id: row.jobId }, data: { metrics: { ...row.metrics, macro_f1: forged[index] } } });
    }
    const reread = (await request(api.app.server).get(`/v1/sweeps/${sweepId}`).set("authorization", api.keys.a).expect(200)).body as SweepBody;
    const rankTwo = reread.table.find((row) => row.rank === 2)!;
    assert.equal(reread.pick!.jobId, rankTwo.jobId);
    assert.match(reread.reason, /^rank 2 on q_lin,v_lin is the smallest adapter whose macro_f1, 0\.855, is within 5 % of the best, 0\.9 \(rank 8 on q_lin,v_lin; higher is better\)/);
    assert.deepEqual([...(await chartOf(sweepId)).svg.matchAll(/<circle class="pick" data-job-id="([^"]+)"/g)].map((match) => match[1]), [rankTwo.jobId]);
  });

  it("cancels every unfinished child as a group", async () => {
    const created = await request(api.app.server)
      .post("/v1/sweeps")
      .set("authorization", api.keys.a)
      .send(sweepRequest({ ranks: [2, 4, 8], hyperparameters: { epochs: 1000, batchSize: 2, maxSeqLength: 16 } }))
      .expect(201);
    const sweepId = created.body.id as string;
    const cancelled = await request(api.app.server).post(`/v1/sweeps/${sweepId}/cancel`).set("authorization", api.keys.a).expect(200);
    for (const row of (cancelled.body as SweepBody).table) assert.ok(["cancelled", "cancelling"].includes(row.status), row.status);
    const finished = await waitFor(
      async () => {
        const body = (await request(api.app.server).get(`/v1/sweeps/${sweepId}`).set("authorization", api.keys.a).expect(200)).body as SweepBody;
        return body.status !== "running" ? body : undefined;
      },
      60_000,
      () => `sweep ${sweepId} to be cancelled\n${worker.log}`,
    );
    assert.equal(finished.status, "cancelled");
    assert.deepEqual(finished.table.map((row) => row.status), ["cancelled", "cancelled", "cancelled"]);
    assert.equal(finished.pick, null);
  });

  it("rejects what a sweep cannot compare", async () => {
    const post = (body: object) => request(api.app.server).post("/v1/sweeps").set("authorization", api.keys.a).send(body);
    const { validationSplit: _split, ...withoutValidation } = sweepRequest({});
    assert.equal((await post(withoutValidation).expect(400)).body.error.code, "validation_required");
    assert.equal((await post(sweepRequest({ metric: "perplexity" })).expect(400)).body.error.code, "invalid_metric");
    assert.equal((await post(sweepRequest({ ranks: [2, 2] })).expect(400)).body.error.code, "validation_failed");
    assert.equal((await post(sweepRequest({ lora: { r: 4 } })).expect(400)).body.error.code, "validation_failed");
    assert.equal((await post(sweepRequest({ alpha: 8 })).expect(400)).body.error.code, "validation_failed");
    assert.equal((await post(sweepRequest({ baseModel: "nope" })).expect(422)).body.error.code, "invalid_reference");
  });

  it("runs the data quality preflight of a job submission: conflicting labels refuse the sweep unless acknowledged", async () => {
    const lines = ["great movie", "awful movie", "great movie", "fine film", "bad film", "nice film"].map((text, index) => JSON.stringify({ text, label: index === 2 ? "negative" : index % 2 ? "negative" : "positive" }));
    const uploaded = await request(api.app.server).post("/v1/datasets").set("authorization", api.keys.a).attach("file", Buffer.from(lines.join("\n") + "\n"), "conflicts.jsonl").expect(201);
    const conflicting = sweepRequest({ trainDatasetId: uploaded.body.id, ranks: [1, 2] });
    const sweepsBefore = await api.db.prisma.sweep.count();
    const refused = await request(api.app.server).post("/v1/sweeps").set("authorization", api.keys.a).send(conflicting).expect(422);
    assert.equal(refused.body.error.code, "data_quality");
    assert.match(refused.body.error.message, /label_conflict/);
    assert.equal(await api.db.prisma.sweep.count(), sweepsBefore, "nothing stored");
    const accepted = await request(api.app.server).post("/v1/sweeps").set("authorization", api.keys.a).send({ ...conflicting, acknowledgeDataWarnings: true }).expect(201);
    const children = await api.db.prisma.job.findMany({ where: { sweepId: accepted.body.id } });
    assert.equal(children.length, 2);
    for (const child of children) assert.ok((child.qualityReport as { findings: { code: string }[] }).findings.some((finding) => finding.code === "label_conflict"));
    await request(api.app.server).post(`/v1/sweeps/${accepted.body.id}/cancel`).set("authorization", api.keys.a).expect(200);
  });
});
