// Text generation from a causal LM: greedy or sampled (temperature, top-k, top-p, seeded), stopped by
// EOS, stop sequences or a token budget, with or without the KV cache (same tokens either way); and
// GeneratorService: one base model in memory, adapters swapped per call without reloading it.
import * as tf from "@tensorflow/tfjs";
import { initBackend, type BackendChoice } from "../../backend.ts";
import type { ChatFormatter, ChatMessage } from "./chat-template.ts";
import { adapterForwardOptions, loraKey } from "../../lora.ts";
import { disposeCache, emptyCache, type CausalLM, type KVCache } from "./model.ts";
import type { ForwardOptions } from "../../layers/lora-forward.ts";
import { chatFormatterOf, loadCausalPretrained, type CausalPretrained } from "./load.ts";
import { AdapterError, assertAdapterFits, loadAdapter } from "../../peft.ts";
import { loadOnce } from "../../load-once.ts";
import { Rng } from "../../rng.ts";

export interface GenerationOptions {
  /** Tokens to generate at most [64]. */
  maxNewTokens?: number;
  /** 0 (the default) is greedy decoding; above 0, sampling at this temperature. */
  temperature?: number;
  /** Sampling: keep only the k most likely tokens. */
  topK?: number;
  /** Sampling: keep the smallest set of most likely tokens whose probability reaches p. */
  topP?: number;
  /** Generation ends when the text contains one of these; the text is cut before it. */
  stop?: string[];
  /** Seed of the sampler [0]; the same seed and inputs give the same text. */
  seed?: number;
  /** Reuse keys and values of earlier positions [true]. Off, every step recomputes the whole sequence. */
  useCache?: boolean;
}

export interface GenerationResult {
  text: string;
  tokenIds: number[];
  promptTokens: number;
  finishReason: "eos" | "stop" | "length";
}

export class GenerationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GenerationError";
  }
}

export const MAX_NEW_TOKENS_LIMIT = 2048;

function checkOptions(options: GenerationOptions): Required<Omit<GenerationOptions, "topK" | "topP">> & Pick<GenerationOptions, "topK" | "topP"> {
  const maxNewTokens = options.maxNewTokens ?? 64;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1 || maxNewTokens > MAX_NEW_TOKENS_LIMIT) throw new GenerationError(`maxNewTokens must be an integer in 1..${MAX_NEW_TOKENS_LIMIT}`);
  const temperature = options.temperature ?? 0;
  if (!(temperature >= 0) || !Number.isFinite(temperature)) throw new GenerationError("temperature must be a non-negative number");
  if (options.topK !== undefined && (!Number.isInteger(options.topK) || options.topK < 1)) throw new GenerationError("topK must be a positive integer");
  if (options.topP !== undefined && !(options.topP > 0 && options.topP <= 1)) throw new GenerationError("topP must be in (0, 1]");
  const stop = options.stop ?? [];
  if (stop.some((s) => typeof s !== "string" || s === "")) throw new GenerationError("stop sequences must be non-empty strings");
  return { maxNewTokens, temperature, topK: options.topK, topP: options.topP, stop, seed: options.seed ?? 0, useCache: options.useCache ?? true };
}

function argMax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** Temperature, then top-k, then top-p (as transformers orders its logits warpers), then one seeded draw. */
export function sampleToken(logits: Float32Array, temperature: number, rng: Rng, topK?: number, topP?: number): number {
  let candidates = Array.from(logits, (logit, id) => ({ id, logit: logit / temperature })).sort((a, b) => b.logit - a.logit || a.id - b.id);
  if (topK !== undefined && topK < candidates.length) candidates = candidates.slice(0, topK);
  const max = candidates[0].logit;
  let weights = candidates.map((candidate) => Math.exp(candidate.logit - max));
  let total = weights.reduce((a, b) => a + b, 0);
  if (topP !== undefined && topP < 1) {
    let cumulative = 0;
    let keep = 0;
    while (keep < weights.length && cumulative < topP * total) cumulative += weights[keep++];
    candidates = candidates.slice(0, Math.max(1, keep));
    weights = weights.slice(0, candidates.length);
    total = weights.reduce((a, b) => a + b, 0);
  }
  let draw = rng.next() * total;
  for (let i = 0; i < candidates.length; i++) {
    draw -= weights[i];
    if (draw < 0) return candidates[i].id;
  }
  return candidates[candidates.length - 1].id;
}

function nextLogits(model: CausalLM, ids: number[], options: ForwardOptions, cache: KVCache | undefined): Float32Array {
  // The tidy returns the tensor, not its values: tidy walks whatever it returns key by key, which
  // for a vocabulary-sized array cost more than the whole forward pass.
  const logits = tf.tidy(() => {
    const fresh = cache ? ids.slice(cache.length) : ids;
    const hidden = model.hidden({ ids: Int32Array.from(fresh), batchSize: 1, length: fresh.length }, options, cache);
    const last = hidden.slice([fresh.length - 1, 0], [1, hidden.shape[1]]);
    return model.logits(last);
  });
  try {
    return logits.dataSync() as Float32Array;
  } finally {
    logits.dispose();
  }
}

