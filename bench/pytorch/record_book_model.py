"""Records what the book's chapter 5 notebook computes right after `torch.manual_seed(123);
model = GPTModel(GPT_CONFIG_124M)`, for TorchGeneratorModelTests:

  - every parameter's SHA-256 (float32 little-endian) and a few values,
  - the chapter's data split (token counts, windows) and the pre-training losses
    (book: train 10.98758347829183, val 10.98110580444336),
  - the first epoch's shuffle and the first training batch's loss in train mode (dropout on),
  - verdict-tokens.json: the token ids of the chapter's train and validation text.

    OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 bench/pytorch/record_book_model.py
"""
import hashlib
import json
import os

import torch

import sys

import book

FIXTURES = os.path.join(book.REPO, "tests", "GptSharp.Tests", "Fixtures", "torch-rng")
tokenizer = book.Gpt2Tokenizer()
text = book.read_verdict()

# The chapter's split: 90/10 by characters, each part tokenized on its own.
split_idx = int(0.90 * len(text))
with open(os.path.join(FIXTURES, "verdict-tokens.json"), "w") as f:
    json.dump({"split_idx": split_idx, "train_ids": tokenizer.encode(text[:split_idx]),
               "val_ids": tokenizer.encode(text[split_idx:])}, f)
if "--tokens-only" in sys.argv:
    sys.exit(0)

torch.set_num_threads(2)
out = {"torch_version": torch.__version__, "config": book.GPT_CONFIG_124M}
out["characters"] = len(text)
out["tokens"] = len(tokenizer.encode(text))

torch.manual_seed(123)
model = book.GPTModel(book.GPT_CONFIG_124M)
params = {}
for name, p in model.named_parameters():
    flat = p.detach().reshape(-1)
    params[name] = {
        "shape": list(p.shape),
        "first": [float(v) for v in flat[:4]],
        "last": [float(v) for v in flat[-4:]],
        "sha256": hashlib.sha256(flat.numpy().tobytes()).hexdigest(),
    }
out["parameters"] = params
out["parameter_count"] = sum(p.numel() for p in model.parameters())
state_after_init = torch.get_rng_state()
out["rng_state_after_init_sha256"] = hashlib.sha256(state_after_init.numpy().tobytes()).hexdigest()

train_loader, val_loader = book.book_loaders(tokenizer, text)
out["train_windows"] = len(train_loader.dataset)
out["val_windows"] = len(val_loader.dataset)
out["train_batches"] = len(train_loader)
out["val_batches"] = len(val_loader)

# The notebook: model.eval(); torch.manual_seed(123); losses over all batches with no_grad.
model.eval()
torch.manual_seed(123)
with torch.no_grad():
    out["initial_train_loss"] = book.calc_loss_loader(train_loader, model, "cpu")
    out["initial_val_loss"] = book.calc_loss_loader(val_loader, model, "cpu")
print("initial losses", out["initial_train_loss"], out["initial_val_loss"])

# Training starts from the state right after init: one DataLoader iter draws the base seed, the
# RandomSampler a generator seed, then the first batch runs forward in train mode (dropout).
torch.set_rng_state(state_after_init)
model.train()
base_seed = torch.empty((), dtype=torch.int64).random_().item()
sampler_seed = torch.empty((), dtype=torch.int64).random_().item()
g = torch.Generator()
g.manual_seed(sampler_seed)
out["epoch1_base_seed"] = base_seed
out["epoch1_sampler_seed"] = sampler_seed
out["epoch1_order"] = torch.randperm(len(train_loader.dataset), generator=g).tolist()

torch.set_rng_state(state_after_init)
it = iter(train_loader)
x, y = next(it)
out["first_batch_inputs_first"] = x[:, :4].tolist()
loss = book.calc_loss_batch(x, y, model, "cpu")
out["first_batch_train_loss"] = loss.item()
model.eval()
with torch.no_grad():
    out["first_batch_eval_loss"] = book.calc_loss_batch(x, y, model, "cpu").item()
print("first batch loss train/eval", out["first_batch_train_loss"], out["first_batch_eval_loss"])

path = os.path.join(FIXTURES, "book-model.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
print("wrote", path)
