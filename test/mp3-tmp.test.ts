import { test } from "node:test";
import { EventEmitter } from "node:events";
import request from "supertest";
import { startTestApi } from "./helpers/api.ts";
const origEmit = EventEmitter.prototype.emit;
EventEmitter.prototype.emit = function (ev: string | symbol, ...args: unknown[]) {
  if (ev === "error" && this.listenerCount("error") === 0) console.log("UNHANDLED on", this.constructor.name, (args[0] as Error).message, new Error().stack?.split("\n").slice(2, 6).join(" | "));
  return origEmit.call(this, ev, ...args);
};
test("repro", async () => {
  const api = await startTestApi("mprepro3");
  const head = 'Content-Disposition: form-data; name="file"; filename="d.jsonl"\r\nContent-Type: application/octet-stream\r\n\r\n';
  const r2 = await request(api.app.server).post("/v1/datasets").set("authorization", api.keys.a).set("content-type", "multipart/form-data; boundary=XX").send(`--XX\r\n${head}{"text":"a","label":"b"}\n`);
  console.log("truncated", r2.status, r2.text);
  await api.close();
});
