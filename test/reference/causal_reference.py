#!/usr/bin/python3
"""Independent PyTorch reference for GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM and
MistralForCausalLM forward passes.

Written from a reading of Hugging Face transformers' modeling_gpt2.py, modeling_llama.py,
modeling_qwen2.py, modeling_mistral.py, configuration_qwen2.py, masking_utils.py and
modeling_rope_utils.py (no transformers import, no hub): the same operations in the same order
and precision (float32). Qwen2 is Llama with q/k/v biases; Mistral (and Qwen2 with
use_sliding_window) masks keys outside the sliding window: a query at i sees keys j with
i - window < j <= i (masking_utils.sliding_window_overlay). LoRA adapters are applied as PEFT merges them (lora/layer.py):
W + scale * B @ A for nn.Linear, its transpose for GPT-2's Conv1D (fan_in_fan_out), scale
alpha / r or alpha / sqrt(r) with use_rslora. It reads our fixture folders (config.json +
model.safetensors, and a PEFT adapter folder per model) and prints logits of the base model and of
the model with its adapter, which test/unit/causal-model.test.ts compares the engine against, and the
gradients of a next-token loss with respect to the adapter's LoRA A and B matrices.

Usage: causal_reference.py FIXTURE_DIR ADAPTERS_DIR [PROBE_OFFSET]
(test/reference/write-causal-goldens.ts runs it to write test/fixtures/golden/causal-logits.json)
"""
import hashlib
import base64
import json
import math
import os
import sys

import torch

from safetensors_io import read_safetensors

torch.set_grad_enabled(False)


def layer_norm(x, weight, bias, eps):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def gelu_new(x):
    # NewGELUActivation: the tanh approximation used by GPT-2.
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


ACTIVATIONS = {"gelu_new": gelu_new, "silu": torch.nn.functional.silu, "gelu": torch.nn.functional.gelu}


def causal_softmax(scores, window=None):
    length = scores.shape[-1]
    q = torch.arange(length)[:, None]
    kv = torch.arange(length)[None, :]
    keep = kv <= q
    if window is not None:
        keep = keep & (kv > q - window)
    scores = torch.where(keep, scores, torch.tensor(torch.finfo(scores.dtype).min))
    return torch.softmax(scores, dim=-1)


def layer_windows(config):
    """Per layer, the sliding window or None, as configuration_qwen2.py / configuration_mistral.py decide."""
    layers = config["num_hidden_layers"]
    kind = config["model_type"]
    if kind == "mistral":
        window = config.get("sliding_window", 4096)
        first = 0
    elif kind == "qwen2":
        window = config.get("sliding_window", 4096) if config.get("use_sliding_window", False) else None
        first = config.get("max_window_layers", 28)
    else:
        return [None] * layers
    if window is None:
        return [None] * layers
    types = config.get("layer_types") or ["sliding_attention" if i >= first else "full_attention" for i in range(layers)]
    return [window if t == "sliding_attention" else None for t in types]


def gpt2_logits(config, w, ids):
    prefix = "transformer." if "transformer.wte.weight" in w else ""
    p = lambda name: w[prefix + name]
    hidden = config["n_embd"]
    heads = config["n_head"]
    head_dim = hidden // heads
    eps = config.get("layer_norm_epsilon", 1e-5)
    act = ACTIVATIONS[config.get("activation_function", "gelu_new")]
    conv1d = lambda x, name: torch.addmm(p(name + ".bias"), x.view(-1, x.shape[-1]), p(name + ".weight")).view(*x.shape[:-1], -1)
    batch, length = ids.shape
    h = p("wte.weight")[ids] + p("wpe.weight")[torch.arange(length)][None]
    for i in range(config["n_layer"]):
        l = f"h.{i}"
        a = layer_norm(h, p(l + ".ln_1.weight"), p(l + ".ln_1.bias"), eps)
        q, k, v = conv1d(a, l + ".attn.c_attn").split(hidden, dim=2)
        split = lambda t: t.view(batch, length, heads, head_dim).permute(0, 2, 1, 3)
        q, k, v = split(q), split(k), split(v)
        scores = torch.matmul(q, k.transpose(-1, -2)) / torch.full([], v.size(-1) ** 0.5)
        context = torch.matmul(causal_softmax(scores), v).permute(0, 2, 1, 3).reshape(batch, length, hidden)
        h = h + conv1d(context, l + ".attn.c_proj")
        m = layer_norm(h, p(l + ".ln_2.weight"), p(l + ".ln_2.bias"), eps)
        h = h + conv1d(act(conv1d(m, l + ".mlp.c_fc")), l + ".mlp.c_proj")
    h = layer_norm(h, p("ln_f.weight"), p("ln_f.bias"), eps)
    head = p("wte.weight") if config.get("tie_word_embeddings", True) or "lm_head.weight" not in w else w["lm_head.weight"]
    return h @ head.T


