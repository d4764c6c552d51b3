#!/usr/bin/env python3
"""An independent PyTorch implementation of Hugging Face's DistilBERT / BERT / RoBERTa forward
passes for sequence classification (written from transformers' modeling_*.py, not imported from it),
plus PEFT's LoRA semantics, used to produce reference logits for the TypeScript engine.

Usage: hf_reference.py --fixtures DIR --cases CASES.json --out OUT.json
CASES.json: {"<model folder>": {"input_ids": [[...]], "attention_mask": [[...]], "token_type_ids": [[...]],
             "adapter": "<adapter folder or null>"}, ...}
Needs only torch (Debian python3-torch works)."""
import argparse
import hashlib
import json
import math
import os

import torch
import torch.nn.functional as F

from safetensors_io import read_safetensors


def canonical_weights(tensors, prefix):
    """transformers renames gamma/beta and loads bare *Model checkpoints under the model prefix."""
    out = {}
    for name, value in tensors.items():
        if name.endswith(".gamma"):
            name = name[: -len(".gamma")] + ".weight"
        elif name.endswith(".beta"):
            name = name[: -len(".beta")] + ".bias"
        if name.split(".")[0] in ("embeddings", "encoder", "transformer", "pooler"):
            name = prefix + "." + name
        out[name] = value
    return out


