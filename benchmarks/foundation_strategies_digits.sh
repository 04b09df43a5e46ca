#!/usr/bin/env bash
# Issue 20's evidence on the bundled digits: the typicality, coverage and stochastic strategies
# against random, margin and BASE, from a cold start (10 to 50 labels) and at higher budgets
# (100 to 400 labels), 3 seeds each, on a frozen self-supervised trunk (linear evaluation).
#
#   bash benchmarks/foundation_strategies_digits.sh [OUT]     # default OUT: sweeps/foundation_digits
#
# 1. SimCLR pretraining of a ResNet-18 (CIFAR stem) on the 1,438 training digits at 32 px,
#    labels unused (configs/ssl/cifar10_simclr.yaml's settings, 100 epochs): OUT/simclr_resnet18.pt.
# 2. Every run: that trunk frozen, its features cached once in OUT/features (shared by all runs),
#    a linear head trained each round (lr 0.1, at most 60 epochs, patience 10 checks).
# 3. Cold start: no initial labels, 10 labels per round, 4 rounds after round 0 (10 → 50). The
#    label-free strategies pick round 0 themselves; the others start from 10 random labels
#    (--al.cold_start=random), as they need a trained head.
# 4. Higher budgets: 100 random initial labels, 100 per round, 3 rounds (100 → 400).
# 5. A report per regime (python -m al_lightning.report): OUT/report_cold, OUT/report_high.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-sweeps/foundation_digits}"
mkdir -p "$OUT"
TRUNK="$OUT/simclr_resnet18.pt"
SEEDS=0,1,2
LABEL_FREE=kmeans,typiclust,probcover,maxherding
NEEDS_LABELS=random,margin,base,bald,power_bald,power_margin,dropquery

if [ ! -f "$TRUNK" ]; then
  python pretrain.py fit --config configs/ssl/cifar10_simclr.yaml --data.dataset=digits --data.path=null \
    --data.dataset_args=null --data.image_size=32 --data.batch_size=256 --data.num_workers=0 \
    --trainer.max_epochs=100 --trainer.enable_progress_bar=false --trainer.default_root_dir="$OUT/pretrain" \
    --model.backbone_out="$TRUNK"
fi

COMMON=(
  --config demo.yaml --data.image_size=32 --model.cifar_stem=true --model.pretrained="$TRUNK"
  --model.freeze_backbone=true --data.feature_cache="$OUT/features" --model.lr=0.1 --model.weight_decay=0
  --al.max_epochs=60 --al.min_epochs=10 --al.patience=10
)

python -m al_lightning.sweep --strategies "$LABEL_FREE" --seeds "$SEEDS" --out "$OUT/cold" "${COMMON[@]}" \
  --data.initial_pool_size=0 --al.budget=10 --al.rounds=4
python -m al_lightning.sweep --strategies "$NEEDS_LABELS" --seeds "$SEEDS" --out "$OUT/cold" "${COMMON[@]}" \
  --data.initial_pool_size=0 --al.cold_start=random --al.budget=10 --al.rounds=4
python -m al_lightning.sweep --strategies "$LABEL_FREE,$NEEDS_LABELS" --seeds "$SEEDS" --out "$OUT/high" "${COMMON[@]}" \
  --data.initial_pool_size=100 --al.budget=100 --al.rounds=3

python -m al_lightning.report "$OUT/cold" --out "$OUT/report_cold"
python -m al_lightning.report "$OUT/high" --out "$OUT/report_high"
