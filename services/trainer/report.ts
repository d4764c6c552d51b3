// The final evaluation report an adapter carries (metrics.json's `report`, the job's `metrics.report`):
// the task's detail for the adapter and for the untouched base model side by side, and for causal LMs a
// few held-out prompts with the reference, the base model's reply and the adapter's.
import type { CausalDetail } from "./tasks/causal-lm/evaluation.ts";
import type { ClassificationDetail } from "./tasks/classification/metrics.ts";

export type { CausalDetail, ClassificationDetail };
export type EvaluationDetail = ClassificationDetail | CausalDetail;

/** An evaluation's flat numbers (Evaluation rows, job.metrics) and its structured detail. */
export interface DetailedEvaluation {
  metrics: Record<string, number>;
  detail: EvaluationDetail;
}

export interface GenerationComparison {
  prompt: string;
  reference: string;
  base: string;
  adapter: string;
}

export interface FinalReport {
  adapter: EvaluationDetail;
  base: EvaluationDetail;
  samples?: GenerationComparison[];
}

export function isCausalDetail(detail: EvaluationDetail): detail is CausalDetail {
  return "perplexity" in detail;
}

export function finalReport(adapter: EvaluationDetail, base: EvaluationDetail): FinalReport {
  if (!isCausalDetail(adapter) || !isCausalDetail(base) || !adapter.generation || !base.generation) return { adapter, base };
  const baseOutputs = base.generation.samples;
  // Both generated the same prompts in the same order.
  const samples = adapter.generation.samples.map(({ prompt, reference, output }, i) => ({ prompt, reference, base: baseOutputs[i].output, adapter: output }));
  return { adapter, base, samples };
}
