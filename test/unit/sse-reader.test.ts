// The event-stream reader the demo and the HTTP tests follow jobs with: messages split anywhere
// across chunks, multi-byte characters cut in two, comments and retry lines skipped.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { serverSentEvents, type ServerSentEvent } from "../helpers/sse.ts";

async function readInChunks(text: string, chunkSize: number): Promise<ServerSentEvent[]> {
  const bytes = Buffer.from(text);
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (let start = 0; start < bytes.length; start += chunkSize) controller.enqueue(bytes.subarray(start, start + chunkSize));
      controller.close();
    },
  });
  const events: ServerSentEvent[] = [];
  for await (const event of serverSentEvents(body)) events.push(event);
  return events;
}

describe("server-sent events reader", () => {
  const stream = 'retry: 1000\n\n: heartbeat\n\nid: 1\ndata: {"message":"héllo → wörld"}\n\nevent: end\ndata: {"status":"succeeded"}\n\n';
  const expected = [
    { event: undefined, data: '{"message":"héllo → wörld"}' },
    { event: "end", data: '{"status":"succeeded"}' },
  ];

  it("yields data messages with their event name whatever the chunk boundaries", async () => {
    for (const chunkSize of [1, 2, 3, 7, 1 << 16]) assert.deepEqual(await readInChunks(stream, chunkSize), expected, `chunks of ${chunkSize} bytes`);
  });

  it("drops an unfinished last message", async () => {
    assert.deepEqual(await readInChunks('data: {"a":1}\n\ndata: {"b"', 4), [{ event: undefined, data: '{"a":1}' }]);
  });
});
