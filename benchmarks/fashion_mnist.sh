#!/usr/bin/env bash
# Issue 21's benchmark on real data: Fashion-MNIST (Debian's dataset-fashion-mnist, read from
# /usr/share/datasets/fashion-mnist), a SimCLR backbone pretrained on it, and the paper's
# linear-evaluation protocol on the frozen trunk's cached features.
#
#   bash benchmarks/fashion_mnist.sh            # the full run: ~3.7 h measured (pretraining 49 min, 126 sweep runs of 0.6-3 min), the machine to itself
#   SLICE=1 bash benchmarks/fashion_mnist.sh    # a small slice of every stage: 1.5 min quiet, 2.5 min busy
#
# Stages; each is skipped when its output exists, so running the command again continues:
# 1. Pretraining: pretrain.py with configs/ssl/fashion_mnist_simclr.yaml (ResNet-18, 12 epochs
#    over the 60,000 training images; 49 min on our 2 cores)
#    -> WORK/simclr_resnet18.pt.
# 2. Linear probes with every label (54,000; 6,000 held out for early stopping), the head,
#    schedule and batch of configs/features_linear.yaml, at most 50 epochs: on the trunk's features (this run also fills the
#    feature cache WORK/cache_balanced the sweep reads) and on the raw pixels (a features file
#    written by benchmarks/fashion_mnist_data.py) -> RESULTS/probe.md.
# 3. The sweep (python -m al_lightning.sweep), balanced and long-tailed (imbalance ratio 10,
#    24,516 training images, its own cache WORK/cache_lt10): every registered strategy but
#    vaal (it reads images, which a feature cache does not hold) x seeds 0,1,2; 100 random
#    initial labels, then 9 rounds of 100 (to 1,000): the paper's CIFAR-10 setting (1,000 +
#    1,000 per round) scaled to where a linear head on 10 classes is still learning; pairwise
#    strategies score a random 20,000 of the pool (--al.pairwise_subset, as the paper on ImageNet).
# 4. The reports (python -m al_lightning.report): RESULTS/balanced/ and RESULTS/lt10/, the
#    paper's figures and summary.md (accuracy and imbalance per budget), and in five/ the same
#    for random, BASE, margin, TypiClust and BALD (the docs' figures).
#
# Environment: WORK (default sweeps/fashion_mnist, or sweeps/fashion_mnist_slice with SLICE=1)
# holds checkpoints, caches and runs; RESULTS (default benchmarks/results/fashion_mnist, or
# WORK/results with SLICE=1) the probe table and reports; DATA the idx files' folder.
# SLICE=1: the first 512 training and 200 test images, 1 pretraining epoch, 2 strategies
# (random, base), 1 seed, 20 + 20 x 2 labels, a few epochs per round.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
DATA="${DATA:-/usr/share/datasets/fashion-mnist}"
SLICE="${SLICE:-0}"
if [[ "$SLICE" == 1 ]]; then
  WORK="${WORK:-sweeps/fashion_mnist_slice}"
else
  WORK="${WORK:-sweeps/fashion_mnist}"
fi
RESULTS="${RESULTS:-$([[ "$SLICE" == 1 ]] && echo "$WORK/results" || echo benchmarks/results/fashion_mnist)}"
mkdir -p "$WORK" "$RESULTS"
CKPT="$WORK/simclr_resnet18.pt"
stage() { echo "[fashion_mnist $(date -u +%H:%M:%S)] $*" >&2; }

if [[ "$SLICE" == 1 ]]; then
  python benchmarks/fashion_mnist_data.py slice "$DATA" "$WORK/data" --train 512 --test 200
  DATA="$WORK/data"
  PRETRAIN=(--trainer.max_epochs=1 --data.batch_size=64)
  STRATEGIES=random,base
  SEEDS=0
  HEAD=(--data.batch_size=16 --al.max_epochs=5 --al.min_epochs=1 --al.patience=2)
  PROBE=("${HEAD[@]}")
  BUDGETS=(--data.initial_pool_size=20 --al.budget=20 --al.rounds=2)
else
  PRETRAIN=()
  # Every registered strategy (the registry's own list) but vaal: it trains on images, and the
  # sweep's runs read the feature cache.
  STRATEGIES="$(python -c 'from al_lightning.strategies import available; print(",".join(s for s in available() if s != "vaal"))')"
  SEEDS=0,1,2
  # configs/features_linear.yaml's SGD (lr 0.1, momentum 0.9, cosine), in batches of 64 so that
  # 100 labels make a few steps an epoch; 20 to 100 epochs, stopping after 20 checks without a
  # better validation top-1 (as benchmarks/foundation_strategies_digits.sh).
  HEAD=(--data.batch_size=64 --al.max_epochs=100 --al.min_epochs=20 --al.patience=20)
  # The all-label probes: configs/features_linear.yaml's batches of 256 (54,000 labels in
  # batches of 64 took ~29 s an epoch here), at most 50 epochs, patience 10 checks.
  PROBE=(--data.batch_size=256 --al.max_epochs=50 --al.patience=10)
  # The strategies that compare pool points with each other (coreset, BADGE, ProbCover,
  # MaxHerding, TypiClust, k-means, cluster margin, DropQuery and the partitioned ones) score a
  # seeded random 20,000 of the pool each round, labeled points included, as the paper's code
  # scored 130,000 of ImageNet's: on 54,000 points and 2 cores, ProbCover's purity radius alone
  # ran over 10 minutes a round (raw pixels, measured), 9 rounds x 6 runs.
  BUDGETS=(--data.initial_pool_size=100 --al.budget=100 --al.rounds=9 --al.pairwise_subset=20000)
