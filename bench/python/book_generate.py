"""PyTorch 1.13 reference for GenerationBenchmarks: the book's GPTModel (GPT-2 124M config, context 1024,
qkv_bias) with random weights and the book's generate_text_simple loop (no KV cache): an 8-token prompt,
200 new greedy tokens, batch 1, 2 threads. Prints tokens/s.

Run (Debian's torch, not the pyenv python):
    OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 bench/python/book_generate.py [--new-tokens 200] [--repeats 3]
"""
import argparse
import math
import time

import torch
import torch.nn as nn


class LayerNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift


class GELU(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


class MultiHeadAttention(nn.Module):
    def __init__(self, dim, context, heads, qkv_bias):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.W_query = nn.Linear(dim, dim, bias=qkv_bias)
        self.W_key = nn.Linear(dim, dim, bias=qkv_bias)
        self.W_value = nn.Linear(dim, dim, bias=qkv_bias)
        self.out_proj = nn.Linear(dim, dim)
        self.register_buffer("mask", torch.triu(torch.ones(context, context), diagonal=1))

    def forward(self, x):
        b, t, d = x.shape
        q = self.W_query(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.W_key(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        v = self.W_value(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        scores = q @ k.transpose(2, 3)
        scores.masked_fill_(self.mask.bool()[:t, :t], -torch.inf)
        weights = torch.softmax(scores / self.head_dim ** 0.5, dim=-1)
        context = (weights @ v).transpose(1, 2).contiguous().view(b, t, d)
        return self.out_proj(context)


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(dim, 4 * dim), GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        return self.layers(x)


class TransformerBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["emb_dim"]
        self.att = MultiHeadAttention(d, cfg["context_length"], cfg["n_heads"], cfg["qkv_bias"])
        self.ff = FeedForward(d)
        self.norm1, self.norm2 = LayerNorm(d), LayerNorm(d)

    def forward(self, x):
        x = x + self.att(self.norm1(x))
        return x + self.ff(self.norm2(x))


class GPTModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

    def forward(self, idx):
        t = idx.shape[1]
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(t))
        return self.out_head(self.final_norm(self.trf_blocks(x)))


def generate_text_simple(model, idx, max_new_tokens, context_size):
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(idx[:, -context_size:])
        idx = torch.cat((idx, torch.argmax(logits[:, -1, :], dim=-1, keepdim=True)), dim=1)
    return idx


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(123)
    cfg = {"vocab_size": 50257, "context_length": 1024, "emb_dim": 768, "n_heads": 12, "n_layers": 12,
           "drop_rate": 0.0, "qkv_bias": True}
    model = GPTModel(cfg).eval()
    prompt = torch.tensor([[6109, 3626, 6100, 345, 11, 290, 262, 640]])
    generate_text_simple(model, prompt, 5, cfg["context_length"])  # warm-up
    for r in range(args.repeats):
        start = time.perf_counter()
        out = generate_text_simple(model, prompt, args.new_tokens, cfg["context_length"])
        seconds = time.perf_counter() - start
        print(f"run {r + 1}: {args.new_tokens} tokens in {seconds:.2f} s = {args.new_tokens / seconds:.2f} tokens/s "
              f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
        assert out.shape[1] == prompt.shape[1] + args.new_tokens


if __name__ == "__main__":
    main()