class Model:
    def __init__(self, folder, adapter=None):
        with open(os.path.join(folder, "config.json")) as handle:
            self.config = json.load(handle)
        self.kind = self.config["model_type"]
        self.weights = canonical_weights(read_safetensors(os.path.join(folder, "model.safetensors")), self.kind)
        self.lora = {}
        if adapter:
            self.load_adapter(adapter)

    def load_adapter(self, folder):
        with open(os.path.join(folder, "adapter_config.json")) as handle:
            config = json.load(handle)
        r, alpha = config["r"], config["lora_alpha"]
        scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        for key, value in read_safetensors(os.path.join(folder, "adapter_model.safetensors")).items():
            name = key[len("base_model.model.") :]
            if ".lora_A." in name or ".lora_B." in name:
                module, matrix = name.rsplit(".lora_", 1)
                self.lora.setdefault(module, {"scale": scale})[matrix[0]] = value
            else:
                # modules_to_save: the adapter carries the full trained copy.
                self.weights[name] = value

    def linear(self, x, module):
        y = F.linear(x, self.weights[module + ".weight"], self.weights[module + ".bias"])
        if module in self.lora:
            entry = self.lora[module]
            y = y + F.linear(F.linear(x, entry["A"]), entry["B"]) * entry["scale"]
        return y

    def layer_norm(self, x, module, eps):
        return F.layer_norm(x, (x.shape[-1],), self.weights[module + ".weight"], self.weights[module + ".bias"], eps)

    def act(self, x):
        name = self.config.get("hidden_act", self.config.get("activation", "gelu"))
        if name == "gelu":
            return F.gelu(x)  # exact erf form, as transformers' GELUActivation
        if name in ("gelu_new", "gelu_pytorch_tanh"):
            return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
        if name == "relu":
            return F.relu(x)
        raise ValueError(name)

    # -- DistilBERT ---------------------------------------------------------------------------
    def distilbert_hidden(self, ids, mask):
        c, w = self.config, "distilbert"
        positions = torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)
        h = self.weights[w + ".embeddings.word_embeddings.weight"][ids] + self.weights[w + ".embeddings.position_embeddings.weight"][positions]
        h = self.layer_norm(h, w + ".embeddings.LayerNorm", 1e-12)
        batch, length, dim = h.shape
        heads = c["n_heads"]
        size = dim // heads
        for layer in range(c["n_layers"]):
            p = f"{w}.transformer.layer.{layer}"
            shape = lambda t: t.view(batch, length, heads, size).transpose(1, 2)
            q = shape(self.linear(h, p + ".attention.q_lin")) / math.sqrt(size)
            k = shape(self.linear(h, p + ".attention.k_lin"))
            v = shape(self.linear(h, p + ".attention.v_lin"))
            scores = q @ k.transpose(2, 3)
            scores = scores.masked_fill((mask == 0).view(batch, 1, 1, length), torch.finfo(scores.dtype).min)
            context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, dim)
            attention = self.layer_norm(self.linear(context, p + ".attention.out_lin") + h, p + ".sa_layer_norm", 1e-12)
            ffn = self.linear(self.act(self.linear(attention, p + ".ffn.lin1")), p + ".ffn.lin2")
            h = self.layer_norm(ffn + attention, p + ".output_layer_norm", 1e-12)
        return h

    # -- BERT and RoBERTa ---------------------------------------------------------------------
    def bert_hidden(self, ids, mask, types):
        c, w = self.config, self.kind
        eps = c.get("layer_norm_eps", 1e-12)
        if self.kind == "roberta":
            pad = c.get("pad_token_id", 1)
            not_pad = ids.ne(pad).int()
            positions = (torch.cumsum(not_pad, dim=1) * not_pad).long() + pad
        else:
            positions = torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)
        h = (
            self.weights[w + ".embeddings.word_embeddings.weight"][ids]
            + self.weights[w + ".embeddings.token_type_embeddings.weight"][types]
            + self.weights[w + ".embeddings.position_embeddings.weight"][positions]
        )
        h = self.layer_norm(h, w + ".embeddings.LayerNorm", eps)
        batch, length, dim = h.shape
        heads = c["num_attention_heads"]
        size = dim // heads
        extended = (1.0 - mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
        for layer in range(c["num_hidden_layers"]):
            p = f"{w}.encoder.layer.{layer}"
            shape = lambda t: t.view(batch, length, heads, size).permute(0, 2, 1, 3)
            q = shape(self.linear(h, p + ".attention.self.query"))
            k = shape(self.linear(h, p + ".attention.self.key"))
            v = shape(self.linear(h, p + ".attention.self.value"))
            scores = q @ k.transpose(-1, -2) / math.sqrt(size) + extended
            context = (scores.softmax(-1) @ v).permute(0, 2, 1, 3).reshape(batch, length, dim)
            attention = self.layer_norm(self.linear(context, p + ".attention.output.dense") + h, p + ".attention.output.LayerNorm", eps)
            inner = self.act(self.linear(attention, p + ".intermediate.dense"))
            h = self.layer_norm(self.linear(inner, p + ".output.dense") + attention, p + ".output.LayerNorm", eps)
        return h

    def hidden(self, ids, mask, types):
        return self.distilbert_hidden(ids, mask) if self.kind == "distilbert" else self.bert_hidden(ids, mask, types)

    def logits(self, hidden):
        first = hidden[:, 0]
        if self.kind == "distilbert":
            return self.linear(F.relu(self.linear(first, "pre_classifier")), "classifier")
        if self.kind == "bert":
            return self.linear(torch.tanh(self.linear(first, "bert.pooler.dense")), "classifier")
        return self.linear(torch.tanh(self.linear(first, "classifier.dense")), "classifier.out_proj")

    def has_head(self):
        return any(name.startswith("classifier.") for name in self.weights)


def sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixtures", required=True)
    parser.add_argument("--cases", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.cases) as handle:
        cases = json.load(handle)
    results = {}
    torch.set_grad_enabled(False)
    for name, case in cases.items():
        folder = os.path.join(args.fixtures, name)
        ids = torch.tensor(case["input_ids"], dtype=torch.long)
        mask = torch.tensor(case["attention_mask"], dtype=torch.long)
        types = torch.tensor(case["token_type_ids"], dtype=torch.long)
        base = Model(folder)
        hidden = base.hidden(ids, mask, types)
        result = dict(case)
        result["weights_sha256"] = sha256(os.path.join(folder, "model.safetensors"))
        result["cls_hidden"] = hidden[:, 0].tolist()
        result["logits"] = base.logits(hidden).tolist() if base.has_head() else None
        if case.get("adapter"):
            adapted = Model(folder, os.path.join(args.fixtures, case["adapter"]))
            result["adapter_sha256"] = sha256(os.path.join(args.fixtures, case["adapter"], "adapter_model.safetensors"))
            result["adapter_logits"] = adapted.logits(adapted.hidden(ids, mask, types)).tolist()
        results[name] = result
    with open(args.out, "w") as handle:
        json.dump({"torch": torch.__version__, "cases": results}, handle)
        handle.write("\n")


if __name__ == "__main__":
    main()
