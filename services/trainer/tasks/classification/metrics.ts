// Classification metrics: loss, accuracy, macro-F1, per-class precision and recall.
export function classificationMetrics(predicted: number[], actual: number[], labels: string[], loss: number): Record<string, number> {
  const metrics: Record<string, number> = { loss, accuracy: 0, macro_f1: 0 };
  const n = actual.length;
  let correct = 0;
  for (let i = 0; i < n; i++) if (predicted[i] === actual[i]) correct++;
  metrics.accuracy = n ? correct / n : 0;
  let f1Sum = 0;
  labels.forEach((label, c) => {
    let truePositive = 0;
    let predictedPositive = 0;
    let actualPositive = 0;
    for (let i = 0; i < n; i++) {
      if (predicted[i] === c) predictedPositive++;
      if (actual[i] === c) actualPositive++;
      if (predicted[i] === c && actual[i] === c) truePositive++;
    }
    // As scikit-learn with zero_division=0: an undefined ratio counts as 0.
    const precision = predictedPositive ? truePositive / predictedPositive : 0;
    const recall = actualPositive ? truePositive / actualPositive : 0;
    f1Sum += precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
    metrics[`precision/${label}`] = precision;
    metrics[`recall/${label}`] = recall;
  });
  metrics.macro_f1 = labels.length ? f1Sum / labels.length : 0;
  return metrics;
}
