"""Training speed: ms/step, tokens/s, true MFU and peak memory on random tokens, variants side by side.

python bench/bench_train.py [--key=value ...]   (any model field of config.py, plus the options below)

On CUDA: the default config, bf16 autocast, batch 32 x 512; the MoE dispatch variants of model.MoE in eager mode,
then the grouped one under torch.compile, with the whole step recorded as one CUDA graph (what a launch-bound step
would gain; train.py does not record one) and with torch's F.rms_norm in place of model.RMSNormFunction. On CPU: a
tiny config (override anything) in float32, compile only with --compile_too. MFU uses GPT.flops_per_token's count.
--profile then profiles a few eager steps of the grouped dispatch: the operations that take the most device and
host time, and how busy the device was (what bounds a step).
"""
import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import configurator  # noqa: E402
from model import GPT, MODEL_KEYS, GPTConfig, MoE, RMSNorm, autocast, record_cuda_graph  # noqa: E402

own_norm = RMSNorm.forward  # model.py's: RMSNormFunction's hand-written backward in training


def composite_norm(self, x):
    """torch's RMSNorm in float32, as RMSNormFunction computes it."""
    return F.rms_norm(x.float(), self.weight.shape, self.weight, torch.finfo(torch.float32).eps).to(x.dtype)


CPU_TINY = dict(n_layer=2, n_head=4, n_embd=128, kv_lora_rank=64, qk_nope_head_dim=16, qk_rope_head_dim=16,
                v_head_dim=32, expert_hidden=512, block_size=128)


def setup(parser):
    """Parse --key=value model overrides: the default config in bf16 on CUDA, CPU_TINY in float32 on the CPU.
    Returns (options, GPTConfig, device, dtype, device name)."""
    parser.add_argument("--vocab_size", type=int, default=395)
    opts = configurator.cli(parser, MODEL_KEYS)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    values = {k: getattr(opts, k) for k in MODEL_KEYS}
    if device == "cpu":
        given = {k for k in MODEL_KEYS if f"--{k}" in " ".join(sys.argv)}
        values.update({k: v for k, v in CPU_TINY.items() if k not in given})
    cfg = GPTConfig(vocab_size=opts.vocab_size, **{**values, "dropout": 0.0})
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return opts, cfg, device, dtype, torch.cuda.get_device_name() if device == "cuda" else "CPU"


def train_step(model, batch, block, vocab, device, dtype, how="eager"):
    """A function that runs one training step of `model` (forward, backward, clipping, AdamW, the MoE biases) on a
    fixed random batch: eagerly, under torch.compile ("compile"), or recorded once as a CUDA graph and replayed
    ("graph"; AdamW capturable, so its step count stays on the device)."""
    torch.manual_seed(0)
    step_model = torch.compile(model) if how == "compile" else model
    opt = model.configure_optimizers(0.03, 3e-4, (0.9, 0.95), device)
    x = torch.randint(0, vocab, (batch, block + 1), device=device)
    if how == "graph":
        for group in opt.param_groups:
            group["capturable"] = True
    # (a graph records autocast's casts of the weights as they are: its cache of cast weights stays off)
    precision = torch.autocast(device, dtype, cache_enabled=False) if how == "graph" else autocast(device, dtype)

    def step():
        with precision:
            _, loss = step_model(x[:, :-1], x[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=how != "graph")  # a graph's gradients are its own tensors, written anew each replay
        model.update_moe_biases()
    if how != "graph":
        return step
    graph, _ = record_cuda_graph(step, device, warmups=3)
    return graph.replay


def bench(model, batch, block, vocab, steps, device, dtype, how):
    step = train_step(model, batch, block, vocab, device, dtype, how)
    for _ in range(3):  # warm-up (and compilation)
        step()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = (time.perf_counter() - t0) / steps
    mfu = model.estimate_mfu(batch * block, dt)
    mem = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return dt * 1e3, batch * block / dt, mfu, mem


def profile_steps(model, batch, block, vocab, device, dtype, steps=5):
    """Print what a training step spends its time on: torch.profiler over `steps` eager steps after a warm-up."""
    from torch.profiler import ProfilerActivity, profile
    MoE.dispatch = "grouped"
    step = train_step(model, batch, block, vocab, device, dtype)
    for _ in range(3):
        step()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    with profile(activities=[ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * (device == "cuda")) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        wall = (time.perf_counter() - t0) / steps
    events = prof.key_averages()
    print(f"\nprofile of {steps} eager steps (grouped dispatch): {wall * 1e3:.1f} ms a step under the profiler")
    if device == "cuda":
        print(events.table(sort_by="self_device_time_total", row_limit=15, max_name_column_width=50))
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(e.time_range.elapsed_us() for e in kernels) / 1e3 / steps  # ms a step
        print(f"a step: {wall * 1e3:.1f} ms of wall time, {busy:.1f} ms of kernels ({busy / (wall * 1e3):.0%} busy), "
              f"{len(kernels) / steps:.0f} kernel launches")
    print(events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=50))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--compile_too", action="store_true", help="also time torch.compile on CPU")
    parser.add_argument("--dispatch", default="grouped,loop,dense", help="MoE dispatch variants to time (eager)")
    parser.add_argument("--profile", action="store_true", help="then profile a few eager steps (grouped dispatch)")
    opts, cfg, device, dtype, name = setup(parser)
    batch = opts.batch_size or (32 if device == "cuda" else 8)
    model = GPT(cfg).to(device)
    variants = [(d, "eager", own_norm) for d in opts.dispatch.split(",")]
    variants += [("grouped", "compile", own_norm)] if device == "cuda" or opts.compile_too else []
    # (the last row: torch's own RMSNorm, fused kernels on CUDA, in place of RMSNormFunction's several)
    variants += [("grouped", "graph", own_norm), ("grouped", "eager", composite_norm)] if device == "cuda" else []
    print(f"\n{name}, torch {torch.__version__}, {str(dtype).removeprefix('torch.')}, "
          f"batch {batch} x {cfg.block_size}, {model.num_params() / 1e6:.1f}M params "
          f"({model.num_params(True) / 1e6:.1f}M active), {model.flops_per_token() / 1e6:.1f} MFLOP/token")
    print(f"{'MoE dispatch':22} {'ms/step':>9} {'tokens/s':>11} {'MFU':>7} {'peak GiB':>9}", flush=True)
    for dispatch, how, norm in variants:  # a row as each is measured: a compile that hangs keeps the rows before it
        MoE.dispatch, RMSNorm.forward = dispatch, norm
        label = (dispatch + {"eager": "", "compile": " + compile", "graph": " + CUDA graph"}[how]
                 + ", F.rms_norm" * (norm is composite_norm))
        try:
            ms, tps, mfu, mem = bench(model, batch, cfg.block_size, cfg.vocab_size, opts.steps, device, dtype, how)
        except RuntimeError as e:  # (a step that cannot be recorded says why, and the rows after it still run)
            print(f"{label:22} failed: {str(e).strip().splitlines()[0][:200]}", flush=True)
            continue
        finally:
            RMSNorm.forward = own_norm
        print(f"{label:22} {ms:9.1f} {tps:11,.0f} {'n/a' if mfu is None else f'{mfu:.1%}':>7} {mem:9.1f}", flush=True)
    if opts.profile:
        profile_steps(model, batch, cfg.block_size, cfg.vocab_size, device, dtype)


if __name__ == "__main__":
    main()
