"""CPU training speed path by path on real data: the default path (dtype=auto), float32, bf16 autocast, float32 with
bf16 matmuls (oneDNN; AMX's tiles where the CPU has them), and the code of an earlier commit (--before REV), side by
side.

python bench/bench_cpu.py --data_dir=data/demo/bin [--steps 200] [--rounds 2] [--before REV] [--only 1,2]
                          [--size corpus|config] [--batch 16] [--block 256] [--key=value model overrides]

Within a round every row trains the same model from the same initial weights on the same batches (the round's seed:
0, 1, ...; the same tokens per step), in a process of its own set up the way train.py sets up a CPU
(runs.pick_device): process-wide settings and an earlier commit's modules stay in their row. The rows take turns for
--rounds rounds, since a shared machine's speed drifts by 10-20 % over minutes; the table gives each row's median
tokens/s (timed after 5 warm-up steps) and the loss of its last 10 steps (their mean), averaged over the rounds' seeds
and per seed: after 200 steps, rounding alone moves one seed's loss by a few hundredths of a nat, so compare means.
--size corpus is the shipped model's shape (config.PRESETS["corpus"]), --size config is config.py's own model, the
original implementation's configuration (it was compared at --batch 4).
"""
import argparse
import dataclasses
import inspect
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (name, dtype, GPTConfig overrides, oneDNN's float32 matmul precision: None leaves runs.pick_device's); "{auto}" is
# filled with what dtype=auto picks on this machine. "bf16" matmul precision keeps every tensor float32 and rounds a
# matmul's inputs to bf16 inside oneDNN (AMX's tiles where the CPU has them): the CPU's counterpart of TF32 on a GPU.
ROWS = [
    ("default (dtype=auto: {auto})", "auto", {}, None),
    ("float32", "float32", {}, "none"),
    ("float32, tanh GELU (the first models')", "float32", {"gelu_approximate": "tanh"}, "none"),
    ("bf16 autocast", "bfloat16", {}, "none"),
    ("float32, bf16 matmuls (oneDNN)", "float32", {}, "bf16"),
]


def train_row(spec):
    """One row, in its own process: train spec["steps"] steps with the modules of spec["tree"]; print a JSON line."""
    sys.path.insert(0, spec["tree"])
    import numpy as np
    import torch
    from dataset import get_batch, read_data
    from model import GPT, GPTConfig, autocast
    from runs import pick_device
    shape = {"width": spec["model"]["n_embd"], "window": spec["block"]}
    takes = inspect.signature(pick_device).parameters  # (an earlier commit's may not take them)
    _, dtype = pick_device("cpu", spec["dtype"], training=True, **{k: v for k, v in shape.items() if k in takes})
    torch.set_num_threads(spec["threads"])
    if spec["matmul"]:
        torch.backends.mkldnn.matmul.fp32_precision = spec["matmul"]
    splits, _, _ = read_data(spec["data_dir"])
    data, batch, block, lr = splits["train"], spec["batch"], spec["block"], spec["learning_rate"]
    torch.manual_seed(spec["seed"])
    known = {f.name for f in dataclasses.fields(GPTConfig)}  # an earlier commit's model may lack newer fields
    model = GPT(GPTConfig(**{k: v for k, v in spec["model"].items() if k in known}), verbose=False)
    opt = model.configure_optimizers(0.03, lr, (0.9, 0.95), "cpu")
    g = torch.Generator().manual_seed(spec["seed"] + 1)
    losses, t0 = [], None
    for it in range(spec["steps"]):
        if it == 5:  # after warm-up
            t0 = time.perf_counter()
        starts = torch.randint(len(data) - block - 1, (batch,), generator=g).tolist()
        x, y = get_batch(data, block, starts, "cpu")
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (it + 1) / 20)
        with autocast("cpu", dtype):
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.update_moe_biases()
        losses.append(loss.item())
    tps = batch * block * (spec["steps"] - 5) / (time.perf_counter() - t0)
    print(json.dumps({"tokens_per_s": tps, "loss": float(np.mean(losses[-10:])), "params": model.num_params(),
                      "active": model.num_params(active=True), "torch": torch.__version__}))


def run_row(spec):
    out = subprocess.run([sys.executable, __file__, "--row", json.dumps(spec)], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"row {spec['name']!r} failed:\n{out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def checkout(rev, into):
    """The files of commit `rev` (git archive), unpacked into the folder `into`; returns it as a string."""
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True)
    if tar.returncode:
        sys.exit(f"--before {rev}: {tar.stderr.decode().strip()}")
    path = Path(into) / "tree"
    path.mkdir()
    with tempfile.TemporaryFile() as f:
        f.write(tar.stdout)
        f.seek(0)
        tarfile.open(fileobj=f).extractall(path, filter="data")
    return str(path)