export interface Detokenizer {
  decode(ids: number[]): string;
}

/** The generation loop over token ids; text is decoded from the new ids only. */
export function generateTokens(
  model: CausalLM,
  promptIds: number[],
  forward: ForwardOptions,
  eosIds: number[],
  detokenizer: Detokenizer,
  requested: GenerationOptions,
): GenerationResult {
  const options = checkOptions(requested);
  if (promptIds.length === 0) throw new GenerationError("the prompt encodes to no tokens");
  const limit = model.config.family === "gpt2" ? model.config.maxPositions : Infinity;
  if (promptIds.length >= limit) throw new GenerationError(`the prompt has ${promptIds.length} tokens; this model reads at most ${limit}`);
  const rng = Rng.derive(options.seed, 0x9e7);
  const cache = options.useCache ? emptyCache() : undefined;
  const ids = [...promptIds];
  const generated: number[] = [];
  let finishReason: GenerationResult["finishReason"] = "length";
  let text = "";
  try {
    while (generated.length < options.maxNewTokens && ids.length < limit) {
      const logits = nextLogits(model, ids, forward, cache);
      const token = options.temperature === 0 ? argMax(logits) : sampleToken(logits, options.temperature, rng, options.topK, options.topP);
      if (eosIds.includes(token)) {
        finishReason = "eos";
        break;
      }
      ids.push(token);
      generated.push(token);
      // Only stop sequences need the text along the way; otherwise it is decoded once, at the end.
      if (options.stop.length === 0) continue;
      text = detokenizer.decode(generated);
      const stopAt = Math.min(...options.stop.map((s) => text.indexOf(s)).filter((i) => i >= 0));
      if (Number.isFinite(stopAt)) {
        text = text.slice(0, stopAt);
        finishReason = "stop";
        break;
      }
    }
  } finally {
    if (cache) disposeCache(cache);
  }
  if (finishReason !== "stop") text = detokenizer.decode(generated);
  return { text, tokenIds: generated, promptTokens: promptIds.length, finishReason };
}

export interface GenerationRequest {
  /** Plain text continued as is (after the tokenizer's BOS, as in training on completions). */
  prompt?: string;
  /** A conversation, formatted with the chat template and the assistant generation prompt. */
  messages?: ChatMessage[];
}

interface LoadedAdapter {
  options: ForwardOptions;
  tensors: tf.Tensor[];
}

export class GeneratorService {
  private readonly adapters = new Map<string, Promise<LoadedAdapter>>();
  private readonly formatter: ChatFormatter;

  private constructor(private readonly pretrained: CausalPretrained) {
    this.formatter = chatFormatterOf(pretrained);
  }

  /** Loads the base model on the entry point's backend choice (TRAINER_BACKEND). */
  static async load(modelDir: string, backend: BackendChoice): Promise<GeneratorService> {
    await initBackend(backend);
    return new GeneratorService(await loadCausalPretrained(modelDir));
  }

  /** Concurrent first uses of one adapter share its load: the tensors are made once. */
  private adapter(dir: string): Promise<LoadedAdapter> {
    return loadOnce(this.adapters, dir, () => this.loadAdapterTensors(dir));
  }

  private async loadAdapterTensors(dir: string): Promise<LoadedAdapter> {
    const adapter = await loadAdapter(dir);
    if (adapter.taskType !== "CAUSAL_LM") throw new AdapterError(`adapter task_type is ${adapter.taskType}, not CAUSAL_LM`);
    const linears = new Map(this.pretrained.model.linearModules().map((linear) => [linear.name, linear]));
    assertAdapterFits(adapter, (module) => linears.get(module));
    const tensors = new Map<string, tf.Tensor>();
    for (const [module, { a, b }] of adapter.lora) {
      tensors.set(loraKey(module, "A"), tf.tensor(a.data, a.shape, "float32"));
      tensors.set(loraKey(module, "B"), tf.tensor(b.data, b.shape, "float32"));
    }
    return { options: adapterForwardOptions(tensors, adapter.settings), tensors: [...tensors.values()] };
  }

  promptIds(request: GenerationRequest): number[] {
    const { tokenizer } = this.pretrained;
    if ((request.prompt === undefined) === (request.messages === undefined)) throw new GenerationError("give either a prompt or messages");
    if (request.messages) return tokenizer.idsOf(this.formatter.render(request.messages, true));
    return [...tokenizer.prefixIds(), ...tokenizer.idsOf(request.prompt!)];
  }

  async generate(request: GenerationRequest, options: GenerationOptions = {}, adapterDir?: string): Promise<GenerationResult> {
    const forward = adapterDir ? (await this.adapter(adapterDir)).options : {};
    const { model, tokenizer, eosIds } = this.pretrained;
    return generateTokens(model, this.promptIds(request), forward, eosIds, { decode: (ids) => tokenizer.decode(ids) }, options);
  }

  dispose(): void {
    for (const loading of this.adapters.values()) void loading.then((adapter) => adapter.tensors.forEach((tensor) => tensor.dispose()), () => {});
    this.adapters.clear();
    this.pretrained.model.dispose();
  }
}
