// An open event stream must not hold the API's shutdown: close() ends every stream of an
// unfinished job instead of waiting for the job to finish.
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";
import request from "supertest";
import { classificationRecords, jsonl, startTestApi } from "../helpers/api.ts";

describe("event streams at shutdown", () => {
  it("end when the API closes, while their job is still queued", async () => {
    const api = await startTestApi("events-shutdown", { EVENTS_POLL_INTERVAL_MS: "20" });
    let client: http.ClientRequest | undefined;
    try {
      const upload = await request(api.app.server).post("/v1/datasets").set("authorization", api.keys.a).attach("file", jsonl(classificationRecords(4)), "d.jsonl").expect(201);
      const job = (await request(api.app.server).post("/v1/jobs").set("authorization", api.keys.a).send({ baseModel: "tiny-distilbert", trainDatasetId: upload.body.id }).expect(201)).body;
      await api.app.listen({ port: 0, host: "127.0.0.1" });
      const { port } = api.app.server.address() as AddressInfo;
      let opened!: () => void;
      const streaming = new Promise<void>((resolve) => (opened = resolve));
      const ended = new Promise<string>((resolve, reject) => {
        // No keep-alive agent: an idle pooled socket would hold close() for its own reasons.
        const path = `/v1/jobs/${job.id}/events`;
        client = http.get({ agent: false, port, host: "127.0.0.1", path, headers: { accept: "text/event-stream", authorization: api.keys.a } }, (response) => {
          let text = "";
          response.setEncoding("utf8");
          response.on("data", (chunk: string) => ((text += chunk), opened()));
          response.on("end", () => resolve(text));
        });
        client.on("error", reject);
      });
      await streaming;
      const closed = await Promise.race([api.app.close().then(() => true), sleep(5000, false)]);
      assert.ok(closed, "close() waited more than 5 s for an open event stream");
      const text = await ended;
      assert.match(text, /^retry: \d+\n\n/);
      assert.doesNotMatch(text, /event: end/, "the job did not finish: the shutdown ended the stream");
    } finally {
      client?.destroy();
      await api.close();
    }
  });
});
