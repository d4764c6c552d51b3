# PyTorch peer of bench:train's gpt2 workload: GPT-2 small written out in plain torch (the eager
# attention of transformers' GPT2Attention, Conv1D as Linear, tanh GELU, tied head), random weights
# (normal, std 0.02), random token ids, LoRA r 16 / alpha 32 on c_attn, AdamW on the LoRA matrices,
# fp32, torch's own thread choice (--threads or PEER_TORCH_THREADS to set it). Prints one line: tokens_per_s=… step_median_s=… peak_rss_mib=… (median of steps 2..N).
# Only torch and the standard library.
import argparse
import math
import os
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB, POSITIONS, D, HEADS = 50257, 1024, 768, 12


class LoraLinear(nn.Module):
    """A frozen linear layer plus scale · B A x (PEFT's LoRA, dropout 0)."""

    def __init__(self, base: nn.Linear, r: int, alpha: int):
        super().__init__()
        self.base = base
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scale


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(D, eps=1e-5)
        self.c_attn = nn.Linear(D, 3 * D)
        self.c_proj = nn.Linear(D, D)
        self.ln_2 = nn.LayerNorm(D, eps=1e-5)
        self.c_fc = nn.Linear(D, 4 * D)
        self.mlp_proj = nn.Linear(4 * D, D)

    def attend(self, x, past=None):
        b, t, _ = x.shape
        q, k, v = self.c_attn(x).split(D, dim=2)
        split = lambda y: y.view(b, t, HEADS, D // HEADS).transpose(1, 2)
        q, k, v = split(q), split(k), split(v)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        total = k.shape[2]
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D // HEADS)
        causal = torch.ones(total, total, dtype=torch.bool, device=x.device).tril()[total - t:total]
        scores = torch.where(causal, scores, torch.tensor(torch.finfo(scores.dtype).min, dtype=scores.dtype))
        context = torch.matmul(scores.softmax(dim=-1), v).transpose(1, 2).reshape(b, t, D)
        return self.c_proj(context), (k, v)

    def forward(self, x, past=None):
        attended, present = self.attend(self.ln_1(x), past)
        x = x + attended
        x = x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))
        return x, present


class Gpt2(nn.Module):
    def __init__(self, layers: int):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, D)
        self.wpe = nn.Embedding(POSITIONS, D)
        self.h = nn.ModuleList(Block() for _ in range(layers))
        self.ln_f = nn.LayerNorm(D, eps=1e-5)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids, past=None):
        start = 0 if past is None else past[0][0].shape[2]
        positions = torch.arange(start, start + ids.shape[1]).unsqueeze(0)
        x = self.wte(ids) + self.wpe(positions)
        presents = []
        for i, block in enumerate(self.h):
            x, present = block(x, None if past is None else past[i])
            presents.append(present)
        return F.linear(self.ln_f(x), self.wte.weight), presents


def build(layers: int, lora: bool) -> Gpt2:
    torch.manual_seed(7)
    model = Gpt2(layers)
    for p in model.parameters():
        p.requires_grad_(False)
    if lora:
        for block in model.h:
            block.c_attn = LoraLinear(block.c_attn, 16, 32)
    return model


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("PEER_TORCH_THREADS", "0")))
    args = parser.parse_args()
    # --threads 0 keeps torch's own choice; N > 0 sets torch's intra-op threads (OpenBLAS keeps its own).
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model = build(args.layers, lora=True)
    model.train()
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=5e-4, weight_decay=0.01)
    generator = torch.Generator().manual_seed(1)
    seconds = []
    for _ in range(args.steps):
        ids = torch.randint(0, VOCAB, (args.batch, args.seq), generator=generator)
        start = time.perf_counter()
        logits, _ = model(ids)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
        seconds.append(time.perf_counter() - start)
    step = statistics.median(seconds[1:] or seconds)
    print(f"threads={torch.get_num_threads()} loss={loss.item():.4f}")
    print(f"tokens_per_s={args.batch * args.seq / step:.1f} step_median_s={step:.4f} peak_rss_mib={peak_rss_mib():.1f}")


if __name__ == "__main__":
    main()
