"""The book's generation loop (generate_text_simple: the whole context through the model for every new
token, greedy argmax, no KV cache) on GPT-2 124M (ctx 1024, qkv_bias, random weights from
torch.manual_seed(123)): an 8-token prompt, 200 new tokens, tokens/s. The PyTorch side of
bench/GptSharp.Benchmarks/GenerationBenchmarks.cs (UseCache=False): one warm-up, then 3 timed runs.

    OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 bench/pytorch/book_generate.py [--new-tokens 200] [--threads 2]
"""
import argparse
import time

import torch

import book

GPT_CONFIG_124M_FULL = dict(book.GPT_CONFIG_124M, context_length=1024, qkv_bias=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    tokenizer = book.Gpt2Tokenizer()
    torch.manual_seed(123)
    model = book.GPTModel(GPT_CONFIG_124M_FULL)
    model.eval()

    prompt = tokenizer.encode(book.read_verdict())[:8]
    idx = torch.tensor(prompt).unsqueeze(0)
    print(f"prompt ({len(prompt)} tokens): {tokenizer.decode(prompt)!r}", flush=True)
    book.generate_text_simple(model, idx, max_new_tokens=5, context_size=GPT_CONFIG_124M_FULL["context_length"])  # warm-up
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = book.generate_text_simple(model, idx, max_new_tokens=args.new_tokens, context_size=GPT_CONFIG_124M_FULL["context_length"])
        wall = time.perf_counter() - start
        print(f"{args.new_tokens} new tokens in {wall:.2f} s: {args.new_tokens / wall:.2f} tokens/s "
              f"(threads {torch.get_num_threads()})", flush=True)
    print("first new ids:", out[0, len(prompt):len(prompt) + 10].tolist(), flush=True)


if __name__ == "__main__":
    main()
