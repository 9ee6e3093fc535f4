"""The PyTorch side of `gptsharp eval --task hellaswag|lambada`: the same scoring rules over the book's GPTModel,
written independently of the C# code, one unpadded row per (context, continuation) pair.

  HellaSwag (llm.c's dev/data/hellaswag.py, completion style): per ending, the tokens of ctx followed by those of
    " " + ending; the cross-entropy of each ending token given everything before it; acc picks the ending of lowest
    summed loss, acc_norm the lowest mean loss (first index on ties, as torch.argmin).
  LAMBADA (lm-evaluation-harness's lambada_openai): context = text before its last space, target = " " + last word;
    acc: the argmax at every target position is the target token; perplexity = exp(mean over examples of the target's
    summed loss).
  A row longer than the model's context keeps its last context_length + 1 tokens (the context is cut from the left).

Records every example's losses and choices for the in-repo fixture models into
tests/GptSharp.Tests/Fixtures/evaluation/golden.json (EvaluationReferenceTests compares GptSharp with it):

    OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 bench/pytorch/eval_tasks.py
    /usr/bin/python3 bench/pytorch/eval_tasks.py --greedy-candidates   # LAMBADA lines a fixture model gets right

The minimum margins it prints (how far each decision is from flipping) must stay well above float32 noise (~1e-5)
for an exact comparison of choices to be meaningful; the script refuses to write the fixture otherwise.
"""
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

import book

FIXTURES = os.path.join(book.REPO, "tests", "GptSharp.Tests", "Fixtures")
TASKS = os.path.join(FIXTURES, "evaluation")
MODELS = ["tiny-noqkvbias", "tiny-qkvbias"]
MIN_MARGIN = 1e-3

tokenizer = book.Gpt2Tokenizer()


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
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


def load_model(name):
    folder = os.path.join(FIXTURES, "reference", name)
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    model = book.GPTModel(cfg)
    state = read_safetensors(os.path.join(folder, "weights.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("att.mask") for k in missing), (missing, unexpected)
    model.eval()
    return model, cfg


@torch.no_grad()
def score(model, cfg, context, continuation):
    """(summed loss, mean loss, tokens, greedy, margin): margin is how far the greedy verdict is from flipping."""
    whole = context + continuation
    window = whole[-(cfg["context_length"] + 1):]
    inputs = torch.tensor(window[:-1]).unsqueeze(0)
    targets = torch.tensor(window[1:])
    logits = model(inputs)[0]
    n = len(continuation)
    cont_logits, cont_targets = logits[-n:], targets[-n:]
    losses = F.cross_entropy(cont_logits, cont_targets, reduction="none").double()
    greedy_ids = cont_logits.argmax(dim=-1)
    greedy = bool((greedy_ids == cont_targets).all())
    target_logits = cont_logits.gather(1, cont_targets.unsqueeze(1)).squeeze(1)
    if greedy:
        # every target is the argmax: how far is the runner-up?
        top2 = cont_logits.topk(2, dim=-1).values
        margin = float((top2[:, 0] - top2[:, 1]).min())
    else:
        # the first position that is not the argmax decides
        wrong = (greedy_ids != cont_targets).nonzero()[0, 0]
        margin = float(cont_logits[wrong].max() - target_logits[wrong])
    return float(losses.sum()), float(losses.mean()), n, greedy, margin


def gap(values, pick):
    others = [v for i, v in enumerate(values) if i != pick]
    return min(others) - values[pick]


def hellaswag(model, cfg, path):
    examples, acc, acc_norm, margins = [], 0, 0, []
    with open(path) as f:
        for line in f:
            ex = json.loads(line)
            ctx = tokenizer.encode(ex["ctx"])
            scores = [score(model, cfg, ctx, tokenizer.encode(" " + e)) for e in ex["endings"]]
            sums = [s[0] for s in scores]
            means = [s[1] for s in scores]
            pred = int(torch.tensor(sums).argmin())
            pred_norm = int(torch.tensor(means).argmin())
            acc += pred == ex["label"]
            acc_norm += pred_norm == ex["label"]
            margins += [gap(sums, pred), gap(means, pred_norm)]
            examples.append({"label": ex["label"], "pred": pred, "pred_norm": pred_norm, "sum_losses": sums,
                             "mean_losses": means, "tokens": [s[2] for s in scores]})
    n = len(examples)
    return {"acc": acc / n, "acc_norm": acc_norm / n, "min_margin": min(margins), "examples": examples}


def lambada(model, cfg, path):
    examples, margins = [], []
    with open(path) as f:
        for line in f:
            text = json.loads(line)["text"]
            context, word = text.rsplit(" ", 1)
            loss, _, n, greedy, margin = score(model, cfg, tokenizer.encode(context), tokenizer.encode(" " + word))
            margins.append(margin)
            examples.append({"loss": loss, "tokens": n, "greedy": greedy})
    n = len(examples)
    return {"acc": sum(e["greedy"] for e in examples) / n, "perplexity": math.exp(sum(e["loss"] for e in examples) / n),
            "min_margin": min(margins), "examples": examples}


def greedy_candidates(name, path):
    """Prints passages whose last word a model's greedy decoding produces (one token), to add to the LAMBADA file."""
    model, cfg = load_model(name)
    with open(path) as f:
        for line in f:
            context = json.loads(line)["text"].rsplit(" ", 1)[0]
            ids = tokenizer.encode(context)
            with torch.no_grad():
                logits = model(torch.tensor(ids[-cfg["context_length"]:]).unsqueeze(0))[0, -1]
            top = logits.topk(2)
            word = tokenizer.decode([int(top.indices[0])])
            if word.startswith(" ") and word[1:].isalpha() and tokenizer.encode(word) == [int(top.indices[0])]:
                print(json.dumps({"text": context + word}), f"# margin {float(top.values[0] - top.values[1]):.4f}")


def main():
    torch.set_num_threads(1)
    if "--greedy-candidates" in sys.argv:
        for name in MODELS:
            print("#", name)
            greedy_candidates(name, os.path.join(TASKS, "lambada-mini.jsonl"))
        return
    out = {"torch_version": torch.__version__, "threads": 1, "dtype": "float32", "min_margin_required": MIN_MARGIN,
           "rules": __doc__.split("\n\n")[1], "models": {}}
    ok = True
    for name in MODELS:
        model, cfg = load_model(name)
        result = {"hellaswag": hellaswag(model, cfg, os.path.join(TASKS, "hellaswag-mini.jsonl")),
                  "lambada": lambada(model, cfg, os.path.join(TASKS, "lambada-mini.jsonl"))}
        for task, r in result.items():
            print(f"{name} {task}: " + ", ".join(f"{k} {v:.6f}" for k, v in r.items() if k != "examples"))
            ok &= r["min_margin"] >= MIN_MARGIN
        out["models"][name] = result
    if not ok:
        sys.exit(f"a decision is within {MIN_MARGIN} of flipping: change the task files, the fixture is not written")
    path = os.path.join(TASKS, "golden.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
