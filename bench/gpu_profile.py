"""What bounds generation at batch 1: a profile of the latent-cache decode loop, the default config in bf16.

python bench/gpu_profile.py [--new_tokens 128] [--graph] [--key=value ...]   (any model field of config.py)

Prints the ops that take the most host time and the most device time, and per new token: host milliseconds, device
milliseconds and kernel launches. Where host time per token far exceeds device time, the loop is bound by Python and
launch overhead, not by the GPU; --graph replays each decode step as one CUDA graph (model.DecodeGraph).
"""
import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import setup  # noqa: E402
from model import GPT  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--graph", action="store_true", help="each decode step a CUDA graph (CUDA only)")
    opts, cfg, device, dtype, name = setup(parser)
    torch.manual_seed(0)
    model = GPT(cfg, verbose=False).to(device, dtype).eval()
    idx = torch.randint(0, cfg.vocab_size, (1, 16), device=device)
    if opts.graph and device != "cuda":
        sys.exit("--graph records CUDA graphs: it wants a CUDA device")
    model.generate(idx, 16, top_k=100, graph=opts.graph)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        model.generate(idx, opts.new_tokens, top_k=100, graph=opts.graph)
        if device == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    print(f"\n{name}, torch {torch.__version__}, {str(dtype).removeprefix('torch.')}, batch 1, {opts.new_tokens} new "
          f"tokens{', each step a CUDA graph' * opts.graph}: {opts.new_tokens / wall:,.0f} tokens/s under the profiler")
    print(events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40))
    if device == "cuda":
        print(events.table(sort_by="self_device_time_total", row_limit=8, max_name_column_width=40))
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(e.time_range.elapsed_us() for e in kernels) / 1e3  # ms
        print(f"per new token: {wall * 1e3 / opts.new_tokens:.2f} ms of wall time, {busy / opts.new_tokens:.3f} ms of "
              f"kernels, {len(kernels) / opts.new_tokens:.0f} kernel launches")


if __name__ == "__main__":
    main()
