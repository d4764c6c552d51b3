#!/usr/bin/python3
"""The PyTorch side of `npm run bench:train -- --peer`: the same workload as bench/train.ts, in plain torch.

A DistilBERT-shaped encoder (post-LayerNorm blocks, d 768, 12 heads, FFN 3072 with erf GELU, vocab 30522,
512 learned positions) with random weights (normal, std 0.02, as Hugging Face initialises), a
DistilBertForSequenceClassification head (pre_classifier, ReLU, classifier on the first token), cross
entropy and AdamW (lr 5e-4, weight decay 0.01). LoRA mode freezes the encoder and trains rank-16
adapters (alpha 32, no dropout) on q_lin and v_lin plus the head, as PEFT's SEQ_CLS task would; --full
trains every weight. No dropout anywhere, as on the engine side.

Only torch (Debian's python3-torch) and the standard library: no transformers or peft, so the script
runs where only the Debian package is installed. The last line of stdout is what bench/train.ts reads:

    tokens_per_s=<float> step_median_s=<float> peak_rss_mib=<float> threads=<int>

Step times are measured from the end of step 1 (warm-up) and the median is reported, as on the engine side.
"""
import argparse
import math
import os
import resource
import time

import torch
from torch import nn
from torch.nn import functional as F

DIM, HEADS, FFN, VOCAB, POSITIONS, LABELS = 768, 12, 3072, 30522, 512, 2
LORA_RANK, LORA_ALPHA, LORA_TARGETS = 16, 32, ("q_lin", "v_lin")
LEARNING_RATE, WEIGHT_DECAY = 5e-4, 0.01
LAYER_NORM_EPS = 1e-12
CLS_ID, SEP_ID, FIRST_WORD_ID = 101, 102, 1000


class LoraLinear(nn.Module):
    """A frozen linear layer plus a trained low-rank update: W x + (alpha / r) B A x, with B starting at zero."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        # PEFT's initialisation of A; B is zero, so training starts from the base model exactly.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scaling


class Block(nn.Module):
    """One DistilBERT transformer block: self-attention and FFN, each followed by a residual LayerNorm."""

    def __init__(self):
        super().__init__()
        self.q_lin, self.k_lin, self.v_lin, self.out_lin = (nn.Linear(DIM, DIM) for _ in range(4))
        self.sa_layer_norm = nn.LayerNorm(DIM, eps=LAYER_NORM_EPS)
        self.lin1, self.lin2 = nn.Linear(DIM, FFN), nn.Linear(FFN, DIM)
        self.output_layer_norm = nn.LayerNorm(DIM, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        head_dim = DIM // HEADS

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, seq, HEADS, head_dim).transpose(1, 2)

        q, k, v = heads(self.q_lin(x)), heads(self.k_lin(x)), heads(self.v_lin(x))
        scores = (q / math.sqrt(head_dim)) @ k.transpose(-1, -2) + mask_bias
        context = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, seq, DIM)
        x = self.sa_layer_norm(x + self.out_lin(context))
        return self.output_layer_norm(x + self.lin2(F.gelu(self.lin1(x))))


class Classifier(nn.Module):
    """Embeddings, `layers` blocks and the sequence-classification head on the first token."""

    def __init__(self, layers: int):
        super().__init__()
        self.word_embeddings = nn.Embedding(VOCAB, DIM)
        self.position_embeddings = nn.Embedding(POSITIONS, DIM)
        self.embeddings_layer_norm = nn.LayerNorm(DIM, eps=LAYER_NORM_EPS)
        self.blocks = nn.ModuleList(Block() for _ in range(layers))
        self.pre_classifier = nn.Linear(DIM, DIM)
        self.classifier = nn.Linear(DIM, LABELS)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1]).unsqueeze(0)
        x = self.embeddings_layer_norm(self.word_embeddings(ids) + self.position_embeddings(positions))
        # Padding gets a large negative score; the bench's examples fill every position, but the work is the same.
        mask_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for block in self.blocks:
            x = block(x, mask_bias)
        return self.classifier(F.relu(self.pre_classifier(x[:, 0])))


def add_lora(model: Classifier) -> None:
    """Freezes every weight, wraps the target projections with LoRA and unfreezes the head."""
    model.requires_grad_(False)
    for block in model.blocks:
        for name in LORA_TARGETS:
            setattr(block, name, LoraLinear(getattr(block, name), LORA_RANK, LORA_ALPHA))
    model.pre_classifier.requires_grad_(True)
    model.classifier.requires_grad_(True)


def batches(steps: int, batch: int, seq: int, generator: torch.Generator):
    """Random word ids framed by [CLS] … [SEP], every example exactly `seq` tokens, labels alternating."""
    for _ in range(steps):
        words = torch.randint(FIRST_WORD_ID, VOCAB, (batch, seq - 2), generator=generator)
        ids = torch.cat([torch.full((batch, 1), CLS_ID), words, torch.full((batch, 1), SEP_ID)], dim=1)
        yield ids, torch.ones(batch, seq, dtype=torch.long), torch.arange(batch) % LABELS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--full", action="store_true", help="train every weight instead of LoRA adapters and the head")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads (default: every CPU)")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2: the first step is warm-up")

    torch.manual_seed(1)
    torch.set_num_threads(args.threads)
    model = Classifier(args.layers)
    if not args.full:
        add_lora(model)
    model.train()
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)

    stamps = []
    for ids, mask, labels in batches(args.steps, args.batch, args.seq, torch.Generator().manual_seed(2)):
        loss = F.cross_entropy(model(ids, mask), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
        stamps.append(time.perf_counter())

    step_seconds = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
    # The upper median, as bench/train.ts takes it.
    median = sorted(step_seconds)[len(step_seconds) // 2]
    # ru_maxrss is in KiB on Linux.
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    trained_count = sum(p.numel() for p in trained)
    print(f"pytorch {torch.__version__}: {args.layers} layers, batch {args.batch} x {args.seq}, "
          f"{'full' if args.full else 'LoRA'} ({trained_count} trained parameters), last loss {loss.item():.4f}")
    print(f"tokens_per_s={args.batch * args.seq / median:.1f} step_median_s={median:.4f} "
          f"peak_rss_mib={peak_rss_mib:.1f} threads={args.threads}")


if __name__ == "__main__":
    main()
