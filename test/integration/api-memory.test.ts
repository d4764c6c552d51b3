// Memory is planned, not discovered: GET /v1/models shows each model's planned training memory per
// weight storage mode; with WORKER_MAX_MEMORY set, a job whose plan exceeds it is refused at submission
// (POST /v1/jobs and POST /v1/fine_tuning/jobs) with 422 insufficient_memory naming the estimate and the
// limit, and nothing is stored or queued; POST /v1/jobs/estimate shows the same plan and whether it fits.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import request from "supertest";
import { planTrainingMemory, resolveJobSettings } from "../../services/trainer/index.ts";
import { jsonl, startTestApi, type TestApi } from "../helpers/api.ts";

const LIMIT = "2GiB";
// Qwen2-7B's config.json (the numbers that matter): ~7.6 billion parameters, 28 GiB as float32.
const QWEN2_7B = {
  architectures: ["Qwen2ForCausalLM"], model_type: "qwen2", hidden_size: 3584, intermediate_size: 18944, num_hidden_layers: 28,
  num_attention_heads: 28, num_key_value_heads: 4, vocab_size: 152064, tie_word_embeddings: false, max_position_embeddings: 32768,
};
const QWEN2_TINY = { ...QWEN2_7B, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 500 };

describe("memory planning at the API", () => {
  let api: TestApi;
  let datasetId: string;
  const as = (method: "get" | "post", url: string) => request(api.app.server)[method](url).set("authorization", api.keys.a);

  before(async () => {
    api = await startTestApi("memory_plan", { WORKER_MAX_MEMORY: LIMIT });
    // Written before the first request, so the registry's first scan finds them.
    for (const [id, config] of [["qwen2-7b", QWEN2_7B], ["qwen2-tiny", QWEN2_TINY]] as const) {
      await fs.mkdir(path.join(api.modelsDir, id), { recursive: true });
      await fs.writeFile(path.join(api.modelsDir, id, "config.json"), JSON.stringify(config));
    }
    const records = Array.from({ length: 8 }, (_, index) => ({ prompt: `question ${index}`, completion: ` answer ${index}` }));
    datasetId = (await as("post", "/v1/datasets").attach("file", jsonl(records), "d.jsonl").expect(201)).body.id;
  });
  after(async () => api.close());

  it("GET /v1/models shows the planned memory of every storage mode for the default settings", async () => {
    const { body } = await as("get", "/v1/models").expect(200);
    const byId = Object.fromEntries(body.data.map((model: { id: string }) => [model.id, model]));
    const { memory } = byId["qwen2-7b"];
    const defaults = resolveJobSettings({}, "qwen2");
    assert.deepEqual(memory.settings, { r: 8, targetModules: ["q_proj", "v_proj"], batchSize: defaults.hyperparameters.batchSize, maxSeqLength: defaults.hyperparameters.maxSeqLength });
    for (const storage of ["none", "int8", "nf4"] as const) {
      const expected = planTrainingMemory(QWEN2_7B, { r: 8, targetModules: ["q_proj", "v_proj"], batchSize: memory.settings.batchSize, maxSeqLength: memory.settings.maxSeqLength, storage });
      assert.deepEqual(memory.byStorage[storage], expected, storage);
    }
    const { none, int8, nf4 } = memory.byStorage;
    assert.ok(none.weightsBytes > 28 * 2 ** 30 && int8.weightsBytes < none.weightsBytes / 2 && nf4.weightsBytes < int8.weightsBytes);
    assert.equal(byId["mystery-model"].memory, null, "a model the engine cannot plan has no estimate");
    assert.deepEqual((await as("get", "/v1/models/qwen2-tiny").expect(200)).body.memory.byStorage.none, planTrainingMemory(QWEN2_TINY, { r: 8, targetModules: ["q_proj", "v_proj"], batchSize: memory.settings.batchSize, maxSeqLength: memory.settings.maxSeqLength, storage: "none" }));
  });

  it("POST /v1/jobs refuses a job over WORKER_MAX_MEMORY with 422 insufficient_memory, storing and queueing nothing", async () => {
    const response = await as("post", "/v1/jobs").set("idempotency-key", "too-big").send({ baseModel: "qwen2-7b", trainDatasetId: datasetId }).expect(422);
    assert.equal(response.body.error.code, "insufficient_memory");
    const plan = planTrainingMemory(QWEN2_7B, { r: 8, targetModules: ["q_proj", "v_proj"], batchSize: 8, maxSeqLength: 128, storage: "none" });
    assert.match(response.body.error.message, /^this job needs an estimated \d+\.\d GiB of memory \(none weights \d+\.\d GiB, activations .*\) but the limit for one worker is 2\.00 GiB \(WORKER_MAX_MEMORY\)/);
    assert.deepEqual(response.body.error.details, [{ path: "body", message: `estimate ${plan.bytes} bytes > limit ${2 * 2 ** 30} bytes` }]);
    assert.equal(await api.db.prisma.job.count(), 0, "no Job row");
    const counts = await api.queue.getJobCounts();
    assert.equal(Object.values(counts).reduce((a, b) => a + b, 0), 0, "no BullMQ job");
    // A small model under the same limit is accepted and queued.
    const accepted = await as("post", "/v1/jobs").send({ baseModel: "qwen2-tiny", trainDatasetId: datasetId }).expect(201);
    assert.equal(accepted.body.status, "queued");
    assert.equal(await api.db.prisma.job.count(), 1);
  });

  it("the OpenAI-compatible create refuses the same way, in OpenAI's error shape", async () => {
    const file = `file-${datasetId}`;
    const before = await api.db.prisma.job.count();
    const response = await as("post", "/v1/fine_tuning/jobs").send({ model: "qwen2-7b", training_file: file }).expect(422);
    assert.equal(response.body.error.code, "insufficient_memory");
    assert.equal(response.body.error.type, "invalid_request_error");
    assert.match(response.body.error.message, /needs an estimated .* GiB of memory .* limit for one worker is 2\.00 GiB/);
    assert.equal(await api.db.prisma.job.count(), before, "no Job row");
  });

  it("POST /v1/jobs/estimate shows the plan, the limit and whether it fits", async () => {
    const big = await as("post", "/v1/jobs/estimate").send({ baseModel: "qwen2-7b", trainDatasetId: datasetId, hyperparameters: { batchSize: 2 } }).expect(200);
    const plan = planTrainingMemory(QWEN2_7B, { r: 8, targetModules: ["q_proj", "v_proj"], batchSize: 2, maxSeqLength: 128, storage: "none" });
    assert.deepEqual(big.body.memory, { ...plan, limitBytes: 2 * 2 ** 30, fits: false });
    const small = await as("post", "/v1/jobs/estimate").send({ baseModel: "qwen2-tiny", trainDatasetId: datasetId }).expect(200);
    assert.equal(small.body.memory.fits, true);
  });
});
