// The dataset quality report over HTTP against a real API and Postgres: made at upload and shown on
// the dataset, the job preflight refusing label conflicts and train/validation leakage with 422
// data_quality (ours and the OpenAI-compatible route), the override, token lengths with a real
// tokenizer, and the report kept on the job.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import OpenAI, { toFile } from "openai";
import request from "supertest";
import { uploadModel } from "../../services/common/model-store.ts";
import { jsonl, startTestApi, type TestApi } from "../helpers/api.ts";
import { engineFixtures, fixtureModel } from "../helpers/engine-fixtures.ts";
import { TestS3 } from "../helpers/s3-server.ts";

/** Distinct reviews: a clean file finds nothing in them. */
const REVIEWS = [
  "The soundtrack carried every quiet scene beautifully",
  "A tedious script that nobody could rescue",
  "Bright performances from a young and fearless cast",
  "I checked my watch four times before the halfway mark",
  "Gorgeous photography of mountains at dawn",
  "The villain's motives never made any sense to me",
  "Warm, funny and surprisingly wise about families",
  "Dialogue so wooden you could build a cabin with it",
];
const clean = REVIEWS.map((text, index) => ({ text, label: index % 2 ? "negative" : "positive" }));
/** Lines 9-11 planted: a duplicate of line 1, a conflict with line 2, a near duplicate of line 5. */
const planted = [
  ...clean,
  { text: "the soundtrack carried every quiet scene, beautifully!", label: "positive" },
  { text: "A tedious script that nobody could rescue", label: "positive" },
  { text: "Gorgeous photography of mountains at dawn, yes", label: "positive" },
];

interface Finding {
  code: string;
  severity: string;
  count: number;
  lines: number[];
}

