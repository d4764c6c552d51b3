// The upload validator on its own: chunk boundaries anywhere, CRLF, BOM, stats.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { JsonlUploadValidator } from "../../services/api/datasets/validation.ts";
import { checkRecord } from "../../services/trainer/data/records.ts";

function validateInChunks(text: string | Buffer, chunkSize: number, maxLineBytes = 1024) {
  const bytes = Buffer.isBuffer(text) ? text : Buffer.from(text);
  const validator = new JsonlUploadValidator(undefined, maxLineBytes, { maxLeakagePercent: 1, maxLabelConflicts: 0 });
  for (let start = 0; start < bytes.length; start += chunkSize) validator.write(bytes.subarray(start, start + chunkSize));
  return validator.finish();
}

describe("JSONL upload validator", () => {
  const file = '\uFEFF{"text": "héllo wörld", "label": "a"}\r\n{"text": "b", "label": 2}\r\n\r\n{"text": "cc", "label": "a"}';

  it("gives the same answer whatever the chunk boundaries, with CRLF, a BOM and multi-byte characters", () => {
    const expected = validateInChunks(file, 1 << 20);
    assert.ok(expected.ok);
    assert.equal(expected.rows, 3);
    assert.deepEqual(expected.stats.labelCounts, { "2": 1, a: 2 });
    assert.deepEqual([expected.stats.length.min, expected.stats.length.max], [1, 11]);
    for (const size of [1, 2, 3, 7, 16]) assert.deepEqual(validateInChunks(file, size), expected, `chunks of ${size}`);
  });

  it("accepts an optional group on classification records (string or integer, kept as text) and names a bad one's line", () => {
    const good = validateInChunks('{"text": "a", "label": "x", "group": "north"}\n{"text": "b", "label": "y", "group": 3}\n{"text": "c", "label": "y"}', 4);
    assert.ok(good.ok);
    assert.equal(good.rows, 3);
    assert.deepEqual(checkRecord({ text: "b", label: "y", group: 3 }, "classification"), { ok: true, record: { text: "b", label: "y", group: "3" } });
    assert.deepEqual(checkRecord({ text: "c", label: "y" }, "classification"), { ok: true, record: { text: "c", label: "y" } });
    const bad = validateInChunks('{"text": "a", "label": "x"}\n{"text": "b", "label": "y", "group": ""}\n{"text": "c", "label": "y", "group": ["n"]}', 8);
    assert.equal(bad.ok, false);
    if (!bad.ok) {
      const reason = '"group" must be a non-empty string or an integer when given';
      assert.deepEqual(bad.problems, [{ line: 2, reason }, { line: 3, reason }]);
    }
  });

  it("numbers lines counting blank ones, and bounds line length across chunks", () => {
    const outcome = validateInChunks(`{"text":"a","label":"b"}\n\n${JSON.stringify({ text: "x".repeat(2000), label: "b" })}\n{"text":1}`, 5);
    assert.equal(outcome.ok, false);
    if (!outcome.ok) {
      assert.deepEqual(outcome.problems, [
        { line: 3, reason: "the line is longer than 1024 bytes" },
        { line: 4, reason: '"text" must be a string' },
      ]);
    }
  });

  it("computes percentiles and a power-of-two histogram of example lengths", () => {
    const lines = Array.from({ length: 100 }, (_, index) => JSON.stringify({ prompt: "", completion: "y".repeat(index + 1) })).join("\n");
    const outcome = validateInChunks(lines, 64, 4096);
    assert.ok(outcome.ok);
    assert.equal(outcome.format, "completion");
    const { length } = outcome.stats;
    assert.deepEqual([length.min, length.max, length.p50, length.p90, length.p99, length.mean], [1, 100, 51, 91, 100, 50.5]);
    assert.deepEqual(length.histogram, [
      { upTo: 1, count: 1 },
      { upTo: 2, count: 1 },
      { upTo: 4, count: 2 },
      { upTo: 8, count: 4 },
      { upTo: 16, count: 8 },
      { upTo: 32, count: 16 },
      { upTo: 64, count: 32 },
      { upTo: 128, count: 36 },
    ]);
  });
});
