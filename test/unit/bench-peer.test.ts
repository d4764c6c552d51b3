// The PyTorch side of `npm run bench:train -- --peer` runs and ends with the line bench/train.ts reads.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import path from "node:path";
import { describe, it } from "node:test";
import { liveReferenceSkip, PYTHON } from "../reference/python.ts";

const script = path.join(import.meta.dirname, "..", "..", "bench", "peer_torch_lora.py");

function runPeer(...extra: string[]): { summary: string; fields: Record<string, number> } {
  const out = execFileSync(PYTHON, [script, "--layers", "1", "--steps", "3", "--batch", "2", "--seq", "8", ...extra], { encoding: "utf8" });
  const [summary, last] = out.trim().split("\n").slice(-2);
  return { summary, fields: Object.fromEntries(last.split(" ").map((pair) => [pair.split("=")[0], Number(pair.split("=")[1])])) };
}

describe("PyTorch bench peer", { skip: liveReferenceSkip }, () => {
  it("trains LoRA on q_lin and v_lin plus the head, and reports throughput, step time and peak RSS", () => {
    const { summary, fields } = runPeer();
    // One layer: rank 16 × (768 + 768) on two projections, then pre_classifier 768×768+768 and classifier 2×768+2.
    assert.match(summary, /LoRA \(641282 trained parameters\)/);
    assert.deepEqual(Object.keys(fields), ["tokens_per_s", "step_median_s", "peak_rss_mib", "threads"]);
    for (const value of Object.values(fields)) assert.ok(value > 0, JSON.stringify(fields));
    assert.ok(Math.abs(fields.tokens_per_s * fields.step_median_s - 16) < 0.5, "tokens per step = batch × seq (up to rounding)");
  });

  it("trains every weight with --full", () => {
    assert.match(runPeer("--full").summary, /full \(\d{8,} trained parameters\)/);
  });
});
