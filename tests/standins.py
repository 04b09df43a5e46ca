"""Small stand-ins of the real dataset layouts, written by tests: CIFAR-10's python batches,
ImageNet class folders, ImageNet-LT split files and feature files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
WNIDS = ["n01440764", "n01443537", "n01484850"]


def write_cifar(root: Path, per_class: int = 5, test_per_class: int = 2) -> Path:
    """The python version's files, as torchvision extracts them. Each training image encodes its
    global index in its first two pixel values, so tests can tell which images were kept."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    labels = np.tile(np.arange(10), per_class)  # interleaved classes, as in the real batches
    data = np.random.default_rng(0).integers(0, 256, (labels.size, 3072), dtype=np.uint8)
    data[:, 0], data[:, 1] = np.arange(labels.size) % 256, np.arange(labels.size) // 256
    for i, part in enumerate(np.array_split(np.arange(labels.size), 5), start=1):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": data[part], "labels": labels[part].tolist()}, f)
    test_labels = np.tile(np.arange(10), test_per_class)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((test_labels.size, 3072), np.uint8), "labels": test_labels.tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_CLASSES, "num_vis": 3072}, f)
    return root


def write_jpeg(path: Path, shade: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (shade, 255 - shade, 0)).save(path, "JPEG")
    return path


def write_lt_splits(folder: Path) -> None:
    """ImageNet-LT split files over the ``imagenet`` fixture: an uneven train split, all of val as test."""
    folder.mkdir(parents=True, exist_ok=True)
    train = [(f"train/{w}/{w}_{i}.JPEG", c) for c, (w, n) in enumerate(zip(WNIDS, (3, 2, 1))) for i in range(n)]
    test = [(f"val/{w}/ILSVRC2012_val_{c}{i}.JPEG", c) for c, w in enumerate(WNIDS) for i in range(2)]
    (folder / "ImageNet_LT_train.txt").write_text("".join(f"{p} {c}\n" for p, c in train))
    (folder / "ImageNet_LT_test.txt").write_text("".join(f"{p} {c}\n" for p, c in test))


def write_features(path: Path, **overrides) -> Path:
    content = {
        "train_features": torch.randn(12, 5),
        "train_targets": torch.arange(12) % 4,
        "test_features": torch.randn(6, 5, dtype=torch.float16),
        "test_targets": torch.arange(6) % 4,
        "class_names": ["a", "b", "c", "d"],
    }
    content.update(overrides)
    torch.save({k: v for k, v in content.items() if v is not None}, path)
    return path


def write_random_features(path: Path, train: int, test: int, num_classes: int, dim: int = 4) -> Path:
    """A features file of seeded random embeddings, labels cycling through ``num_classes``."""
    generator = torch.Generator().manual_seed(0)
    return write_features(
        path,
        train_features=torch.randn(train, dim, generator=generator),
        train_targets=torch.arange(train) % num_classes,
        test_features=torch.randn(test, dim, generator=generator),
        test_targets=torch.arange(test) % num_classes,
        class_names=None,
    )


def write_gaussian_features(path: Path, train: int, test: int) -> Path:
    """A ``features`` file of 4 separated Gaussian classes in 16 dimensions (seed 0), classes in turn."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=generator) * 2

    def points(n):
        targets = torch.arange(n) % 4
        return centres[targets] + torch.randn(n, 16, generator=generator), targets

    (train_x, train_y), (test_x, test_y) = points(train), points(test)
    torch.save({"train_features": train_x, "train_targets": train_y, "test_features": test_x, "test_targets": test_y}, path)
    return path


def write_colour_photos(root: Path, count: int = 24) -> dict[str, str]:
    """A team's folder of unlabeled photos: noisy 12-px PNGs, red or green, in three sub-folders
    that are not classes, with a ``test/<colour>/`` folder beside. Returns each photo's path
    relative to ``root / "photos"`` with its true colour (the name says it too)."""
    noise = np.random.default_rng(0)

    def write(path: Path, colour: str) -> None:
        pixels = noise.integers(0, 100, (12, 12, 3))
        pixels[..., 0 if colour == "red" else 1] += 150
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.astype(np.uint8)).save(path)

    truth = {}
    for i in range(count):
        colour = "red" if i % 2 else "green"
        item = f"batch{i % 3}/{colour}_{i:02d}.png"
        write(root / "photos" / item, colour)
        truth[item] = colour
    for colour in ("red", "green"):
        write(root / "test" / colour / "t.png", colour)
    return truth


def write_seed_labels(root: Path, truth: dict[str, str], count: int = 8) -> list[str]:
    """``root/seed.csv`` with the true colour of the first ``count`` photos (sorted); those photos."""
    seeds = sorted(truth)[:count]
    (root / "seed.csv").write_text("path,label\n" + "".join(f"{p},{truth[p]}\n" for p in seeds))
    return seeds


#: A run over :func:`write_colour_photos` with :func:`write_seed_labels`: one query of 6 by margin.
PHOTO_RUN = [
    "--data.dataset=image_pool", "--data.path=photos", "--data.labels=seed.csv", "--data.dataset_args.test_path=test",
    "--data.val_fraction=0.25", "--al.strategy=margin", "--al.budget=6", "--al.rounds=1",
]  # fmt: skip


#: A real timm model with published weights, small enough for tests (0.3M parameters, 160 px, patch 16).
HUB_MODEL = "test_vit.r160_in1k"


def publish_to_hub_cache(cache: Path, name: str = HUB_MODEL, seed: int = 0, revision: str = "0" * 40) -> dict[str, torch.Tensor]:
    """Put seeded weights of timm's ``name`` where huggingface_hub looks for timm's published ones, as
    ``hf download timm/NAME`` leaves them: ``models--timm--NAME/{refs/main, snapshots/REV/model.safetensors,
    snapshots/REV/config.json}`` under ``cache`` (an ``HF_HUB_CACHE``). Returns the weights (classifier included)."""
    import json

    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    net = timm.create_model(name, pretrained=False)
    weights = {k: v.contiguous() for k, v in net.state_dict().items()}
    repo = cache / f"models--timm--{name}"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    save_file(weights, str(snapshot / "model.safetensors"))
    architecture, tag = name.split(".", 1)
    config = {"architecture": architecture, "num_classes": net.num_classes, "pretrained_cfg": {**net.pretrained_cfg, "tag": tag}}
    (snapshot / "config.json").write_text(json.dumps(config))
    return weights
