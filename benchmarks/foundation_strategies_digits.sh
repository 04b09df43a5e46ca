# Issue 20's evidence on the bundled digits: the typicality, coverage and stochastic strategies
# against random, margin and BASE, from a cold start (10 to 50 labels) and at higher budgets
# (100 to 400 labels), 3 seeds each, by linear evaluation on fixed embeddings.
#
#   bash benchmarks/foundation_strategies_digits.sh [OUT]     # default OUT: sweeps/foundation_digits
#
# 1. The embeddings: each digit's 8x8 pixels (the digits source's own train/test split), 64
#    values in [0, 1], written to OUT/digits_pixels.pt for the `features` dataset. Pixels are
#    what a 2-core CPU can afford here (SimCLR on the digits takes ~1 min an epoch); they are a
#    strong embedding of this dataset (a linear head on all of them: see the report).
# 2. Every run: a linear head trained each round (SGD lr 0.1, momentum 0.9, batches of 16, 20 to
#    100 epochs, patience 20 checks), configs/features_linear.yaml otherwise.
# 3. Cold start: no initial labels, 10 labels per round, 4 rounds after round 0 (10 → 50). The
#    label-free strategies pick round 0 themselves; the others start from 10 random labels
#    (--al.cold_start=random), as they need a trained head.
# 4. Higher budgets: 100 random initial labels, 100 per round, 3 rounds (100 → 400).
# 5. A report per regime (python -m al_lightning.report): OUT/report_cold, OUT/report_high.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-sweeps/foundation_digits}"
mkdir -p "$OUT"
FEATURES="$OUT/digits_pixels.pt"
SEEDS=0,1,2
LABEL_FREE=kmeans,typiclust,probcover,maxherding
NEEDS_LABELS=random,margin,base,bald,power_bald,power_margin,dropquery

python - "$FEATURES" <<'PY'
import sys

import torch

from al_lightning.data.sources.digits import DigitsSource

splits = DigitsSource(image_size=8).load()
torch.save(
    {
        "train_features": splits.train.images[:, 0].flatten(1).contiguous(),
        "train_targets": splits.train.targets,
        "test_features": splits.test.images[:, 0].flatten(1).contiguous(),
        "test_targets": splits.test.targets,
        "class_names": splits.class_names,
    },
    sys.argv[1],
)
PY

COMMON=(
  --config features_linear.yaml --data.path="$FEATURES" --data.batch_size=16 --model.lr=0.1
  --al.max_epochs=100 --al.min_epochs=20 --al.patience=20
)

python -m al_lightning.sweep --strategies "$LABEL_FREE" --seeds "$SEEDS" --out "$OUT/cold" "${COMMON[@]}" \
  --data.initial_pool_size=0 --al.budget=10 --al.rounds=4
python -m al_lightning.sweep --strategies "$NEEDS_LABELS" --seeds "$SEEDS" --out "$OUT/cold" "${COMMON[@]}" \
  --data.initial_pool_size=0 --al.cold_start=random --al.budget=10 --al.rounds=4
python -m al_lightning.sweep --strategies "$LABEL_FREE,$NEEDS_LABELS" --seeds "$SEEDS" --out "$OUT/high" "${COMMON[@]}" \
  --data.initial_pool_size=100 --al.budget=100 --al.rounds=3

python -m al_lightning.report "$OUT/cold" --out "$OUT/report_cold"
python -m al_lightning.report "$OUT/high" --out "$OUT/report_high"
