"""Records PyTorch's CPU random streams for TorchGeneratorTests (run with Debian's torch 1.13).

    /usr/bin/python3 tests/GptSharp.Tests/Fixtures/torch-rng/record.py

Writes expected.json next to this script. Float32 values are stored as JSON numbers (exact:
every float32 is a double); large tensors are stored as the SHA-256 of their little-endian
bytes plus a few values for diagnosis.
"""
import hashlib
import json
import os

import torch
import torch.nn.functional as F

torch.set_num_threads(1)


def floats(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def digest(t):
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()


def summary(t):
    flat = t.detach().reshape(-1)
    return {
        "count": flat.numel(),
        "first": floats(flat[:8]),
        "last": floats(flat[-8:]),
        "sum": float(flat.double().sum()),
        "sha256": digest(flat),
    }


out = {"torch_version": torch.__version__, "config": torch.__config__.show()}

# Uniform: torch.rand(n) == empty(n).uniform_(0, 1).
out["rand"] = {}
for n in [1, 5, 16, 100]:
    torch.manual_seed(123)
    out["rand"][str(n)] = floats(torch.rand(n))

# Uniform with bounds as nn.Linear draws them (the bounds go through float32).
bound = 1 / 768 ** 0.5
torch.manual_seed(123)
out["uniform_bounds"] = {"from": -bound, "to": bound, "values": floats(torch.empty(2000).uniform_(-bound, bound))}
torch.manual_seed(7)
out["uniform_wide"] = {"seed": 7, "from": -3.5, "to": 11.25, "values": floats(torch.empty(2000).uniform_(-3.5, 11.25))}

# Normal: < 16 elements use the scalar Box-Muller in double with a cached second value;
# >= 16 float32 elements use normal_fill (16-element blocks, last block recomputed).
out["randn"] = {}
for n in [1, 2, 7, 15, 16, 17, 31, 32, 100, 1000]:
    torch.manual_seed(123)
    out["randn"][str(n)] = floats(torch.randn(n))
torch.manual_seed(123)
out["randn_large"] = summary(torch.randn(100003))
torch.manual_seed(5)
out["normal_mean_std"] = {"seed": 5, "mean": 0.5, "std": 0.02, "values": floats(torch.empty(333).normal_(0.5, 0.02)),
                          "small": floats(torch.empty(9).normal_(0.5, 0.02))}

# Interleavings: the cached normal survives uniform draws and the vector path, and manual_seed clears it.
torch.manual_seed(123)
seq = []
seq.append(("randn", 3, floats(torch.randn(3))))
seq.append(("rand", 2, floats(torch.rand(2))))
seq.append(("randn", 1, floats(torch.randn(1))))
seq.append(("randn", 20, floats(torch.randn(20))))
seq.append(("randn", 1, floats(torch.randn(1))))
seq.append(("rand", 3, floats(torch.rand(3))))
seq.append(("randn", 5, floats(torch.randn(5))))
out["interleaved"] = [{"op": op, "n": n, "values": v} for op, n, v in seq]
torch.manual_seed(123)
torch.randn(1)  # leaves a cached normal
torch.manual_seed(123)
out["reseed_clears_cache"] = floats(torch.randn(2))

# random_() on int64: what RandomSampler uses for its seed.
torch.manual_seed(123)
out["random_int64"] = [int(torch.empty((), dtype=torch.int64).random_().item()) for _ in range(6)]

# randperm with the global generator and with a fresh generator.
out["randperm"] = {}
for n in [1, 2, 9, 10, 100, 1000]:
    torch.manual_seed(123)
    out["randperm"][str(n)] = torch.randperm(n).tolist()
g = torch.Generator()
g.manual_seed(4249244145239071215)
out["randperm_generator"] = {"seed": 4249244145239071215, "first": torch.randperm(9, generator=g).tolist(),
                             "second": torch.randperm(9, generator=g).tolist()}

# nn.Linear(768, 768) and nn.Embedding init.
torch.manual_seed(123)
lin = torch.nn.Linear(768, 768)
out["linear_768"] = {"weight": summary(lin.weight), "bias": summary(lin.bias)}
torch.manual_seed(123)
emb = torch.nn.Embedding(1000, 768)
out["embedding_1000x768"] = summary(emb.weight)

# Dropout on CPU: noise.bernoulli_(1 - p) (double uniforms), then x * (noise / (1 - p)).
torch.manual_seed(123)
y = F.dropout(torch.ones(1000), p=0.1, training=True)
out["dropout"] = {"p": 0.1, "n": 1000, "zeros": [i for i, v in enumerate(y.tolist()) if v == 0.0],
                  "kept_value": float(y[y != 0][0])}
torch.manual_seed(123)
out["bernoulli"] = {"p": 0.3, "values": floats(torch.empty(64).bernoulli_(0.3))}

# multinomial(probs, 1): q ~ Exp(1) (double), argmax(probs / q).
torch.manual_seed(321)
probs = torch.softmax(torch.randn(50) * 2, dim=-1)
probs_topk = probs.clone()
probs_topk[probs_topk < probs_topk.topk(5).values[-1]] = 0
torch.manual_seed(123)
draws = [int(torch.multinomial(probs, num_samples=1).item()) for _ in range(30)]
draws_topk = [int(torch.multinomial(probs_topk, num_samples=1).item()) for _ in range(30)]
out["multinomial"] = {"probs": floats(probs), "probs_topk": floats(probs_topk), "draws": draws, "draws_topk": draws_topk,
                      "after": floats(torch.rand(3))}

# The complete state (torch.get_rng_state) after draws that leave a cached normal.
torch.manual_seed(123)
torch.rand(700)
torch.randn(3)
out["state_after"] = {"rand": 700, "randn": 3, "hex": torch.get_rng_state().numpy().tobytes().hex(),
                      "next": floats(torch.randn(4))}

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "expected.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
print("wrote", path)
