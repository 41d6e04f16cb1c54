import math
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import model
from model import (GPT, CPUAttention, DecodeGraph, GPTConfig, LatentCache, MoE, RMSNorm, RMSNormFunction, apply_rope,
                   model_args, pad_groups, rope_angles, sample_logits)
from runs import load_checkpoint


def tiny(**kw):
    base = dict(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_embd=32, kv_lora_rank=16, qk_nope_head_dim=8,
                qk_rope_head_dim=8, v_head_dim=16, n_shared_experts=1, n_routed_experts=4, top_k_experts=2,
                expert_hidden=64, dropout=0.0)
    return GPTConfig(**{**base, **kw})


@pytest.mark.parametrize("q_lora_rank", [0, 16])
def test_latent_cache_decoding_matches_full_forward(q_lora_rank):
    torch.manual_seed(0)
    model = GPT(tiny(q_lora_rank=q_lora_rank), verbose=False).eval()
    idx = torch.randint(0, 50, (2, 24))
    full, _ = model(idx)
    cache = LatentCache(model.cfg, 2, 32, "cpu", torch.float32)
    step, _ = model(idx[:, :5], cache=cache, pos=0)                 # prefill, plain path
    torch.testing.assert_close(step[:, -1], full[:, 4], atol=1e-5, rtol=1e-5)
    for t in range(5, 20):                                          # decode, absorbed path
        step, _ = model(idx[:, t:t + 1], cache=cache, pos=t)
        torch.testing.assert_close(step[:, -1], full[:, t], atol=1e-5, rtol=1e-5)
    step, _ = model(idx[:, 20:24], cache=cache, pos=20)             # several new tokens at once, absorbed
    torch.testing.assert_close(step[:, -1], full[:, 23], atol=1e-5, rtol=1e-5)


