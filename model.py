"""A small GPT with DeepSeek-V3's Multi-head Latent Attention (MLA) and DeepSeekMoE: the network alone.

Equations and names follow DeepSeek-V2 (arXiv:2405.04434, §2.1 MLA, §2.2 DeepSeekMoE) and DeepSeek-V3
(arXiv:2412.19437, §2.1 auxiliary-loss-free balancing and the sequence-wise balance loss):
- MLA compresses keys and values into one latent `c_kv` (kv_lora_rank numbers) plus one RoPE key shared by all
  heads. Training runs the plain path (up-project, flash attention); decoding caches only the latent and the RoPE
  key and absorbs the up-projections into the query and the output ("absorbed" attention).
- DeepSeekMoE: shared experts that every token passes through, plus routed experts picked per token by sigmoid
  affinity; the pick uses a per-expert bias that is nudged towards balanced load once per optimizer step
  (auxiliary-loss-free balancing), with a small sequence-wise balance loss on top.
It imports torch and config only: the token format is controls.py's and encoding_decoding.py's, run folders
runs.py's.
"""
import math
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

import config


@dataclass
class GPTConfig:
    """The only model schema; defaults come from config.py, where each field is explained."""
    vocab_size: int = 395  # the default vocabulary's (tokenizers/simple_tokenizer.json); a run's is its data's
    block_size: int = config.block_size
    n_layer: int = config.n_layer
    n_head: int = config.n_head
    n_embd: int = config.n_embd
    q_lora_rank: int = config.q_lora_rank
    kv_lora_rank: int = config.kv_lora_rank
    qk_nope_head_dim: int = config.qk_nope_head_dim
    qk_rope_head_dim: int = config.qk_rope_head_dim
    v_head_dim: int = config.v_head_dim
    rope_theta: float = config.rope_theta
    n_shared_experts: int = config.n_shared_experts
    n_routed_experts: int = config.n_routed_experts
    top_k_experts: int = config.top_k_experts
    expert_hidden: int = config.expert_hidden
    route_scale: float = config.route_scale
    bias_update_speed: float = config.bias_update_speed
    balance_factor: float = config.balance_factor
    gelu_approximate: str = config.gelu_approximate
    dropout: float = config.dropout
    bias: bool = config.bias

    @classmethod
    def of(cls, values, **extra):
        """Build from any namespace or dict holding the field names (a parsed config, say)."""
        get = values.get if isinstance(values, dict) else lambda name: getattr(values, name)
        return cls(**{f.name: get(f.name) for f in fields(cls) if f.name not in extra}, **extra)

    def __post_init__(self):
        if self.n_routed_experts and not 1 <= self.top_k_experts <= self.n_routed_experts:
            raise ValueError(f"need 1 <= top_k_experts <= n_routed_experts, got top_k_experts={self.top_k_experts} "
                             f"and n_routed_experts={self.n_routed_experts}")
        if not self.n_routed_experts and not self.n_shared_experts:
            raise ValueError("n_routed_experts=0 (a dense feed-forward) needs n_shared_experts >= 1")
        if self.n_embd % 8 or self.expert_hidden % 8:
            raise ValueError(f"n_embd and expert_hidden must be multiples of 8 (for the grouped GEMM), got "
                             f"{self.n_embd} and {self.expert_hidden}")
        if self.qk_rope_head_dim % 2:
            raise ValueError(f"qk_rope_head_dim must be even (RoPE rotates pairs), got {self.qk_rope_head_dim}")


MODEL_KEYS = [f.name for f in fields(GPTConfig) if f.name != "vocab_size"]  # the config.py names a model takes


# --- building blocks


def rope_angles(cfg, start, length, device):
    """(length, 1, rope_dim) cos and signed sin for absolute positions start .. start+length-1, to broadcast over
    heads: the halves of the last dim form the rotated pairs, so cos repeats per half and sin is (-sin, sin). `start`
    is an int, or a tensor in a decode step recorded as a CUDA graph (DecodeGraph)."""
    inv_freq = cfg.rope_theta ** -(torch.arange(0, cfg.qk_rope_head_dim, 2, device=device).float() / cfg.qk_rope_head_dim)
    t = (torch.arange(length, device=device) + start).float()
    freqs = torch.outer(t, inv_freq)
    return torch.cat([freqs.cos(), freqs.cos()], -1)[:, None], torch.cat([-freqs.sin(), freqs.sin()], -1)[:, None]


