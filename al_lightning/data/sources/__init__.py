"""Dataset sources: ``build_source(name, ...)`` → an object that loads train and test splits.

A source knows where its images come from, how many classes there are, and which transforms
suit it; the :class:`~al_lightning.data.ActiveDataModule` does the rest (pool, validation
split, loaders). Each source registers itself in its own module.
"""

from al_lightning.data.sources.source import (
    DatasetSource,
    DatasetSplits,
    available_sources,
    build_source,
    register_source,
)

from al_lightning.data.sources import digits, fake, image_folder  # noqa: E402,F401  isort: skip

__all__ = ["DatasetSource", "DatasetSplits", "available_sources", "build_source", "register_source"]