def test_a_decode_step_at_a_tensor_position_is_the_plain_step():
    """DecodeGraph's step (the position a tensor, the whole cache attended with the later positions masked) gives
    the plain step's logits and cache, though the positions after it hold what an earlier window left there."""
    torch.manual_seed(0)
    model = GPT(tiny(), verbose=False).eval()
    idx = torch.randint(0, 50, (2, 20))
    caches = [LatentCache(model.cfg, 2, 32, "cpu", torch.float32) for _ in range(2)]
    for cache in caches:
        torch.manual_seed(1)
        cache.kv.normal_(), cache.pe.normal_()  # a slid window's stale latents
        model(idx[:, :5], cache=cache, pos=0)
    for t in range(5, 20):
        plain, _ = model(idx[:, t:t + 1], cache=caches[0], pos=t)
        static, _ = model(idx[:, t:t + 1], cache=caches[1], pos=torch.tensor(t))
        torch.testing.assert_close(static, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(caches[1].kv, caches[0].kv, atol=1e-5, rtol=1e-5)  # (the layers above round apart)
    torch.testing.assert_close(caches[1].pe, caches[0].pe, atol=1e-5, rtol=1e-5)


def test_generate_with_the_graphs_step_draws_what_it_draws_without(monkeypatch):
    """generate(graph=True)'s loop on a CPU: DecodeGraph's step run as it is recorded (the position a tensor, and
    position 0 written before the prefill), without the recording, which needs CUDA (the next test). The same tokens
    through given tokens and slides of the window, and every single new token through the step."""
    class Unrecorded:
        def __init__(self, net, cache, batch_size):
            self.net, self.cache, self.calls = net, cache, []
            net(torch.zeros(batch_size, 1, dtype=torch.long), cache=cache, pos=torch.tensor(0))
            steps.append(self)

        def __call__(self, token, pos):
            self.calls.append(pos)
            return self.net(token, cache=self.cache, pos=torch.tensor(pos))[0]

    steps, drawn = [], []  # (the logits of every draw, to compare: a random model's greedy tokens hardly heed them)
    monkeypatch.setattr(model, "DecodeGraph", Unrecorded)
    monkeypatch.setattr(model, "sample_logits", lambda logits, *a: drawn.append(logits) or sample_logits(logits, *a))
    torch.manual_seed(0)
    net = GPT(tiny(), verbose=False).eval()
    idx = torch.randint(1, 50, (3, 4))
    forced = [-1] * 10 + [7, 8, 9] + [-1] * 20 + [5]  # a run of three given tokens, then a single one
    plain = net.generate(idx, 60, temperature=0, keep=2, forced=forced)
    plain_logits, drawn[:] = drawn[:], []
    assert torch.equal(net.generate(idx, 60, temperature=0, keep=2, forced=forced, graph=True), plain)
    torch.testing.assert_close(drawn, plain_logits, atol=1e-5, rtol=1e-5)
    calls = steps[0].calls
    assert len(calls) > 40 and max(calls) == 31 and calls.count(31) > 1  # up to the window's end, after slides
    monkeypatch.undo()
    with pytest.raises(ValueError, match="CUDA device, not cpu"):
        net.generate(idx, 4, graph=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_generate_with_a_cuda_graph_draws_what_it_draws_without():
    """The same tokens greedily with and without DecodeGraph, through given tokens and two slides of the window; in
    bf16 autocast a replayed step's logits are the plain step's, and a replay makes no host sync."""
    torch.manual_seed(0)
    model = GPT(tiny(), verbose=False).cuda().eval()
    idx = torch.randint(0, 50, (3, 4), device="cuda")
    forced = [-1] * 10 + [7, 8, 9] + [-1] * 20 + [5]  # a run of three given tokens, then a single one
    plain = model.generate(idx, 60, temperature=0, keep=2, forced=forced)
    assert torch.equal(model.generate(idx, 60, temperature=0, keep=2, forced=forced, graph=True), plain)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        caches = [LatentCache(model.cfg, 3, 32, "cuda", torch.bfloat16) for _ in range(2)]
        step = DecodeGraph(model, caches[1], 3)
        for cache in caches:
            model(idx, cache=cache, pos=0)
        expected, _ = model(idx[:, :1], cache=caches[0], pos=4)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            got = step(idx[:, :1], 4)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        torch.testing.assert_close(got, expected, atol=2e-2, rtol=2e-2)


def test_mla_training_path_matches_the_equations():
    torch.manual_seed(0)
    cfg = tiny()
    attn = GPT(cfg, verbose=False).blocks[0].attn
    x = torch.randn(2, 10, cfg.n_embd)
    cos, sin = rope_angles(cfg, 0, 10, "cpu")
    H, nope, rope, dv = cfg.n_head, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
    q = (x @ attn.wq.weight.T).view(2, 10, H, nope + rope)
    kv = x @ attn.wkv_a.weight.T
    c = kv[..., :cfg.kv_lora_rank]
    c = c / torch.sqrt((c ** 2).mean(-1, keepdim=True) + torch.finfo(c.dtype).eps) * attn.kv_norm.weight
    k_r = apply_rope(kv[..., None, cfg.kv_lora_rank:], cos, sin)[:, :, 0]
    up = (c @ attn.wkv_b.weight.T).view(2, 10, H, nope + dv)
    outs = []
    for h in range(H):
        qh = torch.cat([q[:, :, h, :nope], apply_rope(q[:, :, h:h + 1, nope:], cos, sin)[:, :, 0]], -1)
        kh = torch.cat([up[:, :, h, :nope], k_r], -1)
        s = qh @ kh.transpose(1, 2) / math.sqrt(nope + rope)
        s = s.masked_fill(torch.ones(10, 10).triu(1).bool(), float("-inf"))
        outs.append(s.softmax(-1) @ up[:, :, h, nope:])
    ref = torch.cat(outs, -1) @ attn.wo.weight.T
    torch.testing.assert_close(attn(x, cos, sin), ref, atol=1e-5, rtol=1e-5)


def dense_moe(moe, x):
    """Every routed expert on every token, masked by the gate's pick: the reference for the sparse dispatch."""
    flat = x.reshape(-1, x.size(-1))
    weights, indices, _ = moe.gate(flat)
    out = moe.shared(flat)
    for e in range(moe.cfg.n_routed_experts):
        y = F.gelu(flat @ moe.w1[e], approximate=moe.cfg.gelu_approximate) @ moe.w2[e]
        w = (weights * (indices == e)).sum(-1, keepdim=True)
        out = out + w * y
    return out.view_as(x)


@pytest.mark.parametrize("dispatch", ["grouped", "loop", "dense"])
@pytest.mark.parametrize("top_k,gelu", [(1, "none"), (2, "tanh"), (3, "none")])
def test_sparse_moe_matches_dense_reference(top_k, gelu, dispatch):
    torch.manual_seed(0)
    moe = GPT(tiny(top_k_experts=top_k, gelu_approximate=gelu), verbose=False).blocks[0].ffn
    moe.dispatch = dispatch
    x = torch.randn(3, 7, 32)
    out, bal = moe(x)
    torch.testing.assert_close(out, dense_moe(moe, x), atol=1e-5, rtol=1e-5)
    assert bal.item() > 0


def test_pad_groups_puts_each_expert_at_a_multiple_of_its_rows():
    counts = torch.tensor([3, 0, 70, 64])
    expert = torch.repeat_interleave(torch.arange(4), counts)[torch.randperm(int(counts.sum()))]  # picks in any order
    grouped = torch.empty_like(expert).scatter_(0, expert.argsort(stable=True), torch.arange(len(expert)))
    rows, ends = pad_groups(grouped, counts, expert, multiple=64)
    assert ends.tolist() == [64, 64, 192, 256]
    starts = torch.tensor([0, 64, 64, 192])
    for e in range(4):  # each expert's picks fill its group from its start, in their order, and nothing else does
        mine = rows[expert == e]
        assert mine.tolist() == list(range(int(starts[e]), int(starts[e] + counts[e])))
    assert len(set(rows.tolist())) == len(rows)


def test_padded_expert_groups_change_no_output_and_no_gradient(monkeypatch):
    """With bf16 matmuls on a CPU the routed experts' rows are padded (stable matmul shapes for oneDNN): in float32
    the padded and the plain dispatch must give the same output and gradients."""
    monkeypatch.setattr(model, "bf16_matmuls", lambda: True)
    torch.manual_seed(0)
    moe = GPT(tiny(top_k_experts=2), verbose=False).blocks[0].ffn
    x = torch.randn(3, 7, 32, requires_grad=True)

    def output_and_grads():
        moe.zero_grad()
        x.grad = None
        out, bal = moe(x)
        (out.square().sum() + bal).backward()
        return [out.detach(), x.grad] + [p.grad for p in moe.parameters() if p.grad is not None]

    padded = output_and_grads()
    monkeypatch.setattr(model, "pad_groups", lambda rows, counts, expert: (rows, counts.cumsum(0)))
    plain = output_and_grads()
    assert len(padded) == len(plain) > 4
    for a, b in zip(padded, plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_experts_are_padded_only_where_cpu_matmuls_run_in_bf16(monkeypatch):
    import runs
    calls = []
    monkeypatch.setattr(model, "pad_groups", lambda *a: calls.append(1) or (a[0], a[1].cumsum(0)))
    moe = GPT(tiny(), verbose=False).blocks[0].ffn
    x = torch.randn(2, 9, 32)
    try:
        for dtype, amx in [("float32", True), ("auto", False), ("auto", True)]:
            monkeypatch.setattr(runs, "has_amx", lambda: amx)
            runs.pick_device("cpu", dtype, training=True)
            moe(x)
        assert len(calls) == 1 and torch.backends.mkldnn.matmul.fp32_precision == "bf16"  # auto with AMX
        runs.pick_device("cpu", "auto")  # to sample: float32 (decoding's shapes change every token)
        assert torch.backends.mkldnn.matmul.fp32_precision == "none"
        runs.pick_device("cpu", "auto", training=True)
        runs.pick_device("cpu", "float32")  # float32 throughout again
        assert torch.backends.mkldnn.matmul.fp32_precision == "none"
        with torch.autocast("cpu", dtype=torch.bfloat16):
            moe(x)
        assert len(calls) == 2
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = "none"


def test_auto_trains_in_bf16_autocast_on_amx_at_long_windows_or_large_widths(monkeypatch):
    """dtype=auto on a CPU: float32 without AMX and to sample; training with AMX, bf16 autocast on windows from
    runs.AUTOCAST_WINDOW up or at widths from runs.AUTOCAST_WIDTH up, else bf16 matmuls in float32 (measured:
    BENCHMARKS.md)."""
    import runs
    autocast, matmuls = (torch.bfloat16, "none"), (torch.float32, "bf16")
    try:
        for amx, training, width, window, (dtype, precision) in [
                (False, True, 256, 512, (torch.float32, "none")), (True, False, 256, 512, (torch.float32, "none")),
                (True, True, 128, 128, matmuls), (True, True, None, None, matmuls), (True, True, 256, 128, matmuls),
                (True, True, 128, runs.AUTOCAST_WINDOW - 1, matmuls),
                (True, True, runs.AUTOCAST_WIDTH - 1, 128, matmuls),
                (True, True, 128, runs.AUTOCAST_WINDOW, autocast), (True, True, None, 512, autocast),
                (True, True, runs.AUTOCAST_WIDTH, 128, autocast), (True, True, 768, None, autocast),
                (True, True, 256, 512, autocast)]:
            monkeypatch.setattr(runs, "has_amx", lambda: amx)
            assert runs.pick_device("cpu", "auto", training=training, width=width, window=window) == ("cpu", dtype)
            assert torch.backends.mkldnn.matmul.fp32_precision == precision, (amx, training, width, window)
            assert runs.pick_device("cpu", "float32", training=training, width=width, window=window) == (
                "cpu", torch.float32)
            assert torch.backends.mkldnn.matmul.fp32_precision == "none"  # an explicit dtype is kept
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = "none"


def test_sampling_takes_the_cores_other_work_leaves_idle(monkeypatch):
    """To sample on a CPU: a thread for each core that other work leaves idle (the machine's use of its CPUs over a
    tenth of a second, less this process's own), at least one, at most torch's own number as the process first asked;
    OMP_NUM_THREADS given by hand wins (two threads beside a training run on 2 cores sampled 3.5x slower than one:
    BENCHMARKS.md). Asked again once the other work is done, the cores come back (evaluate.py asks before each
    batch); its own threads spinning after a batch are not other work."""
    import psutil
    import runs
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runs, "_cores", None)
    threads_now, machine, mine = [8], [0.0], [0.0]
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads_now[0])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: threads_now.__setitem__(0, n))
    monkeypatch.setattr(runs.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval: machine[0])
    monkeypatch.setattr(psutil, "Process", lambda: type("Me", (), {"cpu_percent": lambda self, interval: mine[0]})())
    for cpus, percent, threads in [(2, 0, 2), (2, 20, 2), (2, 50, 1), (2, 100, 1), (16, 20, 8), (16, 60, 6)]:
        monkeypatch.setattr(psutil, "cpu_count", lambda: cpus)
        machine[0] = percent
        assert runs.free_threads() == threads, (cpus, percent)
    monkeypatch.setattr(psutil, "cpu_count", lambda: 2)
    for percent, own, threads in [(100, 0, 1), (0, 0, 2), (100, 200, 2), (100, 100, 1)]:
        # another job beside it, then alone, then alone with its own threads spinning on, then one of each
        machine[0], mine[0] = percent, own
        runs.share_cores("cpu")
        assert threads_now[0] == threads, (percent, own)
    runs.share_cores("meta")  # (no CPU: its threads are not for it to set)
    assert threads_now[0] == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runs.free_threads() == 1  # (torch's number, which OMP_NUM_THREADS set)
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(runs, "_cores", None)
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval: pytest.fail("one thread: nothing to look for"))
    assert runs.free_threads() == 1


