// A causal LM through HTTP with a real worker process: chat dataset upload → job → adapter →
// POST /v1/adapters/:id/generate answers with the trained replies; bad requests get 4xx.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { chatRecords, PATTERN_PAIRS } from "../fixtures/make-causal-fixtures.ts";
import { causalFixtures } from "../helpers/causal-fixtures.ts";
import { startTestApi, type TestApi } from "../helpers/api.ts";
import { serveWithWorker, waitFor, type ServiceProcess } from "../helpers/worker-harness.ts";

describe("causal LM fine-tuning and generation through HTTP", () => {
  let api: TestApi;
  let baseUrl: string;
  let worker: ServiceProcess;
  let fixtures: string;
  const request = (method: string, url: string, body?: unknown) =>
    fetch(`${baseUrl}${url}`, {
      method,
      headers: { authorization: api.keys.a, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });

  before(async () => {
    fixtures = await causalFixtures();
    api = await startTestApi("causal_http");
    await fs.cp(path.join(fixtures, "llama-tiny"), path.join(api.modelsDir, "tiny-llama"), { recursive: true });
    ({ baseUrl, worker } = await serveWithWorker(api));
  });

  after(async () => {
    await worker.stop();
    await api.close();
  });

  it("trains a chat adapter from an uploaded dataset and generates the trained replies", async () => {
    const uploadDataset = async (file: string) => {
      const upload = new FormData();
      upload.append("file", new Blob([await fs.readFile(path.join(fixtures, file))]), file);
      const dataset = await fetch(`${baseUrl}/v1/datasets`, { method: "POST", headers: { authorization: api.keys.a }, body: upload });
      assert.equal(dataset.status, 201, await dataset.clone().text());
      const { id, format } = (await dataset.json()) as { id: string; format: string };
      assert.equal(format, "chat");
      return id;
    };
    const datasetId = await uploadDataset("chat-train.jsonl");
    const validationDatasetId = await uploadDataset("chat-validation.jsonl");

    const created = await request("POST", "/v1/jobs", {
      baseModel: "tiny-llama",
      trainDatasetId: datasetId,
      validationDatasetId,
      lora: { r: 8, alpha: 16, dropout: 0 },
      hyperparameters: { epochs: 60, batchSize: 8, learningRate: 0.02, warmupRatio: 0, weightDecay: 0, maxSeqLength: 64, seed: 1 },
      // The fixture's validation set is its training set (the test checks the model learned it): leakage on purpose.
      acknowledgeDataWarnings: true,
    });
    assert.equal(created.status, 201, await created.clone().text());
    const { id: jobId, task } = (await created.json()) as { id: string; task: string };
    assert.equal(task, "causal_lm");

    const job = await waitFor(
      async () => {
        const current = (await (await request("GET", `/v1/jobs/${jobId}`)).json()) as { status: string; adapterId?: string; error?: unknown };
        if (["failed", "cancelled"].includes(current.status)) assert.fail(`job ${current.status}: ${JSON.stringify(current.error)}\n${worker.log}`);
        return current.status === "succeeded" ? current : undefined;
      },
      120_000,
      "the causal job to succeed",
    );
    const adapterId = job.adapterId!;
    const evaluations = await api.db.prisma.evaluation.findMany({ where: { adapterId } });
    const byMetric = new Map(evaluations.map((row) => [row.metric, row]));
    for (const metric of ["loss", "perplexity", "next_token_accuracy"]) assert.ok(byMetric.get(metric)?.baselineValue != null, `no ${metric} with a baseline`);
    assert.ok(byMetric.get("loss")!.value < 0.2 * byMetric.get("loss")!.baselineValue!);
    const adapter = (await (await request("GET", `/v1/adapters/${adapterId}`)).json()) as { task: string };
    assert.equal(adapter.task, "causal_lm");

    for (const [index, record] of chatRecords().entries()) {
      const response = await request("POST", `/v1/adapters/${adapterId}/generate`, { messages: record.messages.slice(0, 2), maxNewTokens: 6 });
      assert.equal(response.status, 200, await response.clone().text());
      const answer = (await response.json()) as { text: string; finishReason: string; usage: { promptTokens: number; completionTokens: number } };
      assert.equal(answer.text.trim(), PATTERN_PAIRS[index][1]);
      assert.equal(answer.finishReason, "eos");
      assert.ok(answer.usage.promptTokens > 0 && answer.usage.completionTokens > 0);
    }

    const sampled = await request("POST", `/v1/adapters/${adapterId}/generate`, { prompt: "colour", maxNewTokens: 4, temperature: 0.7, topK: 20, topP: 0.9, seed: 3, stop: ["\n"] });
    assert.equal(sampled.status, 200, await sampled.clone().text());

    const both = await request("POST", `/v1/adapters/${adapterId}/generate`, { prompt: "x", messages: [{ role: "user", content: "x" }] });
    assert.equal(both.status, 400);
    const badRole = await request("POST", `/v1/adapters/${adapterId}/generate`, { messages: [{ role: "robot", content: "x" }] });
    assert.equal(badRole.status, 400);
    const tooLong = await request("POST", `/v1/adapters/${adapterId}/generate`, { prompt: "x", maxNewTokens: 100000 });
    assert.equal(tooLong.status, 400);
    const missing = await request("POST", "/v1/adapters/00000000-0000-4000-8000-000000000000/generate", { prompt: "x" });
    assert.equal(missing.status, 404);
    const otherTenant = await fetch(`${baseUrl}/v1/adapters/${adapterId}/generate`, {
      method: "POST",
      headers: { authorization: api.keys.b, "content-type": "application/json" },
      body: JSON.stringify({ prompt: "x" }),
    });
    assert.equal(otherTenant.status, 404);
    const predict = await request("POST", `/v1/adapters/${adapterId}/predict`, { inputs: ["x"] });
    assert.equal(predict.status, 422);
    assert.deepEqual(api.serverErrors, []);
  });
});
