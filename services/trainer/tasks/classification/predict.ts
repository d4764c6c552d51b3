// Prediction: a base model loaded once; adapters are read on first use and swapped per call.
import * as tf from "@tensorflow/tfjs";
import { initBackend, type BackendChoice } from "../../backend.ts";
import { computeLogits, softmax } from "./inference.ts";
import { adapterForwardOptions, headKey, loraKey } from "../../lora.ts";
import type { ForwardOptions } from "../../layers/lora-forward.ts";
import { loadPretrained, type PretrainedModel } from "./load.ts";
import { maxInputLength } from "./config.ts";
import { AdapterError, assertAdapterFits, loadAdapter } from "../../peft.ts";
import { loadOnce } from "../../load-once.ts";

export interface Prediction {
  label: string;
  score: number;
  scores: Record<string, number>;
  logits: number[];
}

interface LoadedAdapter {
  options: ForwardOptions;
  tensors: tf.Tensor[];
  labels: string[];
}

const PREDICT_BATCH = 16;

export class ClassifierService {
  private readonly adapters = new Map<string, Promise<LoadedAdapter>>();
  private readonly baseOptions: ForwardOptions;
  private readonly baseHeadTensors: tf.Tensor[];

  private constructor(private readonly pretrained: PretrainedModel) {
    const overrides = new Map<string, tf.Tensor>();
    for (const [name, { shape, data }] of pretrained.checkpointHead) overrides.set(name, tf.tensor(data, shape, "float32"));
    this.baseHeadTensors = [...overrides.values()];
    this.baseOptions = { overrides };
  }

  /** Loads the base model on the entry point's backend choice (TRAINER_BACKEND). */
  static async load(modelDir: string, backend: BackendChoice): Promise<ClassifierService> {
    await initBackend(backend);
    return new ClassifierService(await loadPretrained(modelDir));
  }

  /** Concurrent first uses of one adapter share its load: the tensors are made once. */
  private adapter(dir: string): Promise<LoadedAdapter> {
    return loadOnce(this.adapters, dir, () => this.loadAdapterTensors(dir));
  }

  private async loadAdapterTensors(dir: string): Promise<LoadedAdapter> {
    const adapter = await loadAdapter(dir);
    assertAdapterFits(adapter, (module) => {
      const shape = this.pretrained.model.linearShape(module);
      return shape && { outFeatures: shape[0], inFeatures: shape[1] };
    });
    const tensors = new Map<string, tf.Tensor>();
    for (const [module, { a, b }] of adapter.lora) {
      tensors.set(loraKey(module, "A"), tf.tensor(a.data, a.shape, "float32"));
      tensors.set(loraKey(module, "B"), tf.tensor(b.data, b.shape, "float32"));
    }
    for (const [name, { shape, data }] of adapter.head) tensors.set(headKey(name), tf.tensor(data, shape, "float32"));
    const labels = adapter.labels.length ? adapter.labels : this.pretrained.config.labels ?? [];
    return { options: adapterForwardOptions(tensors, adapter.settings), tensors: [...tensors.values()], labels };
  }

  async predict(texts: string[], adapterDir?: string): Promise<Prediction[]> {
    const { options, labels } = adapterDir
      ? await this.adapter(adapterDir)
      : { options: this.baseOptions, labels: this.pretrained.config.labels ?? [] };
    if (!adapterDir && this.pretrained.checkpointHead.size === 0) {
      throw new AdapterError("this base model has no classification head; predict with an adapter");
    }
    const { model, tokenizer, config } = this.pretrained;
    const maxLength = maxInputLength(config);
    const inputs = texts.map((text) => tokenizer.encode(text, maxLength));
    return computeLogits(model, tokenizer, inputs, options, PREDICT_BATCH).map((logits) => {
      const probabilities = softmax(logits);
      const best = probabilities.indexOf(Math.max(...probabilities));
      const names = logits.map((_, id) => labels[id] ?? `LABEL_${id}`);
      return { label: names[best], score: probabilities[best], scores: Object.fromEntries(names.map((name, id) => [name, probabilities[id]])), logits };
    });
  }

  dispose(): void {
    for (const loading of this.adapters.values()) void loading.then((adapter) => adapter.tensors.forEach((tensor) => tensor.dispose()), () => {});
    this.adapters.clear();
    for (const tensor of this.baseHeadTensors) tensor.dispose();
    this.pretrained.model.dispose();
  }
}