def test_cpu_attention_is_torchs_causal_attention_in_float32_and_keeps_the_precision():
    torch.manual_seed(0)
    q, k = (torch.randn(2, 4, 70, 24, requires_grad=True) for _ in range(2))
    v = torch.randn(2, 70, 4, 24).transpose(1, 2).requires_grad_()  # strided, as MLA passes it
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3)
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, (q, k, v), grad)
    try:
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"
        out = CPUAttention.apply(q, k, v, 0.3)
        grads = torch.autograd.grad(out, (q, k, v), grad)
        assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"  # set back after forward and backward
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = "none"
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)  # float32 inside, not bf16's 3 digits
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-5)


def test_gate_learns_from_the_lm_loss_with_top1():
    torch.manual_seed(0)
    model = GPT(tiny(top_k_experts=1, balance_factor=0.0), verbose=False)
    idx = torch.randint(0, 50, (2, 16))
    _, loss = model(idx, idx)
    loss.backward()
    assert model.blocks[0].ffn.gate.weight.grad.abs().sum() > 0


def test_bias_update_balances_a_skewed_router_and_eval_leaves_it_alone():
    torch.manual_seed(0)
    cfg = tiny(n_routed_experts=4, top_k_experts=1, bias_update_speed=0.05)
    moe = MoE(cfg)
    torch.nn.init.normal_(moe.gate.weight, std=0.02)
    torch.nn.init.normal_(moe.w1, std=0.02), torch.nn.init.normal_(moe.w2, std=0.02)
    x = torch.randn(4, 64, 32) + 1.0
    with torch.no_grad():
        moe.gate.weight[0] = 0.5  # every token leans to expert 0
    moe.train()
    moe(x)
    first = moe.update_bias()
    assert first[0] > 0.9
    history = []
    for _ in range(60):
        moe(x)
        history.append(moe.update_bias())
    late = torch.stack(history[-20:]).mean(0)  # sign steps oscillate around balance: look at the average
    assert late.max() < 0.5 and late.min() > 0.1, late  # from 90 % on one expert to every expert busy
    moe.eval()
    bias = moe.gate.bias.clone()
    moe(x)
    assert moe.load.sum() == 0
    moe.update_bias()
    torch.testing.assert_close(moe.gate.bias, bias + 0.0)  # zero load: sign(0) = 0, nothing moves