def apply_rope(x, cos, sin):
    """Rotate (…, T, heads, rope_dim) by position: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin), written as
    x * cos + (x2, x1) * sin, three passes over x where splitting the halves took seven."""
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    return (xf * cos + xf.roll(x.size(-1) // 2, -1) * sin).type_as(x)


class RMSNormFunction(torch.autograd.Function):
    """x / rms(x) * weight over the last dim, computed in float32, with a hand-written backward: autograd's composite
    one makes about twice as many passes over the activations, which is what a CPU step waits on outside its matmuls
    (BENCHMARKS.md, "CPU training speed")."""

    @staticmethod
    def forward(ctx, x, weight):
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # bf16 in: statistics in float32
        r = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + torch.finfo(torch.float32).eps)  # (..., 1)
        x_hat = xf * r
        ctx.save_for_backward(x_hat, r, weight)
        ctx.x_dtype = x.dtype
        return (x_hat * weight).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x_hat, r, weight = ctx.saved_tensors
        grad = grad.to(x_hat.dtype)
        grad_w = (grad * x_hat).flatten(0, -2).sum(0).to(weight.dtype) if ctx.needs_input_grad[1] else None
        g = grad * weight                                                      # dL/dx_hat
        # dL/dx = r * (g - x_hat * mean(g * x_hat)): x_hat's length is fixed, so its gradient loses the radial part
        mean = torch.linalg.vecdot(g, x_hat).unsqueeze(-1) / x_hat.size(-1)
        return torch.addcmul(g, x_hat, mean, value=-1).mul_(r).to(ctx.x_dtype), grad_w


class RMSNorm(nn.Module):
    """nn.RMSNorm's function and weight name (eps of float32), with RMSNormFunction's faster backward."""

    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        if not torch.is_grad_enabled() and x.dtype == torch.float32:  # sampling: torch's fused kernel, half the time
            return F.rms_norm(x, self.weight.shape, self.weight, torch.finfo(torch.float32).eps)
        return RMSNormFunction.apply(x, self.weight)


@contextmanager
def float32_matmuls():
    """oneDNN's float32 matmuls in float32 within, whatever this process's precision (runs.pick_device)."""
    before = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = "none"
    try:
        yield
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = before


class CPUAttention(torch.autograd.Function):
    """Causal attention (torch's CPU flash kernel) with its own GEMMs in float32, forward and backward, while the
    rest of the model's matmuls round to bf16 (dtype=auto training on a CPU with AMX): the kernel's many 64 x 64
    blocks then go through oneDNN one call at a time, and a training step of the demo's model was 1.4x slower for it
    (BENCHMARKS.md, "bf16 on a CPU with AMX")."""

    @staticmethod
    def forward(ctx, q, k, v, scale):
        with float32_matmuls():
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True, scale=scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad):
        with float32_matmuls():
            dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                grad.contiguous(), *ctx.saved_tensors, 0.0, True, scale=ctx.scale)
        return dq, dk, dv, None


class LatentCache:
    """A static per-layer cache of what MLA needs to decode: c_kv and the shared RoPE key for every position."""

    def __init__(self, cfg, batch_size, length, device, dtype):
        self.length = length
        self.kv = torch.zeros(cfg.n_layer, batch_size, length, cfg.kv_lora_rank, device=device, dtype=dtype)
        self.pe = torch.zeros(cfg.n_layer, batch_size, length, cfg.qk_rope_head_dim, device=device, dtype=dtype)

    @staticmethod
    def bytes_per_token(cfg, dtype=torch.bfloat16):
        """(latent cache bytes, plain multi-head K+V cache bytes of the same width) per token, all layers."""
        size = torch.tensor([], dtype=dtype).element_size()
        return cfg.n_layer * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * size, cfg.n_layer * 2 * cfg.n_embd * size


