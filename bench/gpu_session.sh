#!/usr/bin/env bash
# #39's GPU checks in one device call (under 10 minutes), for a machine with CUDA and without music21:
#   bash bench/gpu_session.sh DATA_DIR [OUT_DIR]
# DATA_DIR: a prepare.py output (train.bin, val.bin, meta.json), e.g. the corpus's, copied into the tree and carried.
# sample.py writes MIDI through symusic, which the device lacks: carry its wheels in .whl; they are installed first
# when .whl is there. `bash bench/gpu_carry.sh DATA_DIR` readies both (.gpu/bin, .whl) and keeps the tree under the
# device's 64 MiB; `bash bench/gpu_carry.sh --undo` after the call.
# In order of what matters most, each step under its own time limit, so that one that hangs leaves the rest:
#   1. the CUDA-only tests (model.py) and compiled against eager gradients; 2. training speed at the original's config
#   (batch 32 x 512, vocab 909), 2b. a profile of its step and 3. generation at batch 1/8/32 with 512 new tokens;
#   4. a real training run of the shipped model's shape on DATA_DIR (bf16, eager), sample.py from it and from the
#   shipped model (MIDI files to OUT_DIR/midi); 5. torchrun with one process over NCCL; 6. the same training
#   compiled (train.py refuses it where the gradients are off); 7. training speed at the shipped shape (steps 2 and 7
#   add a row with the whole step as one CUDA graph: what a launch-bound step would gain); 8. a profile
#   of decoding, without and with CUDA graphs (model.DecodeGraph: step 1 tests it, step 3 times it; sample.py takes
#   it once it has been measured); 9. `make model`'s first stage whole on DATA_DIR (its wall time).
# Everything printed goes to OUT_DIR/gpu.txt; the runs' metrics.jsonl are copied beside it. The first run (2026-12-04,
# BENCHMARKS.md) took 8 minutes to step 7 and ran out at 8 minutes: keep timeout_s at 600, and to run some steps only
# (those not yet measured first), name them: ONLY="1 3 7 8b" bash bench/gpu_session.sh DATA_DIR, then ONLY="2 2b 9".
set -uo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: bash bench/gpu_session.sh DATA_DIR [OUT_DIR]}
out=${2:-${OUT:-.}}
mkdir -p "$out/midi"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
runs=$(mktemp -d)
# The shipped model's shape (config.PRESETS["corpus"]) as model fields, for the benchmarks.
SHIPPED="--n_layer=4 --n_head=4 --n_embd=256 --kv_lora_rank=128 --qk_nope_head_dim=32 --qk_rope_head_dim=32 \
--v_head_dim=64 --n_shared_experts=1 --n_routed_experts=4 --top_k_experts=1 --expert_hidden=512 --block_size=512"
step() {  # step SECONDS TITLE COMMAND...: run one step under a time limit, timed (unless ONLY leaves it out)
  local limit=$1 title=$2
  shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" ${title%%.*} "* ]]; then return 0; fi
  echo; echo "=== $title ($(date -u +%H:%M:%S), limit ${limit}s): $*"
  local t0=$SECONDS
  timeout -k 5 "$limit" "$@"
  echo "--- rc $? in $((SECONDS - t0)) s"
}
summary() {  # summary RUN: median tokens/s and MFU of a run's logged steps after the first log, and its last losses
  [ -f "$1/metrics.jsonl" ] || return 1  # (a step left out, or one that failed before its first log)
  $PY - "$1" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(f"{sys.argv[1]}/metrics.jsonl")]
steps = [r for r in rows if "tokens_per_s" in r][1:]
evals = [r for r in rows if "val_loss" in r]
if steps:
    tps = statistics.median(r["tokens_per_s"] for r in steps)
    mfu = statistics.median(r.get("mfu", float("nan")) for r in steps)
    print(f"{sys.argv[1]}: median of {len(steps)} logged intervals: {tps:,.0f} tokens/s, MFU {mfu:.1%}, "
          f"last train loss {steps[-1]['loss']:.3f}")