def test_loss_at_init_is_about_ln_vocab_and_a_tiny_model_overfits():
    torch.manual_seed(0)
    model = GPT(tiny(), verbose=False)
    idx = torch.randint(0, 50, (4, 32))
    _, loss = model(idx[:, :-1], idx[:, 1:])
    assert abs(loss.item() - math.log(50)) < 0.3
    opt = model.configure_optimizers(0.0, 3e-3, (0.9, 0.95), "cpu")
    for _ in range(150):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_moe_biases()
    assert loss.item() < 0.3
    lm, bal = model.last_loss_parts
    assert torch.isclose(lm + bal, loss.detach())


def test_bf16_autocast_on_cpu_is_close_to_float32():
    torch.manual_seed(0)
    model = GPT(tiny(), verbose=False)
    idx = torch.randint(0, 50, (4, 33))

    def loss_and_grads(dtype):
        model.zero_grad()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])

    loss32, grad32 = loss_and_grads(torch.float32)
    loss16, grad16 = loss_and_grads(torch.bfloat16)
    assert abs(loss16 - loss32) < 0.01 and grad16.isfinite().all()
    assert (grad16 - grad32).norm() < 0.1 * grad32.norm()  # bf16 keeps 8 bits: a few per cent, not a lost term
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.eval().generate(idx[:, :4], 40, top_k=10)  # the latent cache in bf16, slid past block_size
    assert out.shape == (4, 44) and (out < 50).all()