def record_cuda_graph(fn, device, warmups=1):
    """fn() run `warmups` times on a side stream, as recording wants, then recorded once as a CUDA graph on `device`:
    (the graph, what fn returned while it recorded: tensors each replay rewrites)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmups):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


class DecodeGraph:
    """A decode step of `model` (one new token per row, batch_size rows, into `cache`) recorded once as a CUDA graph
    and replayed at each position: its ~100 kernel launches a layer leave the host as one, where at batch 1 the
    launches, not the GPU, bound decoding (BENCHMARKS.md, "GPU"). The step reads its token and position from tensors
    of its own and attends to the whole cache with the later positions masked, so every replay has the same shapes.
    Recording runs the step twice at position 0: build it before the prefill, which writes that position anew."""

    def __init__(self, model, cache, batch_size):
        device = cache.kv.device
        if device.type != "cuda":
            raise ValueError(f"a DecodeGraph records a CUDA graph: the model and its cache want a CUDA device, "
                             f"not {device}")
        self.token = torch.zeros(batch_size, 1, dtype=torch.long, device=device)
        self.pos = torch.zeros((), dtype=torch.long, device=device)
        # autocast's cache of cast weights stays off while a graph records
        casts = (torch.autocast("cuda", torch.get_autocast_dtype("cuda"), cache_enabled=False)
                 if torch.is_autocast_enabled("cuda") else nullcontext())

        def step():
            with casts:
                return model(self.token, cache=cache, pos=self.pos)[0]
        self.graph, self.logits = record_cuda_graph(step, device)

    def __call__(self, token, pos):
        """Logits (B, 1, V) after `token` (B, 1) at position `pos`; the same tensor each call, rewritten."""
        self.token.copy_(token)
        self.pos.fill_(pos)
        self.graph.replay()
        return self.logits


class MLA(nn.Module):
    """Multi-head Latent Attention."""

    def __init__(self, cfg, layer_id):
        super().__init__()
        self.cfg, self.layer_id = cfg, layer_id
        H, qk_head_dim = cfg.n_head, cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
        if cfg.q_lora_rank == 0:
            self.wq = nn.Linear(cfg.n_embd, H * qk_head_dim, bias=cfg.bias)
        else:
            self.wq_a = nn.Linear(cfg.n_embd, cfg.q_lora_rank, bias=cfg.bias)
            self.q_norm = RMSNorm(cfg.q_lora_rank)
            self.wq_b = nn.Linear(cfg.q_lora_rank, H * qk_head_dim, bias=cfg.bias)
        self.wkv_a = nn.Linear(cfg.n_embd, cfg.kv_lora_rank + cfg.qk_rope_head_dim, bias=cfg.bias)  # W_DKV and W_KR
        self.kv_norm = RMSNorm(cfg.kv_lora_rank)
        self.wkv_b = nn.Linear(cfg.kv_lora_rank, H * (cfg.qk_nope_head_dim + cfg.v_head_dim), bias=False)  # W_UK, W_UV
        self.wo = nn.Linear(H * cfg.v_head_dim, cfg.n_embd, bias=cfg.bias)
        self.softmax_scale = qk_head_dim ** -0.5

    def forward(self, x, cos, sin, cache=None, pos=0):
        cfg, (B, T, _) = self.cfg, x.shape
        H, nope, rope, dv = cfg.n_head, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
        q = self.wq(x) if cfg.q_lora_rank == 0 else self.wq_b(self.q_norm(self.wq_a(x)))
        q_nope, q_rope = q.view(B, T, H, nope + rope).split([nope, rope], dim=-1)
        q_rope = apply_rope(q_rope, cos, sin)
        c_kv, k_rope = self.wkv_a(x).split([cfg.kv_lora_rank, rope], dim=-1)
        c_kv = self.kv_norm(c_kv)                           # (B, T, d_c): all a decode step needs of K and V
        k_rope = apply_rope(k_rope[:, :, None], cos, sin)   # (B, T, 1, rope): one rotary key shared by all heads
        static = isinstance(pos, torch.Tensor)  # a decode step recorded as a CUDA graph: the position is a tensor
        if cache is not None:  # (positions pos .. pos+T-1, an index the device reads where pos is a tensor)
            at = torch.arange(T, device=x.device) + pos
            cache.kv[self.layer_id, :B].index_copy_(1, at, c_kv.to(cache.kv.dtype))
            cache.pe[self.layer_id, :B].index_copy_(1, at, k_rope[:, :, 0].to(cache.pe.dtype))
        if cache is None or (not static and pos == 0):
            # Plain path (training, prefill): up-project per head, causal flash attention.
            k_nope, v = self.wkv_b(c_kv).view(B, T, H, nope + dv).split([nope, dv], dim=-1)
            q = torch.cat([q_nope, q_rope], dim=-1).transpose(1, 2)                       # (B, H, T, qk)
            k = torch.cat([k_nope, k_rope.expand(-1, -1, H, -1)], dim=-1).transpose(1, 2)  # (B, H, T, qk)
            dropout = cfg.dropout if self.training else 0.0
            if (x.device.type == "cpu" and not dropout and q.size(-1) == v.size(-1)  # (as torch's flash kernel wants)
                    and torch.backends.mkldnn.matmul.fp32_precision == "bf16"):
                y = CPUAttention.apply(q, k, v.transpose(1, 2), self.softmax_scale)
            else:
                y = F.scaled_dot_product_attention(q, k, v.transpose(1, 2), is_causal=True, scale=self.softmax_scale,
                                                   dropout_p=dropout)
            y = y.transpose(1, 2)                                                            # (B, T, H, dv)
        else:
            # Absorbed path (decode): q_nope·(W_UK c) = (W_UKᵀ q_nope)·c, so attend to the cached latents directly,
            # then apply W_UV to the weighted sum of latents. A graph's step has one shape at every position: it
            # attends to the whole cache, the positions after its own masked.
            S = cache.length if static else pos + T
            w = self.wkv_b.weight.view(H, nope + dv, cfg.kv_lora_rank)
            kv, pe = cache.kv[self.layer_id, :B, :S], cache.pe[self.layer_id, :B, :S]   # (B, S, d_c), (B, S, rope)
            q_lat = torch.einsum("bthd,hdc->bthc", q_nope, w[:, :nope].to(q_nope.dtype))  # (B, T, H, d_c)
            scores = (torch.einsum("bthc,bsc->bhts", q_lat, kv.to(q_lat.dtype))
                      + torch.einsum("bthr,bsr->bhts", q_rope, pe.to(q_rope.dtype))) * self.softmax_scale
            scores = scores.float()
            if T > 1 or static:  # a run of given tokens: each sees the cache and those before it (one token sees all)
                visible = torch.arange(S, device=x.device) <= (torch.arange(T, device=x.device) + pos)[:, None]
                scores = scores.masked_fill(~visible, float("-inf"))
            p = scores.softmax(dim=-1).type_as(q_lat)
            o = torch.einsum("bhts,bsc->bthc", p, kv.to(p.dtype))                       # (B, T, H, d_c)
            y = torch.einsum("bthc,hdc->bthd", o, w[:, nope:].to(o.dtype))               # (B, T, H, dv)
        return self.wo(y.reshape(B, T, H * dv))


class MLP(nn.Module):
    """The shared experts, fused into one MLP of their summed hidden width."""

    def __init__(self, cfg, hidden):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, hidden, bias=cfg.bias)
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.approximate = cfg.gelu_approximate

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate))


class Gate(nn.Module):
    """Sigmoid affinity to learned centroids; top-k on score + bias; weights from the unbiased score."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.n_embd))  # one centroid e_i per expert
        self.register_buffer("bias", torch.zeros(cfg.n_routed_experts))  # b_i: moves selection, never weights

    def forward(self, x):
        # Under autocast this matmul still rounds its inputs to bf16 (autocast casts linear's, whatever their dtype).
        # With it kept in float32 one batch's loss moved to float32's, but the first stage ended among three runs
        # without it (BENCHMARKS.md, "The gate in float32 under autocast"): no gain seen, not taken.
        scores = torch.sigmoid(F.linear(x.float(), self.weight.float()))          # (N, E)
        indices = torch.topk(scores + self.bias, self.cfg.top_k_experts, dim=-1).indices  # (N, k)
        weights = scores.gather(1, indices)
        if self.cfg.top_k_experts > 1:  # a single weight normalised would be exactly 1 and pass no gradient
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights * self.cfg.route_scale, indices, scores


