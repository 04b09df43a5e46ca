"""VAAL, Variational Adversarial Active Learning: query what a discriminator takes for unlabeled."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from al_lightning.distributed import average_over_ranks
from al_lightning.errors import ConfigurationError
from al_lightning.strategies.outputs import PoolOutputs
from al_lightning.strategies.registry import register
from al_lightning.strategies.strategy import RankedStrategy
from al_lightning.strategies.vaal_networks import VAE, Discriminator

#: Pool images scored per forward pass when selecting from dense outputs.
SCORE_BATCH = 256


def random_crop(images: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """A ``size``×``size`` window at a random place in each image, offsets drawn from ``generator``.

    A side no longer than ``size`` is kept whole (CIFAR's 32 pixels under the default 64).
    """
    n, _, height, width = images.shape
    rows, cols = min(height, size), min(width, size)
    if (rows, cols) == (height, width):
        return images
    tops = torch.randint(height - rows + 1, (n,), generator=generator).tolist()
    lefts = torch.randint(width - cols + 1, (n,), generator=generator).tolist()
    return torch.stack([image[:, top : top + rows, left : left + cols] for image, top, left in zip(images, tops, lefts)])


def centre_crop(images: Tensor, size: int) -> Tensor:
    """The central ``size``×``size`` window of each image (sides no longer than ``size`` kept whole).

    Scoring uses it so that a pool image always gets the same score.
    """
    height, width = images.shape[-2:]
    rows, cols = min(height, size), min(width, size)
    top, left = (height - rows) // 2, (width - cols) // 2
    return images[..., top : top + rows, left : left + cols]


def _both_sets_bce(logits: Tensor, num_labeled: int, unlabeled_target: float) -> Tensor:
    """BCE of the labeled logits against 1 plus that of the unlabeled ones against ``unlabeled_target``.

    Each set is averaged on its own, as in VAAL's repository, so their sizes don't weigh them.
    """
    labeled, unlabeled = logits[:num_labeled], logits[num_labeled:]
    bce = F.binary_cross_entropy_with_logits
    return bce(labeled, torch.ones_like(labeled)) + bce(unlabeled, torch.full_like(unlabeled, unlabeled_target))


@register("vaal")
class VAAL(RankedStrategy):
    """Select the b pool images the discriminator finds least likely to be labeled.

    Sinha et al. 2019, "Variational Adversarial Active Learning", as the paper's appendix A.3
    adapts it: a VAE (latent 64) learns a latent space of labeled and unlabeled images while a
    discriminator on the encoder mean μ learns to tell labeled (1) from unlabeled (0), and the
    VAE is also trained (weight ``adversary_weight``, λ = 10) to make both look labeled. The
    query takes the lowest P(labeled). The VAE is Tolstikhin et al.'s (2017) conv
    encoder/decoder trained on random ``crop_size`` crops (64×64; smaller images whole), with
    ONE VAE step and ONE discriminator step per classifier step (the repository does two VAE
    steps). Both Adam learning rates follow the classifier's schedule (``lr_scale`` of
    :meth:`train_step`), as the repository steps a copy of the classifier's scheduler on each. The loss is the repository's: per-set mean squared error + ``kl_weight`` × the KL
    divergence summed over latent dimensions and images, on both sets.

    Unlike the other strategies VAAL has state: networks that the query callback trains
    alongside the classifier with :meth:`train_step` after :meth:`reset` at the start of each
    round (:meth:`fit` does the same standalone). Bugs of the reference code not copied:

    - layers kept from round to round: :meth:`reset` drops the networks and optimizers, and
      the next step builds fresh ones from the given seed (built at the first batch because
      their size follows the crop size and channel count);
    - NumPy's global RNG re-seeded on every forward: crops and the VAE's noise come from one
      ``torch.Generator`` per instance, and initialisation runs under ``fork_rng``, so the
      global RNGs are never touched;
    - untrained networks used for the query under DDP: each rank trains on its own batches
      and :func:`average_over_ranks` averages gradients and BatchNorm statistics before every
      step, so all ranks hold the same trained networks; selecting without any training
      raises :class:`~al_lightning.errors.ConfigurationError`.

    Cost: training adds one VAE forward/backward (labeled and unlabeled batch together) and
    one discriminator forward/backward per classifier step (the discriminator learns on the
    VAE step's μ, detached, where the repository runs the encoder again); scoring is one encoder and one
    discriminator forward per pool image (centre crop, eval mode); the ranking keeps O(b)
    keys beyond one batch of ``SCORE_BATCH`` images.

    Usage::

        vaal = build("vaal", seed=0)
        vaal.fit(labeled_images, pool_images, steps=1000)
        chosen = vaal.select(PoolOutputs(index=pool_ids, images=pool_images), budget=100)

    Args:
        seed: stands in for :meth:`reset`'s seed when training starts without a reset.
        latent_dim: size of the VAE's latent space.
        crop_size: side of the random training crops, a power of two >= 8.
        width: channels of the VAE's first conv (128 in the paper); all layers scale with it.
        adversary_weight: λ, weight of the VAE's adversarial loss.
        vae_lr: Adam learning rate of the VAE.
        discriminator_lr: Adam learning rate of the discriminator.
        kl_weight: weight of the KL term (the repository's β).
    """

    requires = ("images",)

    def __init__(
        self,
        seed: int = 0,
        latent_dim: int = 64,
        crop_size: int = 64,
        width: int = 128,
        adversary_weight: float = 10.0,
        vae_lr: float = 5e-5,
        discriminator_lr: float = 1e-3,
        kl_weight: float = 1.0,
    ) -> None:
        super().__init__(seed)
        if crop_size < 8 or crop_size & (crop_size - 1):
            raise ConfigurationError(f"VAAL's crop_size must be a power of two >= 8 (e.g. 64), got {crop_size}")
        self.latent_dim = latent_dim
        self.crop_size = crop_size
        self.width = width
        self.adversary_weight = adversary_weight
        self.vae_lr = vae_lr
        self.discriminator_lr = discriminator_lr
        self.kl_weight = kl_weight
        #: The networks, ``None`` until the first training step after :meth:`reset`.
        self.vae: VAE | None = None
        self.discriminator: Discriminator | None = None
        self._vae_optimizer: torch.optim.Optimizer | None = None
        self._discriminator_optimizer: torch.optim.Optimizer | None = None
        self._generator: torch.Generator | None = None
        self._network_seed = seed
        self._device = torch.device("cpu")
        self._shape: tuple[int, ...] | None = None

    def reset(self, seed: int, device: torch.device | str = "cpu") -> None:
        """Start a round: drop the networks and optimizers, so that the next step builds fresh ones.

        They are built from ``seed`` on ``device``; the same seed gives the same initial
        networks, crops and noise on every rank.
        """
        self.vae = self.discriminator = None
        self._vae_optimizer = self._discriminator_optimizer = None
        self._shape = None
        self._generator = torch.Generator().manual_seed(seed)
        self._network_seed = seed
        self._device = torch.device(device)

    def train_step(self, labeled_images: Tensor, unlabeled_images: Tensor, lr_scale: float = 1.0) -> dict[str, float]:
        """One VAE step, then one discriminator step on the same (cropped) batches; returns the losses.

        The steps run at ``lr_scale`` × ``vae_lr`` and × ``discriminator_lr``.

        The two batches go through the VAE together, so BatchNorm normalises them with shared
        statistics, as the running statistics will at scoring; separate statistics per batch
        would hide a difference in brightness between the sets from the discriminator. Without
        an earlier :meth:`reset`, the first call resets with ``self.seed``.
        """
        if len(labeled_images) == 0 or len(unlabeled_images) == 0:
            raise ConfigurationError(
                "VAAL's train_step needs a non-empty labeled and a non-empty unlabeled batch, got "
                f"{len(labeled_images)} and {len(unlabeled_images)} images; "
                "skip VAAL training while either set is empty"
            )
        generator = self._rng()
        labeled = random_crop(labeled_images, self.crop_size, generator)
        unlabeled = random_crop(unlabeled_images, self.crop_size, generator)
        images = torch.cat([labeled, unlabeled.to(labeled.device)]).to(self._device, torch.float32)
        vae, discriminator = self._networks(tuple(images.shape[1:]))
        for optimizer, lr in ((self._vae_optimizer, self.vae_lr), (self._discriminator_optimizer, self.discriminator_lr)):
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_scale
        n = len(labeled)
        noise = torch.randn(len(images), self.latent_dim, generator=generator).to(self._device)
        with torch.enable_grad(), torch.autocast(self._device.type, enabled=False):
            vae.train()
            reconstruction, mu, logvar = vae(images, noise)
            mse = F.mse_loss(reconstruction[:n], images[:n]) + F.mse_loss(reconstruction[n:], images[n:])
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            adversarial = _both_sets_bce(discriminator(mu), n, unlabeled_target=1.0)
            vae_loss = mse + self.kl_weight * kl + self.adversary_weight * adversarial
            self._step(vae_loss, vae, self._vae_optimizer)

            discriminator_loss = _both_sets_bce(discriminator(mu.detach()), n, unlabeled_target=0.0)
            self._step(discriminator_loss, discriminator, self._discriminator_optimizer)
        losses = torch.stack([vae_loss, mse, kl, adversarial, discriminator_loss]).tolist()
        return dict(zip(("vae_loss", "reconstruction", "kl", "adversarial", "discriminator_loss"), losses))

    @torch.no_grad()
    def score(self, images: Tensor) -> Tensor:
        """(B,) P(labeled) of the centre crops of ``images``, on the networks' device; lower is queried first."""
        if self.vae is None or self.discriminator is None:
            raise ConfigurationError(
                "VAAL's networks are not trained: call train_step(labeled, unlabeled) during the round "
                "(the query callback does, after reset(seed, device)) "
                "or fit(labeled, unlabeled, steps) before selecting"
            )
        crops = centre_crop(images, self.crop_size).to(self._device, torch.float32)
        self._check_shape(tuple(crops.shape[1:]))
        self.vae.eval()
        with torch.autocast(self._device.type, enabled=False):
            mu, _ = self.vae.encode(crops)
            return torch.sigmoid(self.discriminator(mu))

    def fit(self, labeled_images: Tensor, unlabeled_images: Tensor, steps: int, batch_size: int = 64) -> None:
        """``steps`` training steps on random batches drawn with the instance's generator.

        For use outside the training loop; calls ``reset(self.seed)`` first if :meth:`reset`
        never was, and otherwise continues from the current networks.
        """
        generator = self._rng()
        for _ in range(steps):
            labeled = torch.randperm(len(labeled_images), generator=generator)[:batch_size]
            unlabeled = torch.randperm(len(unlabeled_images), generator=generator)[:batch_size]
            self.train_step(labeled_images[labeled], unlabeled_images[unlabeled])

    def scorer(self, head: PoolOutputs) -> Callable[[PoolOutputs], Tensor]:
        return lambda chunk: self.score(chunk.images)

    def block_rows(self, outputs: PoolOutputs) -> int:
        return SCORE_BATCH

    def _rng(self) -> torch.Generator:
        if self._generator is None:
            self.reset(self.seed, self._device)
        return self._generator

    def _networks(self, shape: tuple[int, ...]) -> tuple[VAE, Discriminator]:
        """The networks for (channels, side, side) crops, built from the reset seed at the first call."""
        if self.vae is None or self.discriminator is None:
            if shape[1] != shape[2]:
                raise ConfigurationError(
                    f"VAAL's VAE needs square crops, got {shape[1]}x{shape[2]}; "
                    f"images larger than crop_size={self.crop_size} on both sides are cropped square"
                )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self._network_seed)
                self.vae = VAE(shape[0], shape[-1], self.latent_dim, self.width)
                self.discriminator = Discriminator(self.latent_dim)
            self.vae.to(self._device)
            self.discriminator.to(self._device)
            self._vae_optimizer = torch.optim.Adam(self.vae.parameters(), lr=self.vae_lr)
            self._discriminator_optimizer = torch.optim.Adam(
                self.discriminator.parameters(), lr=self.discriminator_lr
            )
            self._shape = shape
        self._check_shape(shape)
        return self.vae, self.discriminator

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if shape != self._shape:
            raise ConfigurationError(
                f"VAAL's networks were built for {self._shape} crops, got {shape}; "
                "all images of a round must share one size and channel count"
            )

    @staticmethod
    def _step(loss: Tensor, module: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_over_ranks(module)
        optimizer.step()
