// The sweep's pick rule on forged child metrics, at the tolerance's edges (exactly 1 % behind the
// best is within, just over is not), in both directions, and the chart's pick mark and escaping.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { escapeXml, renderSweepChart } from "../../services/api/sweeps/chart.ts";
import { pickSmallestWithinTolerance, type SweepCandidate } from "../../services/trainer/index.ts";

const modules = ["q_lin", "v_lin"];
/** Ranks 2…32 with sizes proportional to the rank, as LoRA's are. */
const candidates = (values: (number | undefined)[]): SweepCandidate[] =>
  values.map((value, index) => ({ jobId: `job-r${2 ** (index + 1)}`, rank: 2 ** (index + 1), targetModules: modules, size: 1000 * 2 ** (index + 1), value }));

describe("sweep pick rule", () => {
  it("higher is better: exactly 1 % behind the best is within the tolerance", () => {
    // best 0.9 at rank 32; rank 4 at 0.891 is exactly 1 % behind, rank 2 at 0.8909 just over.
    const pick = pickSmallestWithinTolerance(candidates([0.8909, 0.891, 0.895, 0.899, 0.9]), "macro_f1", true, 0.01)!;
    assert.equal(pick.jobId, "job-r4");
    assert.equal(pick.bestJobId, "job-r32");
    assert.equal(pick.best, 0.9);
    assert.match(pick.reason, /rank 4 on q_lin,v_lin is the smallest adapter whose macro_f1, 0\.891, is within 1 % of the best, 0\.9 \(rank 32/);
  });

  it("higher is better: just over 1 % behind is not within", () => {
    const pick = pickSmallestWithinTolerance(candidates([0.5, 0.89099, 0.8911, 0.899, 0.9]), "accuracy", true, 0.01)!;
    assert.equal(pick.jobId, "job-r8");
  });

  it("lower is better: exactly 1 % above the best loss is within, just over is not", () => {
    // best loss 2.0 at rank 16; 2.02 is exactly 1 % worse, 2.0201 just over.
    assert.equal(pickSmallestWithinTolerance(candidates([2.0201, 2.02, 2.1, 2.0, 2.005]), "loss", false, 0.01)!.jobId, "job-r4");
    assert.equal(pickSmallestWithinTolerance(candidates([2.0201, 2.0202, 2.1, 2.0, 2.005]), "loss", false, 0.01)!.jobId, "job-r16");
  });

  it("picks the best itself when nothing smaller is within the tolerance, and says so", () => {
    const pick = pickSmallestWithinTolerance(candidates([0.5, 0.6, 0.7, 0.95, 0.8]), "macro_f1", true, 0.01)!;
    assert.equal(pick.jobId, "job-r16");
    assert.equal(pick.bestJobId, "job-r16");
    assert.match(pick.reason, /has the best macro_f1, 0\.95 \(higher is better\), and no smaller adapter is within 1 %/);
  });

  it("a tolerance of 0 takes the smallest of the tied best", () => {
    assert.equal(pickSmallestWithinTolerance(candidates([0.5, 0.9, 0.9, 0.9, 0.8]), "macro_f1", true, 0)!.jobId, "job-r4");
  });

  it("leaves out configurations without the metric and says how many", () => {
    const pick = pickSmallestWithinTolerance(candidates([undefined, undefined, 0.7, 0.7, 0.8]), "macro_f1", true, 0.2)!;
    assert.equal(pick.jobId, "job-r8");
    assert.match(pick.reason, /2 configurations without a macro_f1 \(failed or cancelled\) were left out/);
    assert.equal(pickSmallestWithinTolerance(candidates([undefined, undefined]), "macro_f1", true, 0.01), undefined);
  });
});

describe("sweep chart", () => {
  const points = [
    { jobId: "job-a", label: "r=2 q_lin", size: 2000, value: 0.8 },
    { jobId: "job-b", label: "r=4 <script>&", size: 4000, value: 0.9 },
  ];

  it("rings the pick and only the pick", () => {
    const svg = renderSweepChart(points, "macro_f1", "job-b", "sweep");
    assert.equal(svg.match(/class="pick"/g)?.length, 1);
    assert.match(svg, /<circle class="pick" data-job-id="job-b"/);
    assert.equal(svg.match(/class="point"/g)?.length, 2);
  });

  it("escapes every text", () => {
    const svg = renderSweepChart(points, "a<b", "job-b", `t"'&`);
    assert.doesNotMatch(svg, /<script>/);
    assert.match(svg, /pick: r=4 &lt;script&gt;&amp;/);
    assert.match(svg, /<title>t&quot;&apos;&amp;<\/title>/);
    assert.equal(escapeXml(`<>&'"`), "&lt;&gt;&amp;&apos;&quot;");
  });

  it("says so when nothing has reported the metric", () => {
    assert.match(renderSweepChart([], "loss", undefined, "sweep"), /no configuration has reported loss yet/);
  });
});