GROUP_ROWS = 64  # with bf16 matmuls on a CPU, each routed expert's rows are padded to a multiple of this


def bf16_matmuls():
    """Whether this process's CPU matmuls round to bf16: under bf16 autocast, or float32 with oneDNN's bf16 precision
    (dtype=auto on a CPU with AMX: runs.pick_device)."""
    return torch.is_autocast_enabled("cpu") or torch.backends.mkldnn.matmul.fp32_precision == "bf16"


def pad_groups(rows, counts, expert, multiple=GROUP_ROWS):
    """Each pick's row (rows, grouped by expert: counts[e] rows each, expert[i] the expert of pick i) moved to where it
    sits once each group is followed by zero rows up to a multiple of `multiple`: (those rows, each group's end).
    On a CPU the grouped GEMM is one matmul per expert, and oneDNN compiles a kernel for each new row count of a
    bf16 matmul: the counts change every step, and compiling took half of a bf16 training step; padded, a few dozen
    sizes recur (BENCHMARKS.md, "bf16 on a CPU with AMX"). The zero rows add at most multiple - 1 rows per expert
    (4 % of a float32 step, which compiles nothing, so float32 is left unpadded) and nothing flows back to them."""
    padded = (counts + multiple - 1) // multiple * multiple
    ends = padded.cumsum(0)
    shift = ends - padded - (counts.cumsum(0) - counts)  # each group's padded start minus its start unpadded
    return rows + shift.index_select(0, expert), ends


