# PyTorch peer of bench:predict --peer (bench/inference.ts), fp32, torch.inference_mode, torch's own
# thread choice (--threads to set it), random weights (normal, std 0.02) and random token ids:
#   --task predict: a DistilBERT-shaped classifier (6 layers, d 768, 12 heads, FFN 3072, vocab 30522,
#     pre_classifier + classifier head) on one batch of 64 × 128 tokens; prints texts/s;
#   --task generate: GPT-2 small (peer_torch_causal.py's model) greedy decoding with a key/value cache,
#     batch 1, a 32-token prompt, --new-tokens new tokens; prints new tokens/s.
# Median of --repeats timed calls after one warm-up. Last line: {"per_second": …, "peak_rss_mib": …}.
# Only torch and the standard library.
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_torch_causal import VOCAB as GPT2_VOCAB, build as build_gpt2, peak_rss_mib  # noqa: E402

D, HEADS, FFN, BERT_VOCAB = 768, 12, 3072, 30522


class EncoderLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_lin, self.k_lin, self.v_lin, self.out_lin = (nn.Linear(D, D) for _ in range(4))
        self.sa_layer_norm = nn.LayerNorm(D, eps=1e-12)
        self.lin1, self.lin2 = nn.Linear(D, FFN), nn.Linear(FFN, D)
        self.output_layer_norm = nn.LayerNorm(D, eps=1e-12)

    def forward(self, x, mask_add):
        b, t, _ = x.shape
        split = lambda y: y.view(b, t, HEADS, D // HEADS).transpose(1, 2)
        q, k, v = split(self.q_lin(x)), split(self.k_lin(x)), split(self.v_lin(x))
        scores = torch.matmul(q / math.sqrt(D // HEADS), k.transpose(-1, -2)) + mask_add
        context = torch.matmul(scores.softmax(dim=-1), v).transpose(1, 2).reshape(b, t, D)
        x = self.sa_layer_norm(self.out_lin(context) + x)
        return self.output_layer_norm(self.lin2(F.gelu(self.lin1(x))) + x)


class DistilBertClassifier(nn.Module):
    def __init__(self, layers: int = 6, labels: int = 2):
        super().__init__()
        self.word_embeddings = nn.Embedding(BERT_VOCAB, D)
        self.position_embeddings = nn.Embedding(512, D)
        self.embeddings_norm = nn.LayerNorm(D, eps=1e-12)
        self.layer = nn.ModuleList(EncoderLayer() for _ in range(layers))
        self.pre_classifier, self.classifier = nn.Linear(D, D), nn.Linear(D, labels)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids, attention_mask):
        positions = torch.arange(ids.shape[1]).unsqueeze(0)
        x = self.embeddings_norm(self.word_embeddings(ids) + self.position_embeddings(positions))
        mask_add = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in self.layer:
            x = layer(x, mask_add)
        return self.classifier(F.relu(self.pre_classifier(x[:, 0])))


def timed(repeats: int, run) -> float:
    run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def predict(repeats: int) -> float:
    torch.manual_seed(7)
    model = DistilBertClassifier().eval()
    ids = torch.randint(0, BERT_VOCAB, (64, 128))
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        return ids.shape[0] / timed(repeats, lambda: model(ids, mask).tolist())


def generate(repeats: int, new_tokens: int) -> float:
    model = build_gpt2(12, lora=False).eval()
    prompt = torch.randint(0, GPT2_VOCAB, (1, 32), generator=torch.Generator().manual_seed(3))

    def run():
        logits, past = model(prompt)
        # One forward per new token, as the engine's loop: the prompt's, then each token's but the last.
        for i in range(new_tokens):
            token = logits[:, -1].argmax(dim=-1, keepdim=True)
            token.item()
            if i + 1 < new_tokens:
                logits, past = model(token, past)

    with torch.inference_mode():
        return new_tokens / timed(repeats, run)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", choices=["predict", "generate"], required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("PEER_TORCH_THREADS", "0")))
    args = parser.parse_args()
    # --threads 0 keeps torch's own choice; N > 0 sets torch's intra-op threads (OpenBLAS keeps its own).
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    per_second = predict(args.repeats) if args.task == "predict" else generate(args.repeats, args.new_tokens)
    print(json.dumps({"per_second": per_second, "peak_rss_mib": peak_rss_mib(), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
