// Gradient (activation) checkpointing: a decoder layer runs forward without its intermediates being
// kept, and its backward runs the layer again under a tape of its own. A step then holds each layer's
// input instead of every intermediate of every layer (for a 1B-class Llama at batch 4 × 256, about
// 0.2 GiB instead of more than the wasm heap's 4 GiB), for roughly one more forward pass of compute.
import * as tf from "@tensorflow/tfjs";

/**
 * `run(input)` whose intermediates are freed at once; the gradient recomputes them. `run` must give the
 * same result when called again (replay any randomness), and `trainables` must list every trained
 * tensor it reads: they get their gradients from the recomputation. `inputGrad` false when nothing
 * trained lies upstream of `input` (the first layer over frozen embeddings): its gradient is then zero
 * and not computed.
 */
export function checkpointed<T extends tf.Tensor>(input: T, trainables: tf.Tensor[], inputGrad: boolean, run: (input: T, replay: boolean) => T): T {
  return tf.customGrad((...args: unknown[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    save([input]);
    // tfjs records nothing on the tape inside a customGrad forward, and tidies its temporaries.
    const value = run(input, false);
    return {
      value,
      gradFunc: (dy: tf.Tensor, [saved]: tf.Tensor[]) => {
        const engine = tf.engine();
        // A gradient computed inside a backward replaces the engine's tape and clears it when done;
        // the outer backward still needs its tape for its own clean-up.
        const outerTape = engine.state.activeTape;
        try {
          const xs = inputGrad ? [saved, ...trainables] : trainables;
          const { value: again, grads } = engine.gradients(() => run(saved as T, true), xs, dy as T, true);
          again.dispose();
          const filled = xs.map((x, i) => grads[i] ?? tf.zerosLike(x));
          return inputGrad ? filled : [tf.zerosLike(saved), ...filled];
        } finally {
          engine.state.activeTape = outerTape;
        }
      },
    };
  })(input, ...trainables) as T;
}