def test_longer_than_block_size_and_generation():
    torch.manual_seed(0)
    model = GPT(tiny(), verbose=False).eval()
    logits, _ = model(torch.randint(0, 50, (1, 100)))  # block_size is 32: RoPE has no table to run off
    assert logits.shape == (1, 100, 50)
    only_even = lambda idx: (torch.arange(50) % 2 == 0).expand(idx.size(0), 50)
    out = model.generate(torch.zeros(3, 4, dtype=torch.long), 70, temperature=1.0, top_k=10, allowed_fn=only_even)
    assert out.shape == (3, 74) and (out[:, 4:] % 2 == 0).all()  # slid past block_size twice
    g = lambda: torch.Generator().manual_seed(7)
    a = model.generate(torch.zeros(2, 1, dtype=torch.long), 20, top_p=0.9, generator=g())
    assert torch.equal(a, model.generate(torch.zeros(2, 1, dtype=torch.long), 20, top_p=0.9, generator=g()))


def test_window_slide_keeps_the_first_tokens():
    torch.manual_seed(0)
    model = GPT(tiny(), verbose=False).eval()
    prefills = []  # every call that feeds more than one token: the first prefill and each slide's
    model.register_forward_pre_hook(lambda m, args: prefills.append(args[0]) if args[0].size(1) > 1 else None)
    idx = torch.tensor([[1, 2, 3, 4, 9]] * 2)
    out = model.generate(idx, 80, keep=4)
    # the cache (32) is full when the sequence has 33 tokens, then every 17 more: half a block is prefilled afresh
    assert [p.size(1) for p in prefills] == [5, 16, 16, 16, 16]
    for p, n in zip(prefills[1:], (33, 50, 67, 84)):
        assert torch.equal(p, torch.cat([out[:, :4], out[:, n - 12:n]], dim=1))
    prefills.clear()
    out = model.generate(idx, 40)  # without keep: the latest half block only
    assert torch.equal(prefills[1], out[:, 17:33])