print("evaluations:", [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in evals[-2:]])
EOF
}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl &&
    export PYTHONPATH=/tmp/site
fi
{
  date -u +"%Y-%m-%d %H:%M UTC"
  nvidia-smi -L
  $PY -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|',
    torch.cuda.get_device_name())"
  step 150 "1. CUDA-only tests" $PY -m pytest -q -p no:cacheprovider -x tests/test_model.py
  step 150 "1b. compiled against eager gradients" $PY bench/check_compile.py --vocab_size=909
  step 200 "2. training speed, the original's config" $PY bench/bench_train.py --vocab_size=909
  step 90 "2b. what bounds training at the original's config (a profile)" $PY bench/bench_train.py \
    --vocab_size=909 --dispatch=grouped --steps 5 --profile
  step 150 "3. generation speed, the original's config" $PY bench/bench_generate.py --vocab_size=909
  step 150 "4a. real training, the shipped model's shape, bf16 eager, 1,000 steps" $PY train.py --preset=corpus \
    --data_dir="$data" --out_dir="$runs/eager" --max_iters=1000 --lr_decay_iters=1000 --eval_interval=500 \
    --eval_iters=20 --log_interval=50 --compile=False
  summary "$runs/eager" && cp "$runs/eager/metrics.jsonl" "$out/eager_metrics.jsonl"
  step 60 "4b. sample.py from that run" $PY sample.py --out_dir "$runs/eager" --num_samples 2 --style bach --bars 8 \
    --output_dir "$out/midi"
  step 60 "4c. python sample.py: the shipped model, as a user runs it" $PY sample.py --output_dir "$runs/plain"
  step 60 "4c'. the same on the device's CPU" $PY sample.py --output_dir "$runs/plain_cpu" --device cpu
  step 60 "4d. sample.py, the shipped model, 32 Bach chorales of 16 bars at their defaults" $PY sample.py \
    --num_samples 32 --style bach --bars 16 --output_dir "$runs/many"
  step 90 "5. torchrun, one process over NCCL" $PY -m torch.distributed.run --standalone --nproc_per_node=1 \
    train.py --preset=corpus --data_dir="$data" --out_dir="$runs/ddp" --max_iters=100 --lr_decay_iters=100 \
    --warmup_iters=20 --eval_interval=100 --eval_iters=5 --log_interval=25
  summary "$runs/ddp"
  step 150 "6. the same training compiled (torch.compile), 1,000 steps" $PY train.py --preset=corpus \
    --data_dir="$data" --out_dir="$runs/compiled" --max_iters=1000 --lr_decay_iters=1000 --eval_interval=500 \
    --eval_iters=20 --log_interval=50 --compile=True
  summary "$runs/compiled" && cp "$runs/compiled/metrics.jsonl" "$out/compiled_metrics.jsonl"
  step 180 "7. training speed, the shipped model's shape, batch 8 and 32" bash -c \
    "$PY bench/bench_train.py --vocab_size=716 --batch_size=8 --dispatch=grouped,loop $SHIPPED && \
     $PY bench/bench_train.py --vocab_size=716 --batch_size=32 --dispatch=grouped $SHIPPED"
  step 60 "8. what bounds generation at batch 1" $PY bench/gpu_profile.py --vocab_size=909
  step 60 "8b. the same, each decode step a CUDA graph" $PY bench/gpu_profile.py --vocab_size=909 --graph
  step 420 "9. make model's first stage whole (10,000 steps of 8 x 512; best run alone: ONLY=9)" $PY train.py \
    --preset=corpus --data_dir="$data" --out_dir="$runs/stage1" --compile=False
  summary "$runs/stage1" && cp "$runs/stage1/metrics.jsonl" "$out/stage1_metrics.jsonl"
  nvidia-smi --query-gpu=name,driver_version,memory.used,clocks.sm --format=csv
} 2>&1 | tee "$out/gpu.txt"
