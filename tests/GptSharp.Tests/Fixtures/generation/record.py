"""Records sampled generations of the book's `generate` with PyTorch 1.13 on the reference fixture models, so that
the C# sampling path (top-k, temperature, softmax, TorchGenerator.Multinomial) can be checked token for token.

    OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 tests/GptSharp.Tests/Fixtures/generation/record.py
writes sampled.json next to this script.
"""
import json
import os
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "..", "bench", "python"))
from book_generate import GPTModel  # noqa: E402  (the book's model, written for the benchmark)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = {"F32": torch.float32, "I64": torch.int64}[info["dtype"]]
        raw = bytearray(data[8 + n + begin:8 + n + end])
        tensors[name] = torch.frombuffer(raw, dtype=dtype).reshape(info["shape"]).clone()
    return tensors


def generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None):
    # The book's generate (section 5.3.3).
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)
        logits = logits[:, -1, :]
        if top_k is not None:
            top_logits, _ = torch.topk(logits, top_k)
            min_val = top_logits[:, -1]
            logits = torch.where(logits < min_val, torch.tensor(float("-inf")), logits)
        if temperature > 0.0:
            logits = logits / temperature
            probs = torch.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1)
        else:
            idx_next = torch.argmax(logits, dim=-1, keepdim=True)
        if idx_next == eos_id:
            break
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def main():
    torch.set_num_threads(1)
    cases = []
    for fixture in ["tiny-noqkvbias", "tiny-qkvbias"]:
        root = os.path.join(HERE, "..", "reference", fixture)
        cfg = json.load(open(os.path.join(root, "config.json")))
        model = GPTModel(cfg)
        weights = read_safetensors(os.path.join(root, "weights.safetensors"))
        missing, unexpected = model.load_state_dict(weights, strict=False)
        assert not unexpected and all(m.endswith("att.mask") for m in missing), (missing, unexpected)
        model.eval()
        prompt = read_safetensors(os.path.join(root, "io.safetensors"))["inputs"][0:1, :8]
        for seed, temperature, top_k in [(123, 1.4, 25), (123, 1.0, None), (7, 0.7, 5)]:
            torch.manual_seed(seed)
            out = generate(model, prompt, 16, cfg["context_length"], temperature=temperature, top_k=top_k)
            cases.append({"fixture": fixture, "seed": seed, "temperature": temperature, "top_k": top_k,
                          "max_new_tokens": 16, "prompt": prompt[0].tolist(), "generated": out[0].tolist()})
    with open(os.path.join(HERE, "sampled.json"), "w") as f:
        json.dump({"torch_version": torch.__version__, "cases": cases}, f, indent=1)
    print(f"{len(cases)} cases written")


if __name__ == "__main__":
    main()
