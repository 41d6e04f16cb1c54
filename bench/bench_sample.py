"""`python sample.py` as a user runs it, whole (start-up, model, mask, files), timed: this tree against an earlier
commit's code (--before REV) on the same run, in turns.

python bench/bench_sample.py [--out_dir models/corpus] [--before REV] [--rounds 3] [--threads 2] [--busy 2]
    [-- sample.py args]

Each row runs sample.py in a fresh process with --num_samples 8 --max_new_tokens 1024 (and the arguments after --;
one given again there wins; no --max_new_tokens where they plan the length: --bars, --seconds, --melody, --infill,
--add_part) into a temporary folder, with OMP_NUM_THREADS set to each of --threads (a row each: --threads 1,2; "-"
leaves it unset, as a user's shell does). The rows take turns for --rounds rounds, since a shared machine's speed
drifts by 10-20 % over minutes; the table gives each row's median and all its times, and the longest sample's tokens
(both rows draw the same samples only where the code draws them alike). With --busy N, a neighbour process keeps N
threads on float32 matmuls all the while (a training run beside the sampling, as the README has a user keep one in
the background).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import checkout  # noqa: E402


BUSY = """import torch, sys
torch.set_num_threads(int(sys.argv[1]))
a = torch.randn(512, 512)
while True:
    a = torch.tanh(a @ a / 32)
"""


PLANNED = {"--bars", "--seconds", "--melody", "--infill", "--add_part"}  # flags that plan a piece's length


def timed_run(tree, args, threads):
    """(seconds, the longest sample's tokens) of one sample.py run from the folder `tree`, with OMP_NUM_THREADS
    `threads` ("-": unset)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        cap = [] if PLANNED & set(args) else ["--max_new_tokens", "1024"]  # (a planned length ends where planned)
        r = subprocess.run([sys.executable, str(Path(tree) / "sample.py"), "--num_samples", "8", *cap,
                            "--output_dir", out, *args], capture_output=True, text=True,
                           env=env if threads == "-" else {**env, "OMP_NUM_THREADS": threads})
        seconds = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"sample.py from {tree} failed:\n{r.stderr.strip()}")
    return seconds, max(map(int, re.findall(r"(\d+) tokens", r.stdout)), default=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", default=str(ROOT / "models/corpus"), help="the run sampled")
    parser.add_argument("--before", metavar="REV", help="also time this commit's sample.py on the same run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", default="2", help="OMP_NUM_THREADS for sample.py, a row each: 2, or 1,2,-")
    parser.add_argument("--busy", type=int, default=0, help="threads a neighbour process keeps busy meanwhile")
    opts, extra = parser.parse_known_args()
    args = ["--out_dir", str(Path(opts.out_dir).resolve()), *[a for a in extra if a != "--"]]
    import torch
    neighbour = subprocess.Popen([sys.executable, "-c", BUSY, str(opts.busy)]) if opts.busy else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trees = {"this tree": str(ROOT)}
            if opts.before:
                trees[f"before ({opts.before})"] = checkout(opts.before, tmp)
            rows = {f"{name}, {n} threads": (tree, n) for name, tree in trees.items() for n in opts.threads.split(",")}
            times = {name: [] for name in rows}
            tokens = {}
            for r in range(opts.rounds):
                for name, (tree, threads) in rows.items():
                    seconds, tokens[name] = timed_run(tree, args, threads)
                    times[name].append(seconds)
                    print(f"round {r + 1}: {name}: {seconds:.2f} s", flush=True)
    finally:
        if neighbour:
            neighbour.kill()
    print(f"\nsample.py --num_samples 8 {'' if PLANNED & set(args) else '--max_new_tokens 1024 '}{' '.join(args[2:])} "
          f"(the later wins) on "
          f"{Path(opts.out_dir).name}; torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"{f'a neighbour busy on {opts.busy} threads' if opts.busy else 'nothing beside it'}, "
          f"{time.strftime('%Y-%m-%d')}")
    print(f"{'code':<40} {'median s':>9} {'longest sample':>15}  all runs")
    for name, t in times.items():
        print(f"{name:<40} {statistics.median(t):>9.2f} {tokens[name]:>15}  {', '.join(f'{x:.2f}' for x in t)}")


if __name__ == "__main__":
    main()
