"""The data steps of ``benchmarks/fashion_mnist.sh`` (each takes seconds):

``slice SRC DST --train N --test M``
    the first N training and M test images of the four idx files in SRC, written to DST as
    uncompressed idx files (the ``fashion_mnist`` source reads any number of images), for the
    script's small slice.
``pixels DATA OUT.pt [--imbalance-ratio R] [--val-fraction F]``
    the raw-pixel baseline: every image of ``--data.dataset=fashion_mnist`` (long-tailed when
    R > 1) as its 784 pixels, normalised with the source's mean and std, in a ``features``
    file; prints the number of training points left in the pool once ``train.py`` holds out
    its stratified validation split (``--data.val_fraction`` F), i.e. "all labels" for a probe.
``trunk CHECKPOINT.ckpt OUT.pt``
    the trunk's weights (``backbone.*``) of a pretraining checkpoint, as ``pretrain.py`` writes
    them at the end of its fit: for a pretraining resumed from its last epoch's checkpoint,
    whose fit ends at once without writing them.
``probe-table WORK OUT.md``
    the linear probes' test accuracy (``WORK/probe/*/**/rounds.csv``) as a markdown table.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

from al_lightning.data.sources.fashion_mnist import (
    FILES,
    IMAGES_MAGIC,
    LABELS_MAGIC,
    MEAN,
    STD,
    FashionMNISTSource,
    read_idx,
)
from al_lightning.data.splits import stratified_split
from al_lightning.io import atomic_torch_save

#: What each probe folder under WORK/probe/ holds.
PROBES = {
    "pixels_balanced": ("raw pixels (784)", "balanced"),
    "trunk_balanced": ("SimCLR ResNet-18 trunk (512)", "balanced"),
}


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.exists():
            return candidate
    raise SystemExit(f"{name}(.gz) not found in {folder}; install Debian's dataset-fashion-mnist")


def make_slice(src: Path, dst: Path, train: int, test: int) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for split, size in (("train", train), ("test", test)):
        images_name, labels_name = FILES[split]
        write_idx(dst / images_name, read_idx(find(src, images_name), IMAGES_MAGIC)[:size], IMAGES_MAGIC)
        write_idx(dst / labels_name, read_idx(find(src, labels_name), LABELS_MAGIC)[:size], LABELS_MAGIC)


def pixels(data: str, out: Path, imbalance_ratio: float, val_fraction: float) -> int:
    splits = FashionMNISTSource(path=data, imbalance_ratio=imbalance_ratio).load()

    def flat(images: torch.Tensor) -> torch.Tensor:
        return ((images.float() / 255 - MEAN) / STD).flatten(1).contiguous()

    torch.save(
        {
            "train_features": flat(splits.train.images),
            "train_targets": splits.train.targets,
            "test_features": flat(splits.test.images),
            "test_targets": splits.test.targets,
            "class_names": splits.class_names,
        },
        out,
    )
    held_out = stratified_split(splits.train.targets, val_fraction, torch.Generator().manual_seed(0))
    return len(splits.train.targets) - held_out.numel()


def trunk_weights(checkpoint: Path, out: Path) -> None:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    trunk = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    if not trunk:
        raise SystemExit(f"{checkpoint} holds no backbone.* weights: not a pretrain.py checkpoint")
    atomic_torch_save(trunk, out)


def last_row(folder: Path) -> dict[str, str]:
    files = sorted(folder.rglob("rounds.csv"))
    if not files:
        raise SystemExit(f"no rounds.csv under {folder}: the probe has not run")
    with files[-1].open() as f:
        return list(csv.DictReader(f))[-1]


def probe_table(work: Path, out: Path) -> None:
    lines = [
        "| features | training set | labels | test top-1 | test top-5 | epochs |",
        "|---|---|---|---|---|---|",
    ]
    for name, (features, setting) in PROBES.items():
        row = last_row(work / "probe" / name)
        lines.append(
            f"| {features} | {setting} | {int(row['num_labeled']):,} | {float(row['test_acc_top1']):.4f} "
            f"| {float(row['test_acc_top5']):.4f} | {row['epochs']} |"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "Linear probes with every training label (minus the validation split), "
        "configs/features_linear.yaml's head and schedule:\n\n" + "\n".join(lines) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("slice")
    s.add_argument("src", type=Path)
    s.add_argument("dst", type=Path)
    s.add_argument("--train", type=int, required=True)
    s.add_argument("--test", type=int, required=True)
    p = sub.add_parser("pixels")
    p.add_argument("data")
    p.add_argument("out", type=Path)
    p.add_argument("--imbalance-ratio", type=float, default=1.0)
    p.add_argument("--val-fraction", type=float, default=0.1)
    w = sub.add_parser("trunk")
    w.add_argument("checkpoint", type=Path)
    w.add_argument("out", type=Path)
    t = sub.add_parser("probe-table")
    t.add_argument("work", type=Path)
    t.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.command == "slice":
        make_slice(args.src, args.dst, args.train, args.test)
    elif args.command == "trunk":
        trunk_weights(args.checkpoint, args.out)
    elif args.command == "pixels":
        print(pixels(args.data, args.out, args.imbalance_ratio, args.val_fraction))
    else:
        probe_table(args.work, args.out)


if __name__ == "__main__":
    main()
