"""Generation speed at batch 1, 8, 32: tokens/s with the latent cache (on CUDA also with each decode step a CUDA graph,
model.DecodeGraph) vs recomputing the whole window, and the cache's bytes per token vs a plain multi-head cache.

python bench/bench_generate.py [--new_tokens 512] [--key=value ...]   (any model field of config.py)

On CUDA: the default config in bf16. On CPU: the tiny config of bench_train.py in float32, fewer tokens.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_train import setup  # noqa: E402
from model import GPT, LatentCache, sample_logits  # noqa: E402


@torch.no_grad()
def recompute(model, idx, new_tokens):
    """The no-cache baseline: every new token runs the whole (sliding) window again."""
    for _ in range(new_tokens):
        logits, _ = model(idx[:, -model.cfg.block_size:])
        idx = torch.cat([idx, sample_logits(logits[:, -1].float(), 1.0, 100)[:, None]], dim=1)
    return idx


def timed(fn, device):
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new_tokens", type=int)
    parser.add_argument("--prompt_tokens", type=int, default=16)
    parser.add_argument("--batch_sizes", default=None, help="comma-separated (default 1,8,32 on CUDA, 1,8 on CPU)")
    opts, cfg, device, dtype, name = setup(parser)
    new = opts.new_tokens or (512 if device == "cuda" else 128)
    batches = [int(b) for b in (opts.batch_sizes or ("1,8,32" if device == "cuda" else "1,8")).split(",")]
    torch.manual_seed(0)
    model = GPT(cfg).to(device, dtype).eval()
    latent, mha = LatentCache.bytes_per_token(cfg, dtype)
    print(f"\n{name}, torch {torch.__version__}, {str(dtype).removeprefix('torch.')}, {new} new tokens after "
          f"{opts.prompt_tokens}; cache {latent} bytes/token (all layers) vs {mha} for plain multi-head K/V "
          f"({mha / latent:.1f}x smaller)")
    graphs = device == "cuda"
    print(f"{'batch':>5} {'latent cache tok/s':>19}" + f" {'+ CUDA graph tok/s':>19}" * graphs
          + f" {'recompute tok/s':>16} {'speed-up':>9}", flush=True)
    for B in batches:  # a row as each is measured: a slow device keeps the rows before it
        idx = torch.randint(0, cfg.vocab_size, (B, opts.prompt_tokens), device=device)
        model.generate(idx, 8, top_k=100)  # warm-up
        cached = [B * new / timed(lambda: model.generate(idx, new, top_k=100), device)]
        if graphs:  # (recording the graph is part of each call, as it is of sampling)
            model.generate(idx, 8, top_k=100, graph=True)
            cached.append(B * new / timed(lambda: model.generate(idx, new, top_k=100, graph=True), device))
        b = B * new / timed(lambda: recompute(model, idx, new), device)
        print(f"{B:5}" + "".join(f" {a:19,.0f}" for a in cached) + f" {b:16,.0f} {max(cached) / b:8.1f}x", flush=True)


if __name__ == "__main__":
    main()
