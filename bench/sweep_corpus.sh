#!/usr/bin/env bash
# The model sweep for the shipped model (#11 §3): six short runs on the whole corpus with the same token budget
# (700 steps of 16 x 256 tokens, 2.9M tokens), two at a time with one thread each (bench_cpu.py: 1.3x the work of
# one two-thread run). Results: MODEL.md's sweep table, from each run's metrics.jsonl.
#   bash bench/sweep_corpus.sh DATA_DIR OUT_ROOT [RUN ...]
# STEPS=1400 sets a longer budget; RUN names (below) pick some of the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?data dir from prepare.py}; OUT=${2:?folder for the runs}; shift 2
STEPS=${STEPS:-700}
mkdir -p "$OUT"
COMMON=(--data_dir="$DATA" --device=cpu --dtype=float32 --batch_size=16 --block_size=256
        --gradient_accumulation_steps=1 --max_iters=$STEPS --warmup_iters=50 --lr_decay_iters=$STEPS --learning_rate=2e-3
        --min_lr=2e-4 --eval_interval=$((STEPS / 2)) --eval_iters=40 --log_interval=50 --dropout=0.0 --bias_update_speed=0.001
        --n_head=4 --qk_nope_head_dim=32 --qk_rope_head_dim=32 --v_head_dim=64 --top_k_experts=1 --overwrite)
BASE="--n_layer=4 --n_embd=256 --kv_lora_rank=128 --n_shared_experts=1 --n_routed_experts=4 --expert_hidden=512"
RUNS=(
  "large --n_layer=6 --n_embd=320 --n_head=5 --kv_lora_rank=160 --n_shared_experts=1 --n_routed_experts=4 --expert_hidden=640"
  "small --n_layer=3 --n_embd=192 --n_head=3 --kv_lora_rank=96 --n_shared_experts=1 --n_routed_experts=4 --expert_hidden=384"
  "base $BASE"
  "dense $BASE --n_shared_experts=2 --n_routed_experts=0"
  "kv64 $BASE --kv_lora_rank=64"
  "kv256 $BASE --kv_lora_rank=256"
)
for run in "${RUNS[@]}"; do
  read -r name args <<< "$run"
  if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
  while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n; done
  # shellcheck disable=SC2086  # $args holds several --key=value words; later ones override COMMON's
  OMP_NUM_THREADS=1 .venv/bin/python train.py "${COMMON[@]}" $args --out_dir="$OUT/$name" > "$OUT/$name.log" 2>&1 &
done
wait
for run in "${RUNS[@]}"; do
  read -r name _ <<< "$run"
  if [ -f "$OUT/$name.log" ]; then echo "$name: $(grep -h "step $STEPS:" "$OUT/$name.log")"; fi
done