fi

# 1. Pretraining.
if [[ -f "$CKPT" ]]; then
  stage "pretraining: $CKPT exists, skipped"
else
  # An interrupted pretraining continues from its newest epoch checkpoint (Lightning writes one
  # at the end of every epoch), in a new log folder.
  RESUME=()
  last=""
  if [[ -d "$WORK/pretrain" ]]; then
    last="$(find "$WORK/pretrain" -name '*.ckpt' -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2-)"
  fi
  [[ -n "$last" ]] && RESUME=(--ckpt_path="$last")
  stage "pretraining -> $CKPT${last:+ (continuing $last)}"
  python pretrain.py fit --config configs/ssl/fashion_mnist_simclr.yaml --data.path="$DATA" \
    --trainer.default_root_dir="$WORK/pretrain" --model.backbone_out="$CKPT" "${PRETRAIN[@]}" "${RESUME[@]}"
  if [[ ! -f "$CKPT" && -n "$last" ]]; then  # resumed from the last epoch: the fit ended at once
    python benchmarks/fashion_mnist_data.py trunk "$last" "$CKPT"
  fi
fi

# The frozen trunk on the images, its features cached per training set; as train.py reads it.
trunk() {  # trunk IMBALANCE_RATIO CACHE
  echo --data.dataset=fashion_mnist --data.path="$DATA" --data.image_size=null \
    --data.dataset_args.imbalance_ratio="$1" --model.backbone=resnet18 --model.cifar_stem=false \
    --model.pretrained="$CKPT" --model.freeze_backbone=true --data.feature_cache="$2"
}

# 2. Linear probes with every label: one round, no query.
probe() {  # probe NAME POOL_SIZE OVERRIDES...
  local name="$1" pool="$2"
  shift 2
  if [[ -f "$WORK/probe/$name/done" ]]; then
    stage "probe $name: done, skipped"
    return
  fi
  stage "probe $name: $pool labels"
  rm -rf "${WORK:?}/probe/$name"
  python train.py fit --config features_linear.yaml "$@" "${PROBE[@]}" --data.initial_pool_size="$pool" \
    --al.rounds=0 --trainer.default_root_dir="$WORK/probe/$name"
  touch "$WORK/probe/$name/done"
}
if [[ ! -f "$WORK/pixels_balanced.pt" || ! -f "$WORK/pool_balanced.txt" ]]; then
  stage "raw pixels -> $WORK/pixels_balanced.pt"
  python benchmarks/fashion_mnist_data.py pixels "$DATA" "$WORK/pixels_balanced.pt" > "$WORK/pool_balanced.txt"
fi
POOL="$(cat "$WORK/pool_balanced.txt")"
probe pixels_balanced "$POOL" --data.path="$WORK/pixels_balanced.pt"
# shellcheck disable=SC2046  # trunk's words are flags without spaces
probe trunk_balanced "$POOL" $(trunk 1 "$WORK/cache_balanced")
python benchmarks/fashion_mnist_data.py probe-table "$WORK" "$RESULTS/probe.md"
cat "$RESULTS/probe.md"

# 3. The sweeps (each skips its finished runs and resumes an unfinished one), 4. the reports.
for setting in balanced lt10; do
  ratio=$([[ "$setting" == balanced ]] && echo 1 || echo 10)
  stage "sweep $setting: $STRATEGIES x seeds $SEEDS"
  # Only last.ckpt per run (resume): a round checkpoint holds the frozen trunk too (44 MB), and
  # 126 runs x 10 rounds of them would fill 54 GB; the reports read each run's rounds.csv.
  # shellcheck disable=SC2046
  python -m al_lightning.sweep --config features_linear.yaml --strategies "$STRATEGIES" --seeds "$SEEDS" \
    --out "$WORK/sweep_$setting" $(trunk "$ratio" "$WORK/cache_$setting") "${HEAD[@]}" "${BUDGETS[@]}" \
    --al.save_round_checkpoints=false
  stage "report $setting -> $RESULTS/$setting"
  python -m al_lightning.report "$WORK/sweep_$setting" --out "$RESULTS/$setting"
  # The docs' figures: five strategies, legible where 21 curves are not.
  five=()
  shopt -s nullglob  # the slice runs two of them
  for strategy in random base margin typiclust bald; do
    five+=("$WORK/sweep_$setting/$strategy"-seed*)
  done
  shopt -u nullglob
  stage "report $setting, five strategies -> $RESULTS/$setting/five"
  python -m al_lightning.report "${five[@]}" --out "$RESULTS/$setting/five"
done
stage "done: $RESULTS"
