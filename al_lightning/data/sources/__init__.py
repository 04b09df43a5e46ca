"""Dataset sources: ``build_source(name, options, path=...)`` → an object that loads train and test splits.

A source knows where its images come from, how many classes there are, and which transforms
suit it; the :class:`~al_lightning.data.ActiveDataModule` does the rest (pool, validation
split, loaders). Each source registers itself in its own module: ``digits`` (bundled),
``fake``, ``image_folder``, ``cifar10``, ``cifar10_lt``, ``fashion_mnist``, ``imagenet``, ``imagenet_lt`` and
``features`` (precomputed feature vectors).
"""

from al_lightning.data.sources.source import (
    SOURCES,
    DatasetSource,
    DatasetSplits,
    build_source,
    register_source,
)

from al_lightning.data.sources import (  # noqa: E402,F401  isort: skip
    cifar10,
    cifar10_lt,
    digits,
    fashion_mnist,
    fake,
    features,
    image_folder,
    image_pool,
    imagenet,
    imagenet_lt,
)

__all__ = ["SOURCES", "DatasetSource", "DatasetSplits", "build_source", "register_source"]