describe("dataset quality over HTTP", () => {
  let api: TestApi;
  const upload = async (records: unknown[]) =>
    (await request(api.app.server).post("/v1/datasets").set("authorization", api.keys.a).attach("file", jsonl(records), "d.jsonl").expect(201)).body as {
      id: string;
      qualityReport: { version: number; examples: number; findings: Finding[] };
    };
  const submit = (body: object) => request(api.app.server).post("/v1/jobs").set("authorization", api.keys.a).send(body);
  const codesOf = (findings: Finding[]) => findings.map((finding) => finding.code).sort();

  before(async () => {
    api = await startTestApi("data_quality");
    await engineFixtures();
    // A model folder with a real tokenizer, so the preflight counts tokens (64 positions).
    await fs.cp(fixtureModel("distilbert-cls"), path.join(api.modelsDir, "real-distilbert"), { recursive: true });
  });
  after(async () => api.close());

  it("reports planted findings at upload with their line numbers, and nothing on a clean file", async () => {
    const dataset = await upload(planted);
    const report = dataset.qualityReport;
    assert.equal(report.version, 1);
    assert.equal(report.examples, 11);
    const byCode = Object.fromEntries(report.findings.map((finding) => [finding.code, finding]));
    assert.deepEqual(codesOf(report.findings), ["exact_duplicate", "label_conflict", "near_duplicate"]);
    assert.deepEqual(byCode.exact_duplicate.lines, [9]);
    assert.deepEqual([byCode.label_conflict.lines, byCode.label_conflict.severity], [[2, 10], "blocking"]);
    assert.deepEqual(byCode.near_duplicate.lines, [11]);

    const shown = await request(api.app.server).get(`/v1/datasets/${dataset.id}`).set("authorization", api.keys.a).expect(200);
    assert.deepEqual(shown.body.qualityReport, report);
    const quality = await request(api.app.server).get(`/v1/datasets/${dataset.id}/quality`).set("authorization", api.keys.a).expect(200);
    assert.deepEqual(quality.body, report);

    assert.deepEqual((await upload(clean)).qualityReport.findings, []);
  });

  it("makes the report of an upload stored before reports existed on first request", async () => {
    const dataset = await upload(planted);
    await api.db.prisma.$executeRawUnsafe(`UPDATE "Dataset" SET "qualityReport" = NULL WHERE id = $1::uuid`, dataset.id);
    const quality = await request(api.app.server).get(`/v1/datasets/${dataset.id}/quality`).set("authorization", api.keys.a).expect(200);
    assert.deepEqual(quality.body, dataset.qualityReport);
    const row = await api.db.prisma.dataset.findUniqueOrThrow({ where: { id: dataset.id } });
    assert.deepEqual(row.qualityReport, dataset.qualityReport);
  });

  it("refuses a training set with label conflicts with 422 data_quality unless acknowledged", async () => {
    const trainDatasetId = (await upload(planted)).id;
    const refused = await submit({ baseModel: "tiny-distilbert", trainDatasetId }).expect(422);
    assert.equal(refused.body.error.code, "data_quality");
    assert.match(refused.body.error.message, /label_conflict \(2\)/);
    assert.deepEqual(refused.body.error.details, [{ path: "body.trainDatasetId", message: refused.body.error.details[0].message }]);
    assert.match(refused.body.error.details[0].message, /lines 2, 10/);
    assert.equal(await api.db.prisma.job.count(), 0, "nothing stored");

    const accepted = await submit({ baseModel: "tiny-distilbert", trainDatasetId, acknowledgeDataWarnings: true }).expect(201);
    const row = await api.db.prisma.job.findUniqueOrThrow({ where: { id: accepted.body.id } });
    const kept = row.qualityReport as unknown as { findings: Finding[] };
    assert.ok(kept.findings.some((finding) => finding.code === "label_conflict" && finding.severity === "blocking"), "the job keeps the report it was accepted with");
    const shown = await request(api.app.server).get(`/v1/jobs/${accepted.body.id}/quality`).set("authorization", api.keys.a).expect(200);
    assert.deepEqual(shown.body, row.qualityReport);
    await request(api.app.server).get(`/v1/jobs/${accepted.body.id}/quality`).set("authorization", api.keys.b).expect(404);
  });

  it("refuses train/validation leakage above 1 % and names the validation lines", async () => {
    const trainDatasetId = (await upload(clean)).id;
    const validation = [
      { text: "An inventive heist plot with a satisfying twist", label: "positive" },
      { text: "warm, funny and surprisingly wise about families", label: "positive" }, // line 2: train line 7
      { text: "Muddy sound mixing buried half the jokes", label: "negative" },
    ];
    const validationDatasetId = (await upload(validation)).id;
    const refused = await submit({ baseModel: "tiny-distilbert", trainDatasetId, validationDatasetId }).expect(422);
    assert.equal(refused.body.error.code, "data_quality");
    assert.equal(refused.body.error.details[0].path, "body.validationDatasetId");
    assert.match(refused.body.error.details[0].message, /train_validation_leakage: 1 of 3 .* lines 2$/);
    const accepted = await submit({ baseModel: "tiny-distilbert", trainDatasetId, validationDatasetId, acknowledgeDataWarnings: true }).expect(201);
    const row = await api.db.prisma.job.findUniqueOrThrow({ where: { id: accepted.body.id } });
    const leakage = (row.qualityReport as unknown as { findings: (Finding & { examples: unknown[] })[] }).findings.find((finding) => finding.code === "train_validation_leakage")!;
    assert.deepEqual([leakage.count, leakage.lines, leakage.examples], [1, [2], [{ validationLine: 2, trainLine: 7 }]]);
    await submit({ baseModel: "tiny-distilbert", trainDatasetId, validationDatasetId: (await upload(validation.slice(0, 1))).id }).expect(201);
  });

  it("counts tokens with the job's model and shows what it will truncate, without refusing", async () => {
    // Words the fixture tokenizer knows, so each is one token.
    const long = (await fs.readFile(fixtureModel("sentiment-train.jsonl"), "utf8")).split("\n").slice(0, 8).map((line) => JSON.parse(line) as { text: string; label: string });
    long[2] = { text: `${long[2].text} ${"very great film ".repeat(20)}`, label: long[2].label }; // line 3
    const trainDatasetId = (await upload(long)).id;
    const created = await submit({ baseModel: "real-distilbert", trainDatasetId, hyperparameters: { maxSeqLength: 32 } }).expect(201);
    const row = await api.db.prisma.job.findUniqueOrThrow({ where: { id: created.body.id } });
    const report = row.qualityReport as unknown as { findings: Finding[]; stats: { tokens: { maxLength: number; truncated: number; max: number; model: string } } };
    const tooLong = report.findings.find((finding) => finding.code === "too_long")!;
    assert.deepEqual([tooLong.count, tooLong.lines, tooLong.severity], [1, [3], "warning"]);
    assert.equal(report.stats.tokens.maxLength, 32);
    assert.equal(report.stats.tokens.model, "real-distilbert");
    assert.ok(report.stats.tokens.max > 64, "counted before truncation");
  });

  it("answers 503 artifact_store_unavailable when the dataset's file cannot be read", async () => {
    const dataset = await upload(clean.slice(0, 5));
    const row = await api.db.prisma.dataset.findUniqueOrThrow({ where: { id: dataset.id } });
    await fs.rm(api.store.pathOf(row.storageKey));
    const answer = await submit({ baseModel: "tiny-distilbert", trainDatasetId: dataset.id }).expect(503);
    assert.equal(answer.body.error.code, "artifact_store_unavailable");
    // The harness fails a file on any 5xx; this one is the behaviour under test.
    api.serverErrors.splice(api.serverErrors.findIndex((entry) => entry.endsWith("503")), 1);
  });

  it("refuses the same data on the OpenAI-compatible route in OpenAI's error shape; metadata acknowledges it", async () => {
    await api.app.listen({ host: "127.0.0.1", port: 0 });
    const baseURL = `http://127.0.0.1:${(api.app.server.address() as { port: number }).port}/v1`;
    const client = new OpenAI({ baseURL, apiKey: api.keys.a.replace(/^Bearer /, ""), maxRetries: 0 });
    const file = await client.files.create({ file: await toFile(jsonl(planted), "planted.jsonl"), purpose: "fine-tune" });
    const error = await client.fineTuning.jobs.create({ model: "tiny-distilbert", training_file: file.id }).then(
      () => assert.fail("expected 422"),
      (caught: unknown) => caught as InstanceType<typeof OpenAI.APIError>,
    );
    assert.ok(error instanceof OpenAI.APIError);
    assert.deepEqual([error.status, error.code, error.param], [422, "data_quality", "training_file"]);
    assert.match(error.message, /label_conflict \(2\).*metadata\.acknowledge_data_warnings/);
    const job = await client.fineTuning.jobs.create({ model: "tiny-distilbert", training_file: file.id, metadata: { acknowledge_data_warnings: "true" } });
    assert.equal(job.status, "queued");
  });
});

