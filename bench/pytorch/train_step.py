"""PyTorch side of TrainingStepBenchmark: the same step (GPT_CONFIG_124M, ctx 256, batch 2, drop 0.1,
AdamW lr 4e-4 wd 0.1, zero_grad + forward + cross-entropy + backward + step) on random tokens.

    OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 bench/pytorch/train_step.py [threads] [steps]

and on the GptSharp side:

    dotnet run -c Release --project bench/GptSharp.Benchmarks -- train-step-quick [threads] [steps]
"""
import resource
import sys
import time

import torch

from book import GPT_CONFIG_124M, GPTModel

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
torch.set_num_threads(threads)
torch.manual_seed(123)
cfg = dict(GPT_CONFIG_124M, drop_rate=0.1)
model = GPTModel(cfg)
model.train()
optimizer = torch.optim.AdamW(model.parameters(), lr=0.0004, weight_decay=0.1)
ids = torch.randint(0, cfg["vocab_size"], (2, cfg["context_length"] + 1))
inputs, targets = ids[:, :-1], ids[:, 1:]


def step():
    optimizer.zero_grad()
    logits = model(inputs)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    loss.backward()
    optimizer.step()
    return loss.item()


step()  # warm-up
cpu0, t0 = time.process_time(), time.perf_counter()
for s in range(steps):
    print(f"step {s + 1}: loss {step():.4f}", flush=True)
seconds = (time.perf_counter() - t0) / steps
cpu = (time.process_time() - cpu0) / steps
print(f"threads {threads}: {seconds:.3f} s/step ({2 * cfg['context_length'] / seconds:.0f} tokens/s), CPU {cpu:.3f} s/step")
print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
