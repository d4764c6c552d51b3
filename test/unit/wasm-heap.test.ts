// The wasm heap guard (services/trainer/wasm-heap.ts): the 4 GiB it assumes is what the shipped wasm
// modules declare; a model whose weights cannot fit is refused before anything is read or allocated,
// with a message naming the need and the room; a late out-of-bounds trap is reworded the same way.
import assert from "node:assert/strict";
import { copyFile, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { initBackend, train } from "../../services/trainer/index.ts";
import { loadCausalPretrained } from "../../services/trainer/tasks/causal-lm/load.ts";
import { loadPretrained } from "../../services/trainer/tasks/classification/load.ts";
import { ensureWasmHeapRoom, wasmHeapLeft, wasmHeapRefusal, wasmHeapRoom, WasmHeapError, WASM32_MAX_BYTES, WASM_STATIC_BYTES, withWasmHeapErrors } from "../../services/trainer/wasm-heap.ts";
import { causalFixtures } from "../helpers/causal-fixtures.ts";
import { engineFixtures, fixtureModel } from "../helpers/engine-fixtures.ts";

const require = createRequire(import.meta.url);
let causal: string;

before(async () => {
  await initBackend("wasm");
  await engineFixtures();
  causal = await causalFixtures();
});

/** The maximum pages of a wasm module's own memory (section 5), read from the binary. */
function declaredMaxPages(bytes: Buffer): number {
  const leb = (at: number): [number, number] => {
    let value = 0;
    let shift = 0;
    let byte: number;
    do {
      byte = bytes[at++];
      value += (byte & 0x7f) * 2 ** shift;
      shift += 7;
    } while (byte & 0x80);
    return [value, at];
  };
  for (let at = 8; at < bytes.length; ) {
    const id = bytes[at++];
    const [size, body] = leb(at);
    if (id === 5) {
      const flags = bytes[body + 1];
      assert.equal(flags & 1, 1, "the memory declares a maximum");
      const [, afterInitial] = leb(body + 2);
      return leb(afterInitial)[0];
    }
    at = body + size;
  }
  throw new Error("no memory section");
}

test("every tfjs-backend-wasm module has 4 GiB (65536 pages of 64 KiB) as its maximum memory", async () => {
  const dist = path.dirname(require.resolve("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm"));
  for (const file of ["tfjs-backend-wasm.wasm", "tfjs-backend-wasm-simd.wasm"]) {
    const pages = declaredMaxPages(await readFile(path.join(dist, file)));
    assert.equal(pages * 65536, WASM32_MAX_BYTES, file);
  }
  // The threaded module imports a shared memory its JavaScript glue creates.
  const glue = await readFile(require.resolve("@tensorflow/tfjs-backend-wasm/wasm-out/tfjs-backend-wasm-threaded-simd.js"), "utf8");
  assert.equal(Number(/"maximum":(\d+)\/65536/.exec(glue)?.[1]), WASM32_MAX_BYTES);
});

test("room left: the 4 GiB less the module's static memory and the live tensors; refusals name both figures", () => {
  assert.equal(wasmHeapRoom(0), WASM32_MAX_BYTES - WASM_STATIC_BYTES);
  assert.equal(wasmHeapRoom(WASM32_MAX_BYTES), 0);
  assert.equal(wasmHeapLeft(), wasmHeapRoom(tf.memory().numBytes));
  assert.doesNotThrow(() => ensureWasmHeapRoom("a small model", 1024));
  const refused = wasmHeapRefusal("the weights of big", 6 * 1024 ** 3, 1024 ** 3);
  assert.ok(refused instanceof WasmHeapError);
  assert.match(refused.message, /^the weights of big needs 6\.00 GiB of wasm memory but the wasm heap has 1\.00 GiB left \(wasm32 memory is limited to 4\.00 GiB\)/);
  assert.equal(wasmHeapRefusal("fits", 1024 ** 3, 1024 ** 3), undefined);
  assert.equal(wasmHeapRefusal("anything", 2 ** 50, undefined), undefined, "no limit off the wasm backend");
  assert.throws(() => ensureWasmHeapRoom("more than wasm32 holds", WASM32_MAX_BYTES), WasmHeapError);
});

test("a wasm trap while allocating becomes a WasmHeapError naming the need; other errors pass unchanged", async () => {
  await assert.rejects(
    withWasmHeapErrors("training this model", 5 * 1024 ** 3, () => {
      // What a wasm trap throws: WebAssembly.RuntimeError (not in this project's TypeScript lib).
      throw Object.assign(new Error("memory access out of bounds"), { name: "RuntimeError" });
    }),
    (error: Error) => error instanceof WasmHeapError && /training this model needs 5\.00 GiB of wasm memory but the wasm heap has .* left/.test(error.message) && !/out of bounds/.test(error.message),
  );
  await assert.rejects(withWasmHeapErrors("x", 1, () => Promise.reject(new RangeError("something else"))), /something else/);
});

/** A folder whose config.json describes a model far past 4 GiB and whose weights file is not even safetensors. */
async function hugeFolder(from: string, config: Record<string, unknown>, files: string[]): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "huge-model-"));
  await writeFile(path.join(dir, "config.json"), JSON.stringify(config));
  for (const file of files) await copyFile(path.join(from, file), path.join(dir, file));
  await writeFile(path.join(dir, "model.safetensors"), "never read: the plan refuses first");
  return dir;
}

test("a decoder and an encoder whose weights exceed the wasm heap are refused before anything is read or allocated, in load and in train()", async () => {
  const llama = await hugeFolder(path.join(causal, "llama-tiny"), {
    model_type: "llama", architectures: ["LlamaForCausalLM"], hidden_size: 8192, intermediate_size: 28672, num_hidden_layers: 80,
    num_attention_heads: 64, num_key_value_heads: 8, vocab_size: 32000, bos_token_id: 1, eos_token_id: 2,
  }, ["tokenizer.json", "tokenizer_config.json"]);
  const bert = await hugeFolder(fixtureModel("bert-base"), {
    model_type: "bert", architectures: ["BertModel"], hidden_size: 8192, num_hidden_layers: 48, num_attention_heads: 64,
    intermediate_size: 32768, max_position_embeddings: 512, vocab_size: 30522,
  }, ["tokenizer.json"]);
  const tensorsBefore = tf.memory().numTensors;
  const refused = (error: Error) => error instanceof WasmHeapError && /^the weights of huge-model-\w+ needs \d+\.\d GiB of wasm memory but the wasm heap has \d\.\d+ GiB left/.test(error.message);
  await assert.rejects(loadCausalPretrained(llama), refused);
  await assert.rejects(loadPretrained(bert), refused);
  await assert.rejects(
    train({ modelDir: llama, trainFile: path.join(causal, "completion-train.jsonl"), outDir: path.join(llama, "out"), lora: {}, hyper: { maxSteps: 1 } }),
    refused,
  );
  assert.equal(tf.memory().numTensors, tensorsBefore);
});