describe("dataset quality thresholds from the configuration", () => {
  let api: TestApi;
  before(async () => {
    api = await startTestApi("data_quality_thresholds", { DATA_QUALITY_MAX_LABEL_CONFLICTS: "2" });
  });
  after(async () => api.close());

  it("accepts as many label conflicts as DATA_QUALITY_MAX_LABEL_CONFLICTS allows, as warnings", async () => {
    const uploaded = await request(api.app.server).post("/v1/datasets").set("authorization", api.keys.a).attach("file", jsonl(planted), "d.jsonl").expect(201);
    const conflict = (uploaded.body.qualityReport.findings as Finding[]).find((finding) => finding.code === "label_conflict")!;
    assert.deepEqual([conflict.count, conflict.severity], [2, "warning"]);
    await request(api.app.server).post("/v1/jobs").set("authorization", api.keys.a).send({ baseModel: "tiny-distilbert", trainDatasetId: uploaded.body.id }).expect(201);
  });
});

describe("dataset quality preflight with the s3 store", () => {
  let api: TestApi;
  let s3: TestS3;
  before(async () => {
    s3 = await TestS3.start("data-quality");
    api = await startTestApi("data_quality_s3", {}, undefined, s3);
    await engineFixtures();
    await uploadModel(api.config, api.store, fixtureModel("distilbert-cls"), "real-distilbert");
  });
  after(async () => {
    await api.close();
    await s3.stop();
  });

  it("counts tokens with the tokenizer files from the bucket, without fetching the weights", async () => {
    const lines = (await fs.readFile(fixtureModel("sentiment-train.jsonl"), "utf8")).split("\n").slice(0, 6).map((line) => JSON.parse(line) as { text: string; label: string });
    lines[4] = { text: `${lines[4].text} ${"very great film ".repeat(20)}`, label: lines[4].label }; // line 5
    const uploaded = await request(api.app.server).post("/v1/datasets").set("authorization", api.keys.a).attach("file", jsonl(lines), "d.jsonl").expect(201);
    const created = await request(api.app.server)
      .post("/v1/jobs")
      .set("authorization", api.keys.a)
      .send({ baseModel: "real-distilbert", trainDatasetId: uploaded.body.id, hyperparameters: { maxSeqLength: 32 } })
      .expect(201);
    const row = await api.db.prisma.job.findUniqueOrThrow({ where: { id: created.body.id } });
    const tooLong = (row.qualityReport as unknown as { findings: Finding[] }).findings.find((finding) => finding.code === "too_long")!;
    assert.deepEqual(tooLong.lines, [5]);
    await assert.rejects(fs.access(path.join(api.config.dataDir, "models", "real-distilbert", "model.safetensors")), "the weights stay in the bucket");
  });
});
