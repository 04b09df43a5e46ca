"""ImageNet (ILSVRC-2012) in its usual on-disk layout: ``train/<wnid>/`` and ``val/<wnid>/``."""

from __future__ import annotations

from pathlib import Path

from al_lightning.data.sources.image_folder import ImageFolderSource
from al_lightning.data.sources.source import register_source

#: The script that sorts the 50,000 flat validation images into class folders (the one
#: PyTorch's ImageNet example uses).
VALPREP_URL = "https://raw.githubusercontent.com/soumith/imagenetloader.torch/master/valprep.sh"


@register_source("imagenet")
class ImageNetSource(ImageFolderSource):
    """ImageNet-1k (Russakovsky et al., "ImageNet Large Scale Visual Recognition Challenge", IJCV 2015).

    ``path/train/<wnid>/*.JPEG`` is the training set (1.28M images); ``path/val/<wnid>/*.JPEG``
    (the 50,000 validation images, sorted into class folders) is the test split. The data
    module holds ``val_fraction`` of the training set out for early stopping (the paper: 10%).
    Class names are the WordNet ids in sorted order, so labels match torchvision's ImageFolder
    and the ImageNet-LT split files. ImageNet transforms at ``image_size`` (default 224):
    RandomResizedCrop + flip for training, Resize(256) + CenterCrop(224) for evaluation.

    The number of classes comes from listing ``train/``; files are listed by :meth:`load` with
    one ``os.scandir`` per class folder, and no image is opened until it is read.
    """

    layout = "an ImageNet folder with train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (val/ sorted into the same class folders)"
    test_dirs = ("val",)

    def _flat_fix(self, root: Path) -> str:
        if root == self.test_dir:
            return f"sort them into val/<wnid>/ by running, inside val/, the valprep.sh of PyTorch's ImageNet example ({VALPREP_URL})"
        return "extract each class's archive of ILSVRC2012_img_train.tar into train/<wnid>/"
