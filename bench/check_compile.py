"""Is a torch.compile'd training step the eager one? Loss and every parameter's gradient after one step on the same
batch, eager against compiled, per MoE dispatch, beside the gap between two eager dispatches (the rounding noise).

python bench/check_compile.py [--batch_size 8] [--key=value ...]   (any model field of config.py)

On CUDA: the default config in bf16 autocast; on CPU the tiny config of bench_train.py in float32 (where compile
takes the loop dispatch). A gradient gap far above the noise row means the compiled step trains another model. The
last row swaps model.py's RMSNormFunction (a hand-written backward) for torch's composite F.rms_norm under compile,
to see whether it is the cause.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import composite_norm, setup  # noqa: E402
from model import GPT, MoE, RMSNorm, autocast  # noqa: E402


def one_step(model, x, device, dtype, compiled, dispatch, norm=RMSNorm.forward):
    """(loss, {name: grad}) of one forward and backward pass."""
    MoE.dispatch, RMSNorm.forward = dispatch, norm
    model.zero_grad(set_to_none=True)
    step_model = torch.compile(model) if compiled else model
    with autocast(device, dtype):
        _, loss = step_model(x[:, :-1], x[:, 1:])
    loss.backward()
    for m in model.moe_layers():
        m.load.zero_()
    return loss.item(), {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}


def gap(a, b):
    """(largest relative gradient difference ||ga - gb|| / ||ga|| over the parameters, its parameter, missing grads)."""
    worst = max(((torch.linalg.vector_norm(a[n] - b[n]) / torch.linalg.vector_norm(a[n]).clamp(min=1e-12)).item(), n)
                for n in a if n in b)
    return worst, sorted(set(a) ^ set(b))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=8)
    opts, cfg, device, dtype, name = setup(parser)
    torch.manual_seed(0)
    model = GPT(cfg, verbose=False).to(device)
    x = torch.randint(0, cfg.vocab_size, (opts.batch_size, cfg.block_size + 1), device=device)
    ref_loss, ref = one_step(model, x, device, dtype, False, "grouped")
    print(f"\n{name}, torch {torch.__version__}, {str(dtype).removeprefix('torch.')}, batch {opts.batch_size} x "
          f"{cfg.block_size}: against eager grouped (loss {ref_loss:.5f})")
    print(f"{'step':22} {'loss':>9} {'worst grad gap':>15}  parameter / grads missing on one side")
    own = RMSNorm.forward  # model.py's, with its hand-written backward
    for label, compiled, dispatch, norm in [("eager dense (noise)", False, "dense", own),
                                            ("compiled grouped", True, "grouped", own),
                                            ("compiled loop", True, "loop", own),
                                            ("compiled dense", True, "dense", own),
                                            ("compiled, F.rms_norm", True, "grouped", composite_norm)]:
        try:
            loss, grads = one_step(model, x, device, dtype, compiled, dispatch, norm)
        except Exception as e:  # a variant that does not compile is a row, not the end of the check
            print(f"{label:22} failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
            continue
        (worst, where), missing = gap(ref, grads)
        print(f"{label:22} {loss:9.5f} {worst:15.2e}  {where} {missing or ''}", flush=True)
        torch._dynamo.reset()


if __name__ == "__main__":
    main()
