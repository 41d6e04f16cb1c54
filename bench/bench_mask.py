"""The sampler's mask alone, timed: one decode step of GrammarMask at batch 8 (consume the newest token, fold the
rules), this tree against an earlier commit's code (--before REV), in turns.

python bench/bench_mask.py [--before REV] [--rounds 3] [--threads 2]

Each row runs in a fresh process from its tree: the first 8 of midi-samples/shipped/*.txt (the shipped model's
samples, read with the shipped tokenizer, padded with END to the longest) are fed to a fresh mask one token at a time,
as GPT.generate feeds it, plain and with --voice_leading true; the table gives each row's median milliseconds a step.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import checkout  # noqa: E402

STEPS = """
import json, sys, time
from pathlib import Path
import torch
tree = Path(sys.argv[1])
sys.path.insert(0, str(tree))
try:
    from mask import GrammarMask
except ImportError:  # before the mask had a module of its own
    from controls import GrammarMask
from controls import Controls
from encoding_decoding import Tokenizer
tok = Tokenizer.load(tree / "models/corpus/tokenizer.json")
pieces = [tok.encode(p.read_text().split()) for p in sorted((tree / "midi-samples/shipped").glob("*.txt"))[:8]]
longest = max(map(len, pieces))
x = torch.tensor([p + [tok.stoi["END"]] * (longest - len(p)) for p in pieces])
out = {}
for name, controls in (("plain", Controls()), ("voice_leading", Controls(voice_leading=True))):
    mask = GrammarMask(tok, "cpu", controls)
    t0 = time.perf_counter()
    for t in range(1, x.size(1)):
        mask(x[:, :t])
    out[name] = 1000 * (time.perf_counter() - t0) / (x.size(1) - 1)
print(json.dumps({**out, "steps": x.size(1) - 1}))
"""


def timed(tree, threads):
    r = subprocess.run([sys.executable, "-c", STEPS, tree], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if r.returncode:
        sys.exit(f"the mask of {tree} failed:\n{r.stderr.strip()}")
    return json.loads(r.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", metavar="REV", help="also time this commit's mask")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    opts = parser.parse_args()
    import torch
    with tempfile.TemporaryDirectory() as tmp:
        rows = {"this tree": str(ROOT)}
        if opts.before:
            rows[f"before ({opts.before})"] = checkout(opts.before, tmp)
        runs = {name: [] for name in rows}
        for r in range(opts.rounds):
            for name, tree in rows.items():
                runs[name].append(timed(tree, opts.threads))
                print(f"round {r + 1}: {name}: {runs[name][-1]}", flush=True)
    print(f"\nGrammarMask, one decode step at batch 8 over {runs['this tree'][0]['steps']} steps of the shipped samples; "
          f"{opts.threads} threads, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print(f"{'code':<28} {'plain ms':>9} {'voice_leading ms':>17}")
    for name, rs in runs.items():
        med = lambda k: statistics.median(r[k] for r in rs)
        print(f"{name:<28} {med('plain'):>9.2f} {med('voice_leading'):>17.2f}")


if __name__ == "__main__":
    main()
