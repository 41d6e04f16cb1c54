"""CPU training settings side by side on real data: float32 vs bf16 autocast, torch.compile, threads, batch x block.

python bench/bench_cpu.py --data_dir=data/demo/bin [--steps 200] [--key=value model overrides]

Every setting trains the same model from the same initial weights on the same token budget per step, drawn with the
same seed, so the loss at the last step compares precision and compilation honestly (shapes change what a step sees;
their losses are comparable only in tokens seen). Prints tokens/s (after a warm-up) and the mean loss of the last
10 steps. The model defaults to the ~6M-parameter MoE that the embedded corpus supports (models/corpus/MODEL.md).
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import configurator  # noqa: E402
from model import GPT, MODEL_KEYS, GPTConfig, autocast  # noqa: E402
from dataset import get_batch, read_data  # noqa: E402

CORPUS_SIZE = dict(n_layer=4, n_head=4, n_embd=256, kv_lora_rank=128, qk_nope_head_dim=32, qk_rope_head_dim=32,
                   v_head_dim=64, n_shared_experts=1, n_routed_experts=4, top_k_experts=1, expert_hidden=512,
                   dropout=0.0, bias_update_speed=0.001)
# (name, dtype, compiled, threads, batch, block): 4,096 tokens a step in each
SETTINGS = [
    ("float32", torch.float32, False, 2, 16, 256),
    ("bf16 autocast", torch.bfloat16, False, 2, 16, 256),
    ("float32 + compile", torch.float32, True, 2, 16, 256),
    ("bf16 + compile", torch.bfloat16, True, 2, 16, 256),
    ("bf16, 1 thread", torch.bfloat16, False, 1, 16, 256),
    ("bf16, 32 x 128", torch.bfloat16, False, 2, 32, 128),
    ("bf16, 8 x 512", torch.bfloat16, False, 2, 8, 512),
]


def run(setting, cfg, data, steps, lr):
    name, dtype, compiled, threads, batch, block = setting
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**vars(cfg), "block_size": block}), verbose=False)
    step_model = torch.compile(model) if compiled else model
    opt = model.configure_optimizers(0.03, lr, (0.9, 0.95), "cpu")
    g = torch.Generator().manual_seed(1)
    losses, t0 = [], None
    for it in range(steps):
        if it == 5:  # after warm-up and compilation
            t0 = time.perf_counter()
        starts = torch.randint(len(data) - block - 1, (batch,), generator=g).tolist()
        x, y = get_batch(data, block, starts, "cpu")
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (it + 1) / 20)
        with autocast("cpu", dtype):
            _, loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.update_moe_biases()
        losses.append(loss.item())
    tps = batch * block * (steps - 5) / (time.perf_counter() - t0)
    return name, tps, float(np.mean(losses[-10:])), model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--only", help="comma-separated setting numbers to run (1-based), default all")
    opts = configurator.cli(parser, MODEL_KEYS + ["data_dir", "learning_rate"])
    given = {k: getattr(opts, k) for k in opts.given if k in MODEL_KEYS}
    splits, meta, _ = read_data(opts.data_dir)
    cfg = GPTConfig(vocab_size=meta["vocab_size"], **{**{k: getattr(opts, k) for k in MODEL_KEYS}, **CORPUS_SIZE,
                                                      **given})
    picked = [SETTINGS[int(i) - 1] for i in opts.only.split(",")] if opts.only else SETTINGS
    rows = [run(s, cfg, splits["train"], opts.steps, opts.learning_rate if "learning_rate" in opts.given else 2e-3)
            for s in picked]
    model = rows[0][3]
    print(f"\nCPU ({torch.get_num_threads()} threads max), torch {torch.__version__}, {opts.data_dir}, "
          f"{model.num_params() / 1e6:.1f}M params ({model.num_params(True) / 1e6:.1f}M active), {opts.steps} steps")
    print(f"{'setting':22} {'tokens/s':>10} {'loss, last 10 steps':>20}")
    for name, tps, loss, _ in rows:
        print(f"{name:22} {tps:10,.0f} {loss:20.4f}")


if __name__ == "__main__":
    main()
