"""`python augment_all.py` as a user runs it, whole, timed: this tree against an earlier commit's code (--before REV)
on the same encodings, in turns, and whether both write the same variants, byte for byte.

python bench/bench_augment.py [DIR] [--before REV] [--rounds 2] [--num_processes 2] [-- augment_all.py args]

DIR defaults to the demo's encodings (data/demo/text, which `make demo` writes: 1,456 pieces, 155,792 variants).
Each row runs augment_all.py in a fresh process into a temporary folder; the rows take turns for --rounds rounds
(a shared machine's speed drifts), and the table gives each row's median and all its times.
"""
import argparse
import filecmp
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import checkout  # noqa: E402


def same_files(a, b):
    """Whether folders a and b hold the same files with the same bytes."""
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)[1:] != ([], []):
        return False
    return all(same_files(Path(a) / d, Path(b) / d) for d in cmp.common_dirs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", nargs="?", default=str(ROOT / "data/demo/text"), help="a folder of encodings")
    parser.add_argument("--before", metavar="REV", help="also time this commit's augment_all.py")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--num_processes", type=int, default=2)
    opts, extra = parser.parse_known_args()
    if not Path(opts.dir).is_dir():
        sys.exit(f"{opts.dir}: no such folder of encodings (`make demo` writes data/demo/text)")
    args = ["--input_dirs", str(Path(opts.dir).resolve()), "--num_processes", str(opts.num_processes),
            *[a for a in extra if a != "--"]]
    with tempfile.TemporaryDirectory() as tmp:
        rows = {"this tree": str(ROOT)}
        if opts.before:
            rows[f"before ({opts.before})"] = checkout(opts.before, tmp)
        times, lines = {name: [] for name in rows}, {}
        for r in range(opts.rounds):
            for k, (name, tree) in enumerate(rows.items()):
                out = Path(tmp) / f"aug{k}"
                shutil.rmtree(out, ignore_errors=True)  # (the script resumes: each round from nothing)
                t0 = time.perf_counter()
                run = subprocess.run([sys.executable, str(Path(tree) / "augment_all.py"), *args, "--output_dir",
                                      str(out)], capture_output=True, text=True)
                times[name].append(time.perf_counter() - t0)
                if run.returncode:
                    sys.exit(f"augment_all.py from {tree} failed:\n{run.stderr.strip()}")
                lines[name] = run.stdout.strip().splitlines()[-1]
                print(f"round {r + 1}: {name}: {times[name][-1]:.1f} s", flush=True)
        same = same_files(Path(tmp) / "aug0", Path(tmp) / "aug1") if opts.before else None
    print(f"\naugment_all.py {' '.join(args[2:])} on {opts.dir}; {time.strftime('%Y-%m-%d')}")
    print(f"{'code':<28} {'median s':>9}  all runs  | what it wrote")
    for name, t in times.items():
        print(f"{name:<28} {statistics.median(t):>9.1f}  {', '.join(f'{x:.1f}' for x in t)}  | {lines[name]}")
    if same is not None:
        print(f"the same variants, byte for byte: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