def main():
    if sys.argv[1:2] == ["--row"]:
        return train_row(json.loads(sys.argv[2]))
    sys.path.insert(0, str(ROOT))
    import config
    import configurator
    from dataset import read_data
    from model import MODEL_KEYS
    from runs import pick_device
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=configurator.typed("steps", 200), default=200)
    parser.add_argument("--rounds", type=configurator.typed("rounds", 2), default=2)
    parser.add_argument("--only", help="comma-separated row numbers to run (1-based), default all")
    parser.add_argument("--before", metavar="REV", help="add a row of the default path (dtype=auto, as commit REV "
                        "picks it) that runs the code of commit REV")
    parser.add_argument("--size", choices=("corpus", "config"), default="corpus")
    parser.add_argument("--batch", type=configurator.typed("batch_size", 16), default=16)
    parser.add_argument("--block", type=configurator.typed("block_size", 256), default=256)
    parser.add_argument("--threads", type=configurator.typed("threads", 2), default=2)
    opts = configurator.cli(parser, MODEL_KEYS + ["data_dir", "learning_rate"])
    if opts.steps < 16:
        sys.exit(f"--steps wants at least 16 (5 warm-up steps and 10 for the loss), got {opts.steps}")
    model = {k: getattr(opts, k) for k in MODEL_KEYS}  # config.py's own model, with the overrides given
    if opts.size == "corpus":
        model.update({k: v for k, v in config.PRESETS["corpus"].items() if k in MODEL_KEYS and k not in opts.given})
    _, meta, _ = read_data(opts.data_dir)
    model.update(vocab_size=meta["vocab_size"], block_size=opts.block, dropout=0.0)
    import torch
    auto_dtype = pick_device("cpu", "auto", training=True, width=model["n_embd"], window=opts.block)[1]
    auto = (str(auto_dtype)[6:], torch.backends.mkldnn.matmul.fp32_precision)
    label = auto[0] + ", bf16 matmuls" * (auto[1] == "bf16")
    rows = [(name.format(auto=label), dtype, extra, matmul, str(ROOT)) for name, dtype, extra, matmul in ROWS]
    if opts.only:
        picked = [int(i) for i in opts.only.split(",") if i.isdigit()]
        if len(picked) != len(opts.only.split(",")) or not all(1 <= i <= len(rows) for i in picked):
            sys.exit(f"--only wants row numbers from 1 to {len(rows)}, comma-separated, got {opts.only!r}")
        rows = [rows[i - 1] for i in picked]
    default = rows[0][0] if rows[0][1] == "auto" else None
    base = dict(data_dir=opts.data_dir, steps=opts.steps, batch=opts.batch, block=opts.block, threads=opts.threads,
                learning_rate=opts.learning_rate if "learning_rate" in opts.given else 2e-3)
    results = {name: [] for name, *_ in rows}
    with tempfile.TemporaryDirectory() as tmp:
        if opts.before:
            rows.append((f"default at {opts.before}", "auto", {}, None, checkout(opts.before, tmp)))
            results[rows[-1][0]] = []
        for r in range(opts.rounds):
            for name, dtype, extra, matmul, tree in rows:
                if default and name != default and ((dtype, matmul), extra, tree) == (auto, {}, str(ROOT)):
                    results[name].append(dict(results[default][r], same=True))  # the default row's path
                    continue
                res = run_row({**base, "name": name, "dtype": dtype, "tree": tree, "model": {**model, **extra},
                               "matmul": matmul, "seed": r})
                results[name].append(res)
                print(f"round {r + 1}: {name}: {res['tokens_per_s']:,.0f} tokens/s, loss {res['loss']:.4f}",
                      file=sys.stderr, flush=True)
    first = next(iter(results.values()))[0]
    print(f"\nCPU, {opts.threads} threads, torch {first['torch']}, {opts.data_dir}, {first['params'] / 1e6:.1f}M "
          f"params ({first['active'] / 1e6:.1f}M active), batch {opts.batch} x {opts.block}, {opts.steps} steps, "
          f"{opts.rounds} rounds")
    median = {name: statistics.median(r["tokens_per_s"] for r in res) for name, res in results.items()}
    before = median[rows[-1][0]] if opts.before else None
    print(f"{'setting':42} {'tokens/s':>9} {'rounds':>20}  {'loss: mean (per seed)':24}" + "  vs before" * bool(before))
    for name, res in results.items():
        rounds = "same path as default" if res[0].get("same") else " ".join(f"{r['tokens_per_s']:,.0f}" for r in res)
        seeds = " ".join(f"{r['loss']:.3f}" for r in res)
        loss = f"{statistics.mean(r['loss'] for r in res):.4f} ({seeds})"
        ratio = f"  {median[name] / before:9.2f}x" if before else ""
        print(f"{name:42} {median[name]:9,.0f} {rounds:>20}  {loss:24}{ratio}")

if __name__ == "__main__":
    main()
