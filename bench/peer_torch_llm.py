# PyTorch peer of bench:llm: the project's float32 LoRA fine-tune of a LlamaForCausalLM folder written
# in plain torch (RMSNorm, rotary embeddings, grouped-query eager attention, SwiGLU, untied head as
# transformers' modeling_llama computes them), weights read from the folder's model.safetensors
# tensor by tensor into float32, LoRA r 16 / alpha 32 on q,k,v,o_proj, AdamW (1e-3, gradients clipped to norm 1) on the LoRA matrices,
# random token ids. Prints one line: tokens_per_s=… step_median_s=… peak_rss_mib=… losses=…
# (median of steps 2..N). Only torch and the standard library.
import argparse
import json
import math
import os
import resource
import statistics
import struct
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_tensors(path):
    """Each tensor of a safetensors file as float32, read one byte range at a time."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
        start = 8 + length
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            handle.seek(start + begin)
            data = bytearray(handle.read(end - begin))
            yield name, torch.frombuffer(data, dtype=DTYPES[info["dtype"]]).reshape(info["shape"]).to(torch.float32)


class LoraLinear(nn.Module):
    """A frozen bias-free linear layer plus scale · B A x (PEFT's LoRA, dropout 0)."""

    def __init__(self, weight, r=16, alpha=32):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.lora_A = nn.Parameter(torch.empty(r, weight.shape[1]))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(weight.shape[0], r))
        self.scale = alpha / r

    def forward(self, x):
        return F.linear(x, self.weight) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale


def rms_norm(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Llama(nn.Module):
    def __init__(self, config, weights):
        super().__init__()
        self.config = config
        frozen = lambda name: nn.Parameter(weights.pop(name), requires_grad=False)
        self.embed = frozen("model.embed_tokens.weight")
        self.norm = frozen("model.norm.weight")
        self.head = frozen("lm_head.weight")
        self.layers = nn.ModuleList()
        for i in range(config["num_hidden_layers"]):
            p = f"model.layers.{i}."
            layer = nn.Module()
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                setattr(layer, name, LoraLinear(weights.pop(p + "self_attn." + name + ".weight")))
            for name in ("gate_proj", "up_proj", "down_proj"):
                setattr(layer, name, frozen(p + "mlp." + name + ".weight"))
            layer.input_norm = frozen(p + "input_layernorm.weight")
            layer.post_norm = frozen(p + "post_attention_layernorm.weight")
            self.layers.append(layer)

    def forward(self, ids):
        c = self.config
        heads, kv, eps = c["num_attention_heads"], c["num_key_value_heads"], c["rms_norm_eps"]
        d = c["hidden_size"]
        head_dim = d // heads
        b, t = ids.shape
        inv_freq = 1.0 / (c.get("rope_theta", 10000.0) ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(t, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        h = self.embed[ids]
        for layer in self.layers:
            x = rms_norm(h, layer.input_norm, eps)
            q = layer.q_proj(x).view(b, t, heads, head_dim).transpose(1, 2)
            k = layer.k_proj(x).view(b, t, kv, head_dim).transpose(1, 2)
            v = layer.v_proj(x).view(b, t, kv, head_dim).transpose(1, 2)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
            k, v = k.repeat_interleave(heads // kv, dim=1), v.repeat_interleave(heads // kv, dim=1)
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(head_dim)
            scores = torch.where(causal, scores, torch.tensor(torch.finfo(scores.dtype).min))
            context = torch.matmul(scores.softmax(-1), v).transpose(1, 2).reshape(b, t, d)
            h = h + layer.o_proj(context)
            x = rms_norm(h, layer.post_norm, eps)
            h = h + F.linear(F.silu(F.linear(x, layer.gate_proj)) * F.linear(x, layer.up_proj), layer.down_proj)
        return F.linear(rms_norm(h, self.norm, eps), self.head)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("PEER_TORCH_THREADS", "0")))
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    config = json.load(open(os.path.join(args.model_dir, "config.json")))
    weights = dict(read_tensors(os.path.join(args.model_dir, "model.safetensors")))
    torch.manual_seed(7)
    model = Llama(config, weights)
    model.train()
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-3, weight_decay=0.01)
    generator = torch.Generator().manual_seed(1)
    vocab = config["vocab_size"]
    seconds, losses = [], []
    for _ in range(args.steps):
        ids = torch.randint(0, vocab, (args.batch, args.seq), generator=generator)
        start = time.perf_counter()
        logits = model(ids)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), ids[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        losses.append(loss.item())
        seconds.append(time.perf_counter() - start)
    step = statistics.median(seconds[1:] or seconds)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"threads={torch.get_num_threads()}")
    print(f"tokens_per_s={args.batch * args.seq / step:.1f} step_median_s={step:.4f} peak_rss_mib={peak:.1f} losses={','.join(f'{l:.4f}' for l in losses)}")


if __name__ == "__main__":
    main()