def test_generation_stops_at_stop_id():
    torch.manual_seed(0)
    model = GPT(tiny(), verbose=False).eval()
    with torch.no_grad():
        model.lm_head.weight[7] *= 0  # token 7 equally likely as others initially
    out = model.generate(torch.zeros(4, 1, dtype=torch.long), 200, allowed_fn=lambda idx: torch.isin(
        torch.arange(50), torch.tensor([3, 7])).expand(idx.size(0), 50), stop_id=7)
    assert out.size(1) < 201 and all(7 in row for row in out.tolist())
    for row in out.tolist():
        assert all(t == 7 for t in row[row.index(7):])


def test_sample_logits_filters():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert sample_logits(logits, temperature=0).item() == 3
    assert all(sample_logits(logits, top_k=2).item() in (2, 3) for _ in range(30))
    assert all(sample_logits(logits * 10, top_p=0.5).item() == 3 for _ in range(30))


def test_checkpoint_roundtrip(tmp_path):
    model = GPT(tiny(), verbose=False)
    model.blocks[1].ffn.gate.bias += 0.5
    torch.save({"model": model.state_dict(), "model_args": model_args(model.cfg)}, tmp_path / "c.pt")
    again, ckpt = load_checkpoint(tmp_path / "c.pt")
    idx = torch.randint(0, 50, (1, 10))
    torch.testing.assert_close(again.eval()(idx)[0], model.eval()(idx)[0])
    assert again.blocks[1].ffn.gate.bias[0] == 0.5


def test_default_size_and_cache_ratio():
    cfg = GPTConfig()
    latent, mha = LatentCache.bytes_per_token(cfg)
    assert latent == 3 * 288 * 2 and mha / latent > 5
    model = GPT(cfg, verbose=False)
    assert 60e6 < model.num_params() < 70e6 and model.num_params(active=True) < model.num_params()
    assert model.estimate_mfu(1000, 1.0, device_name="NVIDIA H100 80GB HBM3") == pytest.approx(
        model.flops_per_token() * 1000 / 989e12)


