import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, it } from "node:test";
import request from "supertest";
import { classificationRecords, jsonl, startTestApi, type TestApi } from "../helpers/api.ts";
import { TestS3 } from "../helpers/s3-server.ts";

// Run against both artifact stores: DATA_DIR, and an S3 bucket on a real S3-protocol server.
for (const kind of ["fs", "s3"] as const) {
describe(`datasets API (${kind} store)`, () => {
  let api: TestApi;
  let s3: TestS3 | undefined;
  const upload = (body: Buffer, fields: Record<string, string> = {}, key?: string) => {
    const call = request(api.app.server).post("/v1/datasets").set("authorization", key ?? api.keys.a);
    for (const [name, value] of Object.entries(fields)) call.field(name, value);
    return call.attach("file", body, "train.jsonl");
  };

  before(async () => {
    if (kind === "s3") s3 = await TestS3.start("datasets");
    api = await startTestApi(`datasets_${kind}`, { MAX_UPLOAD_BYTES: String(12 * 1024 * 1024), MAX_DATASET_LINE_BYTES: String(64 * 1024) }, undefined, s3);
  });
  after(async () => {
    await api.close();
    await s3?.stop();
  });

  it("stores a classification file content-addressed with rows, format and stats", async () => {
    const body = jsonl(classificationRecords(30));
    const response = await upload(body, { name: "sentiment" }).expect(201);
    const dataset = response.body;
    assert.equal(dataset.name, "sentiment");
    assert.equal(dataset.format, "classification");
    assert.equal(dataset.rows, 30);
    assert.equal(dataset.sizeBytes, body.length);
    const sha256 = createHash("sha256").update(body).digest("hex");
    assert.equal(dataset.sha256, sha256);
    assert.deepEqual(dataset.stats.labelCounts, { negative: 20, positive: 10 });
    const lengths = classificationRecords(30).map((record) => record.text.length).sort((a, b) => a - b);
    assert.equal(dataset.stats.length.min, lengths[0]);
    assert.equal(dataset.stats.length.max, lengths[29]);
    assert.equal(dataset.stats.length.histogram.reduce((sum: number, bucket: { count: number }) => sum + bucket.count, 0), 30);
    const row = await api.db.prisma.dataset.findUniqueOrThrow({ where: { id: dataset.id } });
    assert.ok(row.storageKey.includes(sha256));
    const stored = await new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      api.store.read(row.storageKey).on("data", (chunk: Buffer) => chunks.push(chunk)).on("end", () => resolve(Buffer.concat(chunks))).on("error", reject);
    });
    assert.deepEqual(stored, body);
  });

  it("detects completion and chat files, and honours a declared format", async () => {
    const completion = await upload(jsonl([{ prompt: "2+2=", completion: "4" }, { prompt: "", completion: "hello" }])).expect(201);
    assert.equal(completion.body.format, "completion");
    assert.equal(completion.body.stats.labelCounts, undefined);
    assert.equal(completion.body.stats.length.max, 5);
    const chat = await upload(jsonl([{ messages: [{ role: "user", content: "hi" }, { role: "assistant", content: "hello" }] }]), { format: "chat" }).expect(201);
    assert.equal(chat.body.format, "chat");
    assert.equal(chat.body.stats.length.min, 7);
    const mismatch = await upload(jsonl([{ text: "a", label: "b" }]), { format: "chat" }).expect(422);
    assert.equal(mismatch.body.error.details[0].line, 1);
  });

  it("answers 422 with the first bad lines, their numbers and reasons, and stores nothing", async () => {
    const before = await api.db.prisma.dataset.count();
    const body = Buffer.from(
      [
        JSON.stringify({ text: "fine", label: "a" }),
        "{not json",
        JSON.stringify({ text: "", label: "a" }),
        JSON.stringify({ txt: "wrong field", label: "a" }),
        JSON.stringify({ text: "no label" }),
        JSON.stringify([1, 2]),
        "",
        JSON.stringify({ text: "fine again", label: 7 }),
      ].join("\n"),
    );
    const response = await upload(body).expect(422);
    assert.equal(response.body.error.code, "invalid_dataset");
    const details = response.body.error.details as { line: number; message: string }[];
    assert.deepEqual(details.map((detail) => detail.line), [2, 3, 4, 5, 6]);
    assert.match(details[0].message, /invalid JSON/);
    assert.match(details[1].message, /"text" must not be empty/);
    assert.match(details[2].message, /"text" must be a string/);
    assert.match(details[3].message, /"label"/);
    assert.match(details[4].message, /JSON object/);
    assert.equal(await api.db.prisma.dataset.count(), before);
  });

  it("lists at most 20 bad lines but counts them all", async () => {
    const body = Buffer.from(Array.from({ length: 50 }, () => "nope").join("\n"));
    const response = await upload(body).expect(422);
    assert.equal(response.body.error.details.length, 20);
    assert.match(response.body.error.message, /^50 bad line/);
  });

  it("rejects an empty file, a blank-lines file, binary data and invalid UTF-8", async () => {
    const empty = await upload(Buffer.alloc(0)).expect(422);
    assert.equal(empty.body.error.code, "empty_dataset");
    await upload(Buffer.from("\n\n  \n")).expect(422);
    const binary = Buffer.from([0x7b, 0x00, 0x01, 0x02, 0xff, 0xfe, 0x0a, 0x89, 0x50, 0x4e, 0x47]);
    const response = await upload(binary).expect(422);
    assert.equal(response.body.error.details[0].line, 1);
    assert.match(response.body.error.details[0].message, /binary data/);
    assert.match(response.body.error.details[1].message, /UTF-8/);
  });

  it("answers a 10 MB single line with a 422 naming the line, without buffering it", async () => {
    const huge = Buffer.from(JSON.stringify({ text: "a".repeat(10 * 1024 * 1024), label: "x" }) + "\n" + JSON.stringify({ text: "ok", label: "y" }));
    const response = await upload(huge).expect(422);
    assert.deepEqual(response.body.error.details, [{ line: 1, message: `the line is longer than ${64 * 1024} bytes` }]);
  });

  it("answers 413 over MAX_UPLOAD_BYTES and stores nothing", async () => {
    const before = await api.db.prisma.dataset.count();
    const tooBig = Buffer.alloc(13 * 1024 * 1024, "a");
    const response = await upload(tooBig).expect(413);
    assert.equal(response.body.error.code, "payload_too_large");
    assert.equal(await api.db.prisma.dataset.count(), before);
  });

  it("answers 415 for a JSON body and 400 for a multipart body without a file or with an unknown format", async () => {
    const json = await request(api.app.server).post("/v1/datasets").set("authorization", api.keys.a).send({ text: "a" }).expect(415);
    assert.equal(json.body.error.code, "unsupported_media_type");
    const noFile = await request(api.app.server).post("/v1/datasets").set("authorization", api.keys.a).field("name", "x").expect(400);
    assert.equal(noFile.body.error.code, "missing_file");
    const badFormat = await upload(jsonl([{ text: "a", label: "b" }]), { format: "images" }).expect(400);
    assert.equal(badFormat.body.error.details[0].path, "body.format");
  });

  it("answers 400 for a multipart body without a boundary or cut off before its end, and stores nothing", async () => {
    const before = await api.db.prisma.dataset.count();
    const post = (contentType: string, body: string) =>
      request(api.app.server).post("/v1/datasets").set("authorization", api.keys.a).set("content-type", contentType).send(body);
    const noBoundary = await post("multipart/form-data", "hello").expect(400);
    assert.equal(noBoundary.body.error.code, "invalid_body");
    const head = 'Content-Disposition: form-data; name="file"; filename="d.jsonl"\r\nContent-Type: application/octet-stream\r\n\r\n';
    const cutOff = await post("multipart/form-data; boundary=XX", `--XX\r\n${head}{"text":"a","label":"b"}\n`).expect(400);
    assert.equal(cutOff.body.error.code, "invalid_body");
    assert.match(cutOff.body.error.message, /malformed multipart body/);
    assert.equal(await api.db.prisma.dataset.count(), before);
  });

  it("lists newest first with a stable cursor and rejects bad cursors", async () => {
    const ids: string[] = [];
    for (let index = 0; index < 3; index += 1) ids.push((await upload(jsonl([{ text: `row ${index}`, label: "l" }]), {}, api.keys.b).expect(201)).body.id);
    const first = await request(api.app.server).get("/v1/datasets?limit=2").set("authorization", api.keys.b).expect(200);
    assert.deepEqual(first.body.data.map((dataset: { id: string }) => dataset.id), [ids[2], ids[1]]);
    assert.ok(first.body.nextCursor);
    const second = await request(api.app.server).get(`/v1/datasets?limit=2&cursor=${first.body.nextCursor}`).set("authorization", api.keys.b).expect(200);
    assert.deepEqual(second.body.data.map((dataset: { id: string }) => dataset.id), [ids[0]]);
    assert.equal(second.body.nextCursor, null);
    const bad = await request(api.app.server).get("/v1/datasets?cursor=garbage").set("authorization", api.keys.b).expect(400);
    assert.equal(bad.body.error.code, "invalid_cursor");
    await request(api.app.server).get("/v1/datasets?limit=101").set("authorization", api.keys.b).expect(400);
    await request(api.app.server).get("/v1/datasets?limit=abc").set("authorization", api.keys.b).expect(400);
  });

  it("gets one dataset, 404 for unknown ids and other tenants' datasets, 400 for malformed ids", async () => {
    const created = (await upload(jsonl([{ text: "mine", label: "a" }])).expect(201)).body;
    const got = await request(api.app.server).get(`/v1/datasets/${created.id}`).set("authorization", api.keys.a).expect(200);
    assert.deepEqual(got.body, created);
    const other = await request(api.app.server).get(`/v1/datasets/${created.id}`).set("authorization", api.keys.b).expect(404);
    assert.equal(other.body.error.code, "not_found");
    await request(api.app.server).delete(`/v1/datasets/${created.id}`).set("authorization", api.keys.b).expect(404);
    await request(api.app.server).get("/v1/datasets/00000000-0000-4000-8000-000000000000").set("authorization", api.keys.a).expect(404);
    const malformed = await request(api.app.server).get("/v1/datasets/not-a-uuid").set("authorization", api.keys.a).expect(400);
    assert.equal(malformed.body.error.details[0].path, "params.id");
  });

  it("deletes a dataset, keeping shared bytes until the last copy goes, and 409 while a job uses it", async () => {
    const body = jsonl([{ text: "shared content", label: "a" }]);
    const first = (await upload(body).expect(201)).body;
    const second = (await upload(body, {}, api.keys.b).expect(201)).body;
    const row = await api.db.prisma.dataset.findUniqueOrThrow({ where: { id: first.id } });
    await request(api.app.server).delete(`/v1/datasets/${first.id}`).set("authorization", api.keys.a).expect(204);
    await request(api.app.server).get(`/v1/datasets/${first.id}`).set("authorization", api.keys.a).expect(404);
    assert.equal(await api.store.exists(row.storageKey), true, "the other tenant's copy still needs the bytes");

    const job = await request(api.app.server)
      .post("/v1/jobs")
      .set("authorization", api.keys.b)
      .send({ baseModel: "tiny-distilbert", trainDatasetId: second.id })
      .expect(201);
    const conflict = await request(api.app.server).delete(`/v1/datasets/${second.id}`).set("authorization", api.keys.b).expect(409);
    assert.equal(conflict.body.error.code, "dataset_in_use");
    await api.db.prisma.job.update({ where: { id: job.body.id }, data: { status: "succeeded" } });
    await request(api.app.server).delete(`/v1/datasets/${second.id}`).set("authorization", api.keys.b).expect(204);
    assert.equal(await api.store.exists(row.storageKey), false);
    const finished = await request(api.app.server).get(`/v1/jobs/${job.body.id}`).set("authorization", api.keys.b).expect(200);
    assert.equal(finished.body.trainDatasetId, second.id, "finished jobs keep their history");
  });
});
}
