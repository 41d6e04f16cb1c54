"""Training step time on the CPU with subnormal floats kept vs flushed to zero, from a trained checkpoint.

python bench/bench_denormal.py --checkpoint RUN/checkpoint.pt --data_dir=DATA [--steps 8] [--threads 2]

Subnormals (|x| < 1.2e-38) take a slow path on x86 CPUs. A fresh model has none, so bench_cpu.py cannot see them;
they turn up as a run trains, so this starts from a trained checkpoint (with its optimizer state) and times training
steps on real batches, the two settings alternating in rounds so that a change of machine load hits both.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataset import get_batch, read_data  # noqa: E402
from runs import load_checkpoint  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a train.py checkpoint.pt (weights and optimizer)")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--steps", type=int, default=8, help="steps per setting per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, ckpt = load_checkpoint(args.checkpoint)
    c = ckpt["config"]
    optimizer = model.configure_optimizers(c["weight_decay"], c["min_lr"], (c["beta1"], c["beta2"]), "cpu")
    optimizer.load_state_dict(ckpt["optimizer"])
    model.train()
    train = read_data(args.data_dir)[0]["train"]
    B, T = c["batch_size"], c["block_size"]
    gen = torch.Generator().manual_seed(0)
    times = {False: [], True: []}
    for _ in range(args.rounds):
        for flush in (False, True):
            torch.set_flush_denormal(flush)
            for _ in range(args.steps):
                x, y = get_batch(train, T, torch.randint(len(train) - T - 1, (B,), generator=gen).tolist(), "cpu")
                t0 = time.perf_counter()
                _, loss = model(x, y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                times[flush].append(time.perf_counter() - t0)
    print(f"{args.checkpoint} (step {ckpt['iter_num']}), batch {B} x {T}, {args.threads} threads, "
          f"torch {torch.__version__}\n")
    print("| subnormals | ms/step (median) | tokens/s |\n|---|---|---|")
    for flush, name in ((False, "kept (the CPU default)"), (True, "flushed to zero (set_flush_denormal)")):
        ms = 1000 * sorted(times[flush])[len(times[flush]) // 2]
        print(f"| {name} | {ms:.0f} | {B * T / ms * 1000:,.0f} |")


if __name__ == "__main__":
    main()