class MoE(nn.Module):
    """DeepSeekMoE: shared experts + routed experts with sparse dispatch (sort by expert, one grouped GEMM)."""
    # How routed tokens reach their experts: "grouped" sorts them by expert and runs one grouped GEMM (no host
    # sync); "loop" runs a matmul per expert's slice (one host sync); "dense" runs every expert on every token and
    # zero-weights the picks it did not make (no sort, n_routed_experts times the FLOPs). bench_train.py compares.
    dispatch = "grouped"

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        E, d, h = cfg.n_routed_experts, cfg.n_embd, cfg.expert_hidden
        self.gate = Gate(cfg)
        self.shared = MLP(cfg, cfg.n_shared_experts * h) if cfg.n_shared_experts else None
        self.w1 = nn.Parameter(torch.empty(E, d, h))  # routed experts, stacked for the grouped GEMM
        self.w2 = nn.Parameter(torch.empty(E, h, d))
        self.register_buffer("load", torch.zeros(E), persistent=False)  # routed tokens since the last bias update

    def forward(self, x):
        """x (B, T, d) -> (output (B, T, d), sequence-wise balance loss)."""
        cfg, (B, T, d) = self.cfg, x.shape
        E, k = cfg.n_routed_experts, cfg.top_k_experts
        if not E:  # no routed experts: a dense feed-forward of the shared experts (the control for MoE)
            return self.shared(x), x.new_zeros(())
        flat = x.reshape(B * T, d)
        weights, indices, scores = self.gate(flat)
        if self.dispatch == "dense" or (not torch.is_grad_enabled() and len(flat) <= 4 * E):
            # (also a sampler's few rows a step: fewer, larger operations than sorting them, for a few more FLOPs)
            xs, w1, w2 = self.in_compute_dtype(flat)
            y = F.gelu(xs @ w1, approximate=cfg.gelu_approximate) @ w2     # (E, N, d): every expert on every token
            gate_w = torch.zeros_like(scores).scatter_(1, indices, weights)  # (N, E): zero where not picked
            out = torch.einsum("end,ne->nd", y, gate_w.to(y.dtype)).view(B, T, d)
        else:
            expert = indices.flatten()                    # (N*k,): token n's j-th pick sits at n*k + j
            counts = torch.zeros(E, dtype=torch.long, device=x.device).index_add_(0, expert, torch.ones_like(expert))
            # (not bincount: on CUDA it reads the largest index back to the host to size its output)
            order = expert.argsort(stable=True)           # all picks grouped by expert, no host sync
            rows = torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=x.device))
            ends, n_rows = counts.cumsum(0), len(rows)    # rows[i]: pick i's row among the grouped ones
            if x.device.type == "cpu" and bf16_matmuls():
                rows, ends = pad_groups(rows, counts, expert)
                n_rows = int(ends[-1])
            picks = flat if k == 1 else flat.repeat_interleave(k, dim=0)  # one row per pick, in pick order
            picks = picks.to(self.compute_dtype(x))
            # one scatter into the expert groups and one gather back (their backward: the same two, swapped)
            xs = picks.new_zeros(n_rows, d).index_copy(0, rows, picks)
            y = self.routed(xs, ends.to(torch.int32)).index_select(0, rows)  # (N*k, d): back in pick order
            y = y * weights.view(-1, 1).to(y.dtype)
            out = (y if k == 1 else y.view(-1, k, d).sum(dim=1)).view(B, T, d)
        if self.shared is not None:
            out = out + self.shared(x)
        if not torch.is_grad_enabled():  # sampling or evaluating: no load to count, no balance loss to learn from
            return out, out.new_zeros(())
        picked = torch.zeros_like(scores).scatter_(1, indices, 1.0).view(B, T, E)
        if self.training:
            self.load += picked.sum(dim=(0, 1))
        # L_bal = alpha * sum_i f_i P_i per sequence, averaged over the batch
        f = picked.sum(dim=1) * E / (k * T)                                             # (B, E)
        P = (scores / scores.sum(dim=-1, keepdim=True)).view(B, T, E).mean(dim=1)       # (B, E)
        return out, cfg.balance_factor * (f * P).sum(dim=-1).mean()

    def compute_dtype(self, x):
        """The dtype to compute the experts in: autocast's, when it is on, else x's."""
        return torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype

    def in_compute_dtype(self, x):
        """x and the stacked expert weights in the compute dtype."""
        dtype = self.compute_dtype(x)
        return x.to(dtype), self.w1.to(dtype), self.w2.to(dtype)

    def routed(self, xs, offsets):
        """Each routed expert on its own rows of xs (grouped by expert; offsets = cumulative row counts)."""
        xs, w1, w2 = self.in_compute_dtype(xs)
        approximate = self.cfg.gelu_approximate
        if self.dispatch == "loop" or (xs.dtype != torch.bfloat16 and torch.compiler.is_compiling()):
            # (torch.compile's shape rules for _grouped_mm accept bf16 only, so float32 under compile comes here)
            sizes = torch.diff(offsets, prepend=offsets.new_zeros(1)).tolist()
            return torch.cat([F.gelu(x @ w1[e], approximate=approximate) @ w2[e]
                              for e, x in enumerate(xs.split(sizes))])
        h = F.gelu(torch._grouped_mm(xs, w1, offs=offsets), approximate=approximate)
        return torch._grouped_mm(h, w2, offs=offsets)

    @torch.no_grad()
    def update_bias(self):
        """b_i += gamma * sign(mean load - load_i) from the load counted since the last call; returns the load
        fractions. Call once per optimizer step, after summing `load` across ranks."""
        frac = self.load / self.load.sum().clamp(min=1)
        self.gate.bias += self.cfg.bias_update_speed * torch.sign(self.load.mean() - self.load)
        self.load.zero_()
        return frac


