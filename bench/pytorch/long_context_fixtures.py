"""Writes the long-context PyTorch fixtures of tests/GptSharp.Tests/Fixtures/reference (see its README.md):

* attention-t300: the book's causal multi-head attention core (after the q/k/v projections) at T = 300 with 4 heads,
  forward and backward, without dropout and with dropout p = 0.1 through a fixed, stored mask;
* tiny-t300: a small book GPTModel at context 300 (logits, loss, every gradient), in eval mode and in train mode with
  drop_rate 0.1 after torch.manual_seed (the library's torch generator draws the same masks).

Float32 on the CPU, one thread, PyTorch 1.13 (Debian python3-torch):
    OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 bench/pytorch/long_context_fixtures.py   (leave it unset on AMD)
"""
import json
import math
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from book import GPTModel, REPO  # noqa: E402

OUT = os.path.join(REPO, "tests", "GptSharp.Tests", "Fixtures", "reference")
DTYPES = {torch.float32: "F32", torch.int64: "I64", torch.uint8: "U8"}
ORDER = {"I64": 0, "F32": 1, "U8": 2}


def write_safetensors(path, tensors, metadata=None):
    """safetensors as the fixtures' README describes it: I64 before F32 (then U8), then by name; header padded to 8."""
    items = sorted(tensors.items(), key=lambda kv: (ORDER[DTYPES[kv[1].dtype]], kv[0]))
    header, blobs, offset = {}, [], 0
    for name, t in items:
        data = t.detach().contiguous().cpu().numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def attention_core(q, k, v, heads, noise):
    """The book's MultiHeadAttention.forward between the projections and out_proj, on [b, T, d] inputs."""
    b, t, d = q.shape
    hd = d // heads
    qh = q.view(b, t, heads, hd).transpose(1, 2)
    kh = k.view(b, t, heads, hd).transpose(1, 2)
    vh = v.view(b, t, heads, hd).transpose(1, 2)
    scores = qh @ kh.transpose(2, 3)
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
    scores = scores.masked_fill(mask, -torch.inf)
    weights = torch.softmax(scores / kh.shape[-1] ** 0.5, dim=-1)
    if noise is not None:
        weights = weights * noise  # F.dropout: input * (bernoulli mask / (1 - p))
    return (weights @ vh).transpose(1, 2).contiguous().view(b, t, d)


def attention_fixture():
    name, batch, seq, d, heads, p = "attention-t300", 1, 300, 64, 4, 0.1
    g = torch.Generator().manual_seed(3003)
    q, k, v, dcontext = (torch.randn(batch, seq, d, generator=g) for _ in range(4))
    keep = torch.rand(batch, heads, seq, seq, generator=g) >= p
    noise = keep.float().div_(1 - p)
    tensors = {"q": q, "k": k, "v": v, "dcontext": dcontext, "keep": keep.to(torch.uint8)}
    deviations = {}
    for suffix, n in (("", None), ("_dropout", noise)):
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        context = attention_core(*leaves, heads, n)
        context.backward(dcontext)
        tensors["context" + suffix] = context.detach()
        for label, leaf in zip(("dq", "dk", "dv"), leaves):
            tensors[label + suffix] = leaf.grad
        # The same in float64, to say how far a correct float32 implementation may land.
        leaves64 = [x.double().requires_grad_() for x in (q, k, v)]
        context64 = attention_core(*leaves64, heads, None if n is None else n.double())
        context64.backward(dcontext.double())
        deviations["context" + suffix] = (context64 - context.double()).abs().max().item()
        for label, leaf, leaf64 in zip(("dq", "dk", "dv"), leaves, leaves64):
            deviations[label + suffix] = (leaf64.grad - leaf.grad.double()).abs().max().item()
    os.makedirs(os.path.join(OUT, name), exist_ok=True)
    write_safetensors(os.path.join(OUT, name, "io.safetensors"), tensors)
    meta = {"batch": batch, "seq": seq, "d_out": d, "n_heads": heads, "drop_rate": p, "seed": 3003,
            "torch": torch.__version__, "float64_deviation": deviations}
    with open(os.path.join(OUT, name, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(name, json.dumps(deviations))


def model_fixture():
    name, batch, seq, seed, dropout_seed = "tiny-t300", 2, 300, 3004, 77
    cfg = {"vocab_size": 128, "context_length": seq, "emb_dim": 64, "n_heads": 4, "n_layers": 2, "drop_rate": 0.0, "qkv_bias": False}
    torch.manual_seed(seed)
    model = GPTModel(cfg)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg["vocab_size"], (batch, seq + 1), generator=g)
    inputs, targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()

    def loss_and_grads(m):
        m.zero_grad()
        logits = m(inputs)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss.backward()
        return logits.detach(), loss.detach(), {n: p.grad.detach().clone() for n, p in m.named_parameters()}

    model.eval()
    logits, loss, grads = loss_and_grads(model)
    # The same weights with drop_rate 0.1 in train mode: the masks come from torch.manual_seed(dropout_seed).
    dropped = GPTModel({**cfg, "drop_rate": 0.1})
    dropped.load_state_dict(model.state_dict())
    dropped.train()
    torch.manual_seed(dropout_seed)
    _, loss_dropout, grads_dropout = loss_and_grads(dropped)

    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    weights = {n: p.detach() for n, p in model.state_dict().items() if not n.endswith(".att.mask")}
    write_safetensors(os.path.join(folder, "weights.safetensors"), weights)
    write_safetensors(os.path.join(folder, "io.safetensors"),
                      {"inputs": inputs, "targets": targets, "logits": logits, "loss": loss.reshape(1),
                       "loss_dropout": loss_dropout.reshape(1)})
    write_safetensors(os.path.join(folder, "grads.safetensors"), grads)
    write_safetensors(os.path.join(folder, "grads_dropout.safetensors"), grads_dropout)
    meta = {"seed": seed, "batch": batch, "seq_len": seq, "loss": loss.item(), "dropout_rate": 0.1,
            "dropout_seed": dropout_seed, "loss_dropout": loss_dropout.item(), "torch": torch.__version__}
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(name, meta)


if __name__ == "__main__":
    torch.set_num_threads(1)
    attention_fixture()
    model_fixture()
