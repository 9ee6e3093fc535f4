"""The peer of GptSharp's int8 decoding (bench/GptSharp.Benchmarks, `int8-quick`): the book's GPTModel for GPT-2 124M
(ctx 1024, qkv_bias, random weights from torch.manual_seed(123)) with a KV-cache decoding loop, float32 and with
torch.ao.quantization.quantize_dynamic (qint8 nn.Linear: int8 weights with one scale per output row, activations
quantized per call), interleaved: an 8-token prompt, then 200 greedy tokens, one at a time. Also a 512-token prefill.

    /usr/bin/python3 bench/pytorch/int8_generate.py [--new-tokens 200] [--threads 2] [--rounds 3]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import book

GPT_CONFIG_124M_FULL = dict(book.GPT_CONFIG_124M, context_length=1024, qkv_bias=True)


def layer_norm(norm, x):
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    return norm.scale * (x - mean) / torch.sqrt(var + norm.eps) + norm.shift


@torch.no_grad()
def cached_forward(model, ids, cache, past):
    """Logits of the last position for ids [1, n] at positions past..past+n-1; appends keys/values to cache."""
    n = ids.shape[1]
    x = model.tok_emb(ids) + model.pos_emb(torch.arange(past, past + n))
    for i, block in enumerate(model.trf_blocks):
        att = block.att
        h = layer_norm(block.norm1, x)
        heads, hd = att.num_heads, att.head_dim
        q = att.W_query(h).view(1, n, heads, hd).transpose(1, 2)
        k = att.W_key(h).view(1, n, heads, hd).transpose(1, 2)
        v = att.W_value(h).view(1, n, heads, hd).transpose(1, 2)
        keys, values = cache[i]
        keys[:, :, past:past + n] = k
        values[:, :, past:past + n] = v
        k_all, v_all = keys[:, :, :past + n], values[:, :, :past + n]
        scores = q @ k_all.transpose(2, 3) / hd ** 0.5
        if n > 1:
            mask = torch.ones(n, past + n, dtype=torch.bool).triu(past + 1)
            scores = scores.masked_fill(mask, float("-inf"))
        ctx = (torch.softmax(scores, dim=-1) @ v_all).transpose(1, 2).reshape(1, n, heads * hd)
        x = x + att.out_proj(ctx)
        x = x + block.ff(layer_norm(block.norm2, x))
    return model.out_head(layer_norm(model.final_norm, x[:, -1:, :]))[:, -1, :]


def new_cache(model, cfg):
    heads = cfg["n_heads"]
    hd = cfg["emb_dim"] // heads
    return [(torch.zeros(1, heads, cfg["context_length"], hd), torch.zeros(1, heads, cfg["context_length"], hd))
            for _ in model.trf_blocks]


def generate(model, cfg, prompt, new_tokens):
    cache = new_cache(model, cfg)
    logits = cached_forward(model, torch.tensor([prompt]), cache, 0)
    out, past = [], len(prompt)
    for _ in range(new_tokens):
        nxt = int(logits.argmax(dim=-1))
        out.append(nxt)
        logits = cached_forward(model, torch.tensor([[nxt]]), cache, past)
        past += 1
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = GPT_CONFIG_124M_FULL
    torch.manual_seed(123)
    model = book.GPTModel(cfg).eval()
    qmodel = torch.ao.quantization.quantize_dynamic(book.GPTModel(cfg).eval(), {torch.nn.Linear}, dtype=torch.qint8)
    prompt = [6109, 3626, 6100, 345, 11, 290, 262, 640]
    long_prompt = (book.Gpt2Tokenizer().encode(book.read_verdict()) * 2)[:512]
    for m in (model, qmodel):
        generate(m, cfg, prompt, 4)  # warm-up
    rates = {"float32": [], "qint8": []}
    prefill = {"float32": [], "qint8": []}
    for _ in range(args.rounds):
        for name, m in (("float32", model), ("qint8", qmodel)):
            start = time.perf_counter()
            generate(m, cfg, prompt, args.new_tokens)
            rates[name].append(args.new_tokens / (time.perf_counter() - start))
            start = time.perf_counter()
            cached_forward(m, torch.tensor([long_prompt]), new_cache(m, cfg), 0)
            prefill[name].append(len(long_prompt) / (time.perf_counter() - start))
            print(f"round: {name} decoding {rates[name][-1]:.2f} tokens/s, prefill {prefill[name][-1]:.0f} tokens/s", flush=True)
    for name in rates:
        print(f"PyTorch {torch.__version__} {name}: cached decoding {statistics.median(rates[name]):.1f} tokens/s "
              f"(runs {', '.join(f'{r:.1f}' for r in rates[name])}); prefill 512 tokens {statistics.median(prefill[name]):.0f} tokens/s "
              f"(threads {torch.get_num_threads()})", flush=True)
    print(f"qint8 / float32 decoding: {statistics.median(rates['qint8']) / statistics.median(rates['float32']):.2f}x")


if __name__ == "__main__":
    main()