class Block(nn.Module):
    def __init__(self, cfg, layer_id):
        super().__init__()
        self.attn_norm, self.ffn_norm = RMSNorm(cfg.n_embd), RMSNorm(cfg.n_embd)
        self.attn, self.ffn = MLA(cfg, layer_id), MoE(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, cache=None, pos=0):
        x = x + self.drop(self.attn(self.attn_norm(x), cos, sin, cache, pos))
        y, balance_loss = self.ffn(self.ffn_norm(x))
        return x + self.drop(y), balance_loss  # the residual is added once


# --- the model

PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}  # dense bf16


class GPT(nn.Module):
    def __init__(self, cfg, verbose=True):
        super().__init__()
        self.cfg = cfg
        # built under torch.device("meta") for its shapes only (runs.model_config): no random draws, whose meta
        # kernel alone takes seconds to load the first time
        shapes_only = torch.empty(()).is_meta
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd,
                                    _weight=torch.empty(cfg.vocab_size, cfg.n_embd) if shapes_only else None)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied
        if not shapes_only:
            self.apply(self._init_weights)
            resid_std = 0.02 / math.sqrt(2 * cfg.n_layer)  # residual projections scaled as in GPT-2
            for name, p in self.named_parameters():
                if name.endswith(("wo.weight", "c_proj.weight", "w2")):
                    nn.init.normal_(p, std=resid_std)
                elif name.endswith(("gate.weight", "w1")):
                    nn.init.normal_(p, std=0.02)
        self.last_loss_parts = None
        if verbose:
            latent, mha = LatentCache.bytes_per_token(cfg)
            print(f"GPT: {self.num_params() / 1e6:.2f}M parameters, {self.num_params(active=True) / 1e6:.2f}M active "
                  f"per token; latent cache {latent} bytes/token in bf16, {mha / latent:.1f}x smaller than multi-head K/V")

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def num_params(self, active=False):
        """All parameters (the tied embedding once), or those one token passes through: top_k of the routed."""
        n = sum(p.numel() for p in self.parameters())
        if active:
            cfg = self.cfg
            n -= cfg.n_layer * max(cfg.n_routed_experts - cfg.top_k_experts, 0) * 2 * cfg.n_embd * cfg.expert_hidden
        return n

    def forward(self, idx, targets=None, cache=None, pos=0):
        """idx (B, T) -> (logits (B, T, V), loss). With targets, loss = cross-entropy (targets -1 are ignored) +
        balance loss, and `last_loss_parts` holds both parts; with a cache, only the last position's logits."""
        B, T = idx.shape
        cos, sin = rope_angles(self.cfg, pos, T, idx.device)
        x = self.drop(self.tok_emb(idx))
        balance_loss = 0.0
        for block in self.blocks:
            x, bal = block(x, cos, sin, cache, pos)
            balance_loss = balance_loss + bal
        x = self.norm(x)
        if targets is None:
            return self.lm_head(x[:, -1:] if cache is not None else x), None
        logits = self.lm_head(x)
        lm_loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        self.last_loss_parts = (lm_loss.detach(), balance_loss.detach())
        return logits, lm_loss + balance_loss

    def moe_layers(self):
        return [b.ffn for b in self.blocks]

    def sync_moe_load(self):
        """Sum each MoE layer's routed-token counts across ranks, so that every rank's bias update sees them all."""
        for moe in self.moe_layers():
            torch.distributed.all_reduce(moe.load)

    def discard_moe_load(self):
        """Forget the counts of a skipped step (a NaN loss): they must not steer the routing biases."""
        for moe in self.moe_layers():
            moe.load.zero_()

    def update_moe_biases(self):
        """The once-per-optimizer-step bias update of every MoE layer; returns (n_layer, E) load fractions."""
        return torch.stack([m.update_bias() for m in self.moe_layers()])

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type in ("cuda", "cpu"))

    def flops_per_token(self, seq_len=None):
        """Training FLOPs per token: 6 * active parameters (only top_k of the routed experts, the tied embedding once)
        + 6 * L * H * (d_qk + d_v) * T for attention (the count of PaLM's appendix B, as nanoGPT's estimate_mfu)."""
        cfg = self.cfg
        T = seq_len or cfg.block_size
        attn = 6 * cfg.n_layer * cfg.n_head * (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim) * T
        return 6 * self.num_params(active=True) + attn

    def estimate_mfu(self, tokens_per_iter, dt, device_name=None, peak_flops=None):
        """Model FLOPs utilisation: achieved FLOP/s over the card's dense bf16 peak (None if it is not known)."""
        if peak_flops is None:
            name = device_name or (torch.cuda.get_device_name() if torch.cuda.is_available() else "")
            peak_flops = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
        return None if not peak_flops else self.flops_per_token() * tokens_per_iter / dt / peak_flops

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, allowed_fn=None, stop_id=None,
                 generator=None, keep=0, forced=(), graph=False):
        """Continue idx (B, T) by max_new_tokens using the latent cache. allowed_fn(idx) -> (B, V) bool mask of the
        tokens each sequence may take next. `forced` gives the token id to take at each absolute position (-1 where
        it is sampled), the same for every row: a run of them (a prompt) is appended at once and read in one forward
        pass. Where allowed_fn leaves every row one token (a given part's notes, the grammar's next step), it is taken
        without the model, and the run of them is read in one pass when a choice comes. Sequences that emit stop_id
        are padded with it; once all have stopped the loop ends (checked every 16 steps). Past block_size the window
        slides: the first `keep` tokens (START and the header) and the last half block minus them are prefilled
        afresh. With `graph` (CUDA), each step of one new token replays a DecodeGraph.
        """
        cfg, B = self.cfg, idx.size(0)
        window, total, forced = cfg.block_size, idx.size(1) + max_new_tokens, list(forced)
        keep = min(keep, window // 4)  # a header longer than that (a tiny window) is cut when the window slides
        kind = idx.device.type  # under autocast the cache takes the autocast dtype (bf16: half the bytes of fp32)
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else self.tok_emb.weight.dtype
        cache = LatentCache(cfg, B, window, idx.device, dtype)
        step_graph = DecodeGraph(self, cache, B) if graph else None  # (before the prefill: see DecodeGraph)
        last = lambda n: idx if idx.size(1) <= n else torch.cat([idx[:, :keep], idx[:, keep - n:]], dim=1)
        context = last(window)  # the first `keep` tokens and the latest ones, n in all
        logits, _ = self(context, cache=cache, pos=0)
        pos = context.size(1)
        done = torch.zeros(B, dtype=torch.bool, device=idx.device)
        step = unread = 0  # unread: the latest tokens, not yet in the cache (read when a choice needs the logits)
        while idx.size(1) < total:
            at = idx.size(1)
            run = 0
            while at + run < min(len(forced), total) and forced[at + run] >= 0:
                run += 1
            allowed = allowed_fn(idx) if allowed_fn is not None and not run else None
            if run:  # given tokens: all of them at once
                new = torch.tensor(forced[at:at + run], device=idx.device).expand(B, -1)
            elif allowed is not None and bool(((allowed.sum(1) == 1) | done).all()):
                # the mask leaves each row one token (a given part's notes, the grammar's next step): taken without
                # the model's logits, drawn from the mask alone (the same token, and the same random numbers taken)
                only = torch.zeros(allowed.shape, device=idx.device).masked_fill(~allowed, float("-inf"))
                new = sample_logits(only, temperature, top_k, top_p, generator)[:, None]
            else:
                if unread:
                    read = idx[:, -unread:]
                    logits = (step_graph(read, pos) if step_graph is not None and unread == 1
                              else self(read, cache=cache, pos=pos)[0])
                    pos, unread = pos + unread, 0
                logits = logits[:, -1].float()
                if allowed is not None:
                    if pool := getattr(allowed_fn, "pool", None):  # a mask that reads some logits its own way
                        logits = pool(logits)
                    logits = logits.masked_fill(~allowed, float("-inf"))
                new = sample_logits(logits, temperature, top_k, top_p, generator)[:, None]
            if stop_id is not None:
                new = torch.where(done[:, None], stop_id, new)
                done |= (new == stop_id).any(1)
            idx = torch.cat([idx, new], dim=1)
            step += 1
            if stop_id is not None and step % 16 == 0 and bool(done.all()):  # a host sync: not every step
                break
            unread += new.size(1)
            if pos + unread > window:  # the cache is full: slide
                context = last(window // 2)
                logits, _ = self(context, cache=cache, pos=0)
                pos, unread = context.size(1), 0
        return idx


def rule_penalty(logits, forbidden, targets):
    """The rules' penalty (unlikelihood training, Welleck et al. 2019): at each target where the rules forbid some
    tokens, -log(1 - P(those tokens)), summed and divided by the window's targets (as the cross-entropy is)."""
    logits = logits.float()
    log_p = logits.masked_fill(~forbidden, float("-inf")).logsumexp(-1) - logits.logsumexp(-1)  # (B, T); -inf: none
    ruled = forbidden.any(-1) & (targets >= 0)
    penalty = -torch.log1p(-log_p.exp().clamp(max=1 - 1e-6))  # (a forbidden token the model is sure of: bounded)
    return torch.where(ruled, penalty, 0.0).sum() / (targets >= 0).sum().clamp(min=1)


def sample_logits(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """One token id per row of logits (B, V): greedy at temperature 0, else top-k / nucleus sampling."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs > top_p  # keep the smallest prefix whose mass reaches top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)[:, 0]


def model_args(cfg):
    """GPTConfig as the plain dict a checkpoint stores."""
    return asdict(cfg)


# --- checkpoints and precision


def autocast(device, dtype):
    """Mixed precision on the device when dtype is below float32, else nothing."""
    return nullcontext() if dtype == torch.float32 else torch.autocast(device.split(":")[0], dtype=dtype)