def rope_inverse_frequencies(config, head_dim):
    base = config.get("rope_theta", 10000.0)
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old / low, inv_freq / factor, inv_freq)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / high) * ~(wavelen > old / low)
        inv_freq = torch.where(medium, smoothed, scaled)
    elif kind != "default":
        raise ValueError(kind)
    return inv_freq


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def llama_logits(config, w, ids):
    prefix = "model." if "model.embed_tokens.weight" in w else ""
    p = lambda name: w[prefix + name]
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    head_dim = config.get("head_dim") or hidden // heads
    eps = config.get("rms_norm_eps", 1e-6)
    act = ACTIVATIONS[config.get("hidden_act", "silu")]
    batch, length = ids.shape

    def rms_norm(x, weight):
        variance = x.pow(2).mean(-1, keepdim=True)
        return weight * (x * torch.rsqrt(variance + eps))

    inv_freq = rope_inverse_frequencies(config, head_dim)
    positions = torch.arange(length).float()
    freqs = (inv_freq[:, None] @ positions[None, :]).transpose(0, 1)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]

    def linear(x, name):
        # nn.Linear: the bias is there when the checkpoint has one (Qwen2's q/k/v, Llama's attention_bias).
        y = x @ p(name + ".weight").T
        return y + w[prefix + name + ".bias"] if prefix + name + ".bias" in w else y

    windows = layer_windows(config)
    h = p("embed_tokens.weight")[ids]
    for i in range(config["num_hidden_layers"]):
        l = f"layers.{i}"
        a = rms_norm(h, p(l + ".input_layernorm.weight"))
        shape = lambda t, n: t.view(batch, length, n, head_dim).transpose(1, 2)
        q = shape(linear(a, l + ".self_attn.q_proj"), heads)
        k = shape(linear(a, l + ".self_attn.k_proj"), kv_heads)
        v = shape(linear(a, l + ".self_attn.v_proj"), kv_heads)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        groups = heads // kv_heads
        k = k[:, :, None].expand(batch, kv_heads, groups, length, head_dim).reshape(batch, heads, length, head_dim)
        v = v[:, :, None].expand(batch, kv_heads, groups, length, head_dim).reshape(batch, heads, length, head_dim)
        scores = torch.matmul(q, k.transpose(2, 3)) * head_dim**-0.5
        context = torch.matmul(causal_softmax(scores, windows[i]), v).transpose(1, 2).reshape(batch, length, heads * head_dim)
        h = h + linear(context, l + ".self_attn.o_proj")
        m = rms_norm(h, p(l + ".post_attention_layernorm.weight"))
        gated = act(linear(m, l + ".mlp.gate_proj")) * linear(m, l + ".mlp.up_proj")
        h = h + linear(gated, l + ".mlp.down_proj")
    h = rms_norm(h, p("norm.weight"))
    head = p("embed_tokens.weight") if config.get("tie_word_embeddings", False) else w["lm_head.weight"]
    return h @ head.T


def merge_adapter(weights, adapter_dir, tensors=None):
    """Weights with a PEFT LoRA adapter merged in; module paths may carry the model prefix the checkpoint lacks.
    With `tensors` (the adapter's, possibly autograd leaves) the merge is differentiable in A and B."""
    config = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
    if tensors is None:
        tensors = read_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
    r = config["r"]
    scale = config["lora_alpha"] / (math.sqrt(r) if config.get("use_rslora") else r)
    merged = dict(weights)
    for key, a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[len("base_model.model.") : -len(".lora_A.weight")]
        b = tensors[key.replace(".lora_A.", ".lora_B.")]
        name = module + ".weight"
        if name not in merged:
            name = module.split(".", 1)[1] + ".weight"
        delta = scale * (b @ a)
        merged[name] = merged[name] + (delta.T if config.get("fan_in_fan_out") else delta)
    return merged


def probe_sequences(vocab, offset=0):
    """Two token sequences of different lengths spread over the vocabulary (the TypeScript side uses the same rule)."""
    return [[(37 * i + 5 + offset) % vocab for i in range(9)], [(11 * i + 2 + offset) % vocab for i in range(5)]]


def encode(logits):
    return base64.b64encode(logits[0].contiguous().numpy().astype("<f4").tobytes()).decode()


def lora_gradients(forward, config, weights, adapter_dir, sequence):
    """Mean next-token cross-entropy over `sequence` with the adapter (no dropout), and its gradient with
    respect to every LoRA A and B: the adapter's own values, as a training step would see them."""
    tensors = read_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
    leaves = {key: value.clone().requires_grad_(True) for key, value in tensors.items()}
    with torch.enable_grad():
        logits = forward(config, merge_adapter(weights, adapter_dir, leaves), torch.tensor([sequence]))[0]
        loss = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(sequence[1:]))
        loss.backward()
    grads = {key: base64.b64encode(leaf.grad.contiguous().numpy().astype("<f4").tobytes()).decode() for key, leaf in sorted(leaves.items())}
    return {"ids": sequence, "loss": loss.item(), "grads_f32_base64": grads}


def main(fixture_dir, adapters_dir, offset):
    out = {"generator": "test/reference/causal_reference.py", "torch": torch.__version__, "models": {}}
    for name in sorted(os.listdir(fixture_dir)):
        folder = os.path.join(fixture_dir, name)
        if not os.path.isfile(os.path.join(folder, "config.json")):
            continue
        config = json.load(open(os.path.join(folder, "config.json")))
        weights = read_safetensors(os.path.join(folder, "model.safetensors"))
        adapter_dir = os.path.join(adapters_dir, name)
        adapted = merge_adapter(weights, adapter_dir)
        forward = gpt2_logits if config["model_type"] == "gpt2" else llama_logits
        entries = []
        for sequence in probe_sequences(config["vocab_size"], offset):
            ids = torch.tensor([sequence])
            logits = forward(config, weights, ids)
            entries.append({
                "ids": sequence,
                "shape": list(logits.shape[1:]),
                "logits_f32_base64": encode(logits),
                "adapter_logits_f32_base64": encode(forward(config, adapted, ids)),
            })
        gradients = lora_gradients(forward, config, weights, adapter_dir, probe_sequences(config["vocab_size"], offset)[0])
        checksum = float(sum(t.double().sum().item() for t in weights.values()))
        with open(os.path.join(adapter_dir, "adapter_model.safetensors"), "rb") as f:
            adapter_sha256 = hashlib.sha256(f.read()).hexdigest()
        out["models"][name] = {"weights_sum": checksum, "adapter_sha256": adapter_sha256, "sequences": entries, "lora_gradients": gradients}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
