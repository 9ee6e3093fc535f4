"""The book's chapter 5 pretraining run, as `gptsharp train`'s defaults: GPT_CONFIG_124M (ctx 256),
The Verdict split 90/10, batch 2, stride 256, AdamW lr 4e-4 weight decay 0.1, 10 epochs, eval_freq 5,
eval_iter 5, seed 123, start context "Every effort moves you"; then the book's sampling example
(torch.manual_seed(123); generate(max_new_tokens=15, top_k=25, temperature=1.4)).

stdout carries exactly what the book prints; per-step timings go to stderr.

    OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 bench/pytorch/book_train.py [--max-steps N] [--threads 2]
"""
import argparse
import sys
import time

import torch

import book


class StopTraining(Exception):
    pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (checks the first lines)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save", default=None, help="save the trained state_dict here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    tokenizer = book.Gpt2Tokenizer()
    text = book.read_verdict()
    train_loader, val_loader = book.book_loaders(tokenizer, text)

    torch.manual_seed(123)
    model = book.GPTModel(book.GPT_CONFIG_124M)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0004, weight_decay=0.1)

    start = time.perf_counter()
    last = [start]

    def on_step(step):
        now = time.perf_counter()
        print(f"step {step}: {now - last[0]:.3f} s", file=sys.stderr, flush=True)
        last[0] = now
        if args.max_steps is not None and step >= args.max_steps:
            raise StopTraining()  # steps 0 .. max_steps-1 (and their evaluations) are done

    try:
        book.train_model_simple(
            model, train_loader, val_loader, optimizer, "cpu", num_epochs=args.epochs, eval_freq=5, eval_iter=5,
            start_context="Every effort moves you", tokenizer=tokenizer, on_step=on_step)
        finished = True
    except StopTraining:
        finished = False
    wall = time.perf_counter() - start
    if finished:
        trained = len(train_loader) * train_loader.batch_size * book.GPT_CONFIG_124M["context_length"] * args.epochs
        print(f"wall time {wall:.1f} s, {trained / wall:.0f} tokens/s "
              f"({trained} training tokens / wall time, evaluations and samples included)", file=sys.stderr, flush=True)
    else:
        print(f"stopped after {args.max_steps} steps, wall time {wall:.1f} s", file=sys.stderr, flush=True)

    if finished:
        model.eval()
        torch.manual_seed(123)
        token_ids = book.generate(model=model, idx=book.text_to_token_ids("Every effort moves you", tokenizer),
                                  max_new_tokens=15, context_size=book.GPT_CONFIG_124M["context_length"],
                                  top_k=25, temperature=1.4)
        print("Output text:\n", book.token_ids_to_text(token_ids, tokenizer))
    if args.save:
        torch.save(model.state_dict(), args.save)


if __name__ == "__main__":
    main()