def test_float32_compile_fallback_matches_grouped_gemm(monkeypatch):
    torch.manual_seed(0)
    moe = GPT(tiny(), verbose=False).blocks[0].ffn
    x = torch.randn(2, 9, 32)
    expected, _ = moe(x)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # the path torch.compile takes in float32
    torch.testing.assert_close(moe(x)[0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_moe_forward_makes_no_host_sync_on_cuda():
    moe = GPT(tiny(), verbose=False).blocks[0].ffn.cuda()
    x = torch.randn(2, 16, 32, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        moe(x)  # warm-up: first calls may sync while they load kernels
        torch.cuda.set_sync_debug_mode("error")
        try:
            moe(x)
        finally:
            torch.cuda.set_sync_debug_mode(0)


def test_no_routed_experts_is_a_dense_feed_forward():
    from model import GPT, GPTConfig
    cfg = GPTConfig(vocab_size=50, n_layer=1, n_head=2, n_embd=32, kv_lora_rank=16, qk_nope_head_dim=8,
                    qk_rope_head_dim=8, v_head_dim=16, expert_hidden=64, block_size=16, n_shared_experts=2,
                    n_routed_experts=0, dropout=0.0)
    model = GPT(cfg, verbose=False)
    assert model.num_params() == model.num_params(active=True)
    x = torch.randint(0, 50, (2, 16))
    _, loss = model(x, x)
    loss.backward()
    assert torch.isfinite(loss) and model.last_loss_parts[1] == 0
    assert model.update_moe_biases().shape == (1, 0)
    import pytest
    with pytest.raises(ValueError, match="needs n_shared_experts >= 1"):
        GPTConfig(n_routed_experts=0, n_shared_experts=0)


def test_rms_norm_matches_torch_and_its_backward_is_the_true_gradient():
    torch.manual_seed(0)
    ours, ref = RMSNorm(24), torch.nn.RMSNorm(24)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ref.weight.copy_(ours.weight)
    x, g = torch.randn(3, 5, 24, requires_grad=True), torch.randn(3, 5, 24)
    y = ours(x)
    grads = torch.autograd.grad(y, (x, ours.weight), g)
    expected = torch.autograd.grad(ref(x), (x, ref.weight), g)
    torch.testing.assert_close(y, ref(x))
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    x64, w64 = x.detach().double().requires_grad_(), ours.weight.detach().double().requires_grad_()
    assert torch.autograd.gradcheck(RMSNormFunction.apply, (x64, w64))  # in float64: the formula itself
    y16 = ours(x.detach().bfloat16())  # bf16 in, bf16 out, statistics in float32
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y.detach(), atol=0.03, rtol=0.02)


def test_rope_rotates_each_pair_of_halves_by_its_position():
    cfg = tiny()
    cos, sin = rope_angles(cfg, 3, 5, "cpu")  # positions 3..7
    x = torch.randn(2, 5, 3, 8)
    half = cfg.qk_rope_head_dim // 2
    angle = torch.arange(3, 8).float()[:, None] * cfg.rope_theta ** -(torch.arange(half) / half)  # (T, half)
    z = torch.complex(x[..., :half], x[..., half:]) * torch.polar(torch.ones_like(angle), angle)[:, None]
    torch.testing.assert_close(apply_rope(x, cos, sin), torch.cat([z.real, z.imag], -1))


def test_a_checkpoint_from_before_the_gelu_field_keeps_tanh(tmp_path):
    torch.manual_seed(0)
    model = GPT(tiny(gelu_approximate="tanh"), verbose=False)
    args = model_args(model.cfg)
    del args["gelu_approximate"]  # as the first models' checkpoints were written
    torch.save({"model": model.state_dict(), "model_args": args}, tmp_path / "old.pt")
    again, _ = load_checkpoint(tmp_path / "old.pt")
    assert again.cfg.gelu_approximate == "tanh" and GPTConfig().gelu_approximate == "none"
    idx = torch.randint(0, 50, (1, 10))
    torch.testing.assert_close(again.eval()(idx)[0], model.eval()(idx)[0])


def test_the_fused_cpu_optimizer_steps_as_the_plain_one():
    torch.manual_seed(0)
    models = [GPT(tiny(), verbose=False) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    fused = models[0].configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu")
    params = list(models[1].parameters())
    plain = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                               {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                              lr=1e-2, betas=(0.9, 0.95), foreach=False)
    assert fused.defaults["fused"]
    idx = torch.randint(0, 50, (2, 17))
    for _ in range(3):
        for model, opt in zip(models, (fused, plain)):
            model(idx[:, :-1], idx[:, 1:])[1].backward()
            opt.step()
            opt.zero_grad()
    for a, b in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc settings")
def test_freed_memory_is_kept_for_the_next_step():
    """Activations of a few MiB each, alive together and then freed (a training step), have their pages faulted in
    anew every step by default, and not once runs.pick_device has set up the CPU."""
    probe = ("import resource, sys, torch, runs\n"
             "if sys.argv[1] == 'tuned': runs.pick_device('cpu', 'float32')\n"
             "def step():  # forty 4 MiB activations alive at once, then all freed\n"
             "    held = [torch.ones(1 << 20) for _ in range(40)]\n"
             "step(); before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
             "for _ in range(5): step()\n"
             "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n")
    import resource  # (Unix only)
    run = lambda how: int(subprocess.run([sys.executable, "-c", probe, how], capture_output=True, text=True,
                                         check=True, cwd=Path(__file__).parents[1]).stdout)
    pages = 5 * 40 * (4 << 20) // resource.getpagesize()  # what five steps touch
    # tuned: 1,024 faults here, now and then 4,096 (pages / 50 exactly); default: all of it, or one step's (40,960)
    assert run("tuned") < pages / 20 and run("default") > pages / 10


def test_the_memory_check_sees_attentions_square_and_leaves_the_run_as_it_was():
    """runs.window_bytes (train.py's memory check) measures in training mode: dropout keeps a T x T matrix per head,
    so a window of twice the length keeps more than twice the bytes, read off two shorter lengths as measured; the
    random stream and the MoE's load counts are as they were."""
    import contextlib
    from runs import saved_bytes, window_bytes
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=64, n_layer=1, n_head=4, n_embd=64, kv_lora_rank=16, qk_nope_head_dim=8,
                      qk_rope_head_dim=8, v_head_dim=16, expert_hidden=64, block_size=512, dropout=0.1), verbose=False)
    for moe in m.moe_layers():
        moe.load.fill_(3.0)
    rng = torch.get_rng_state()
    at = {n: window_bytes(m, contextlib.nullcontext(), n) for n in (256, 512)}
    assert torch.equal(torch.get_rng_state(), rng) and all(moe.load.eq(3.0).all() for moe in m.moe_layers())
    assert at[512] > 2.2 * at[256]
    measured = saved_bytes(m, contextlib.nullcontext(), 2, 512) - saved_bytes(m, contextlib.nullcontext(), 1, 512)
    assert abs(at[512] - measured) < 0.02 * measured
