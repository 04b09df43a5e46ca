"""The two networks VAAL trains beside the classifier: a convolutional VAE and a latent discriminator."""

from __future__ import annotations

from torch import Tensor, nn

from al_lightning.errors import ConfigurationError


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _bn_relu(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]


class VAE(nn.Module):
    """The Wasserstein auto-encoder's conv encoder/decoder (Tolstikhin et al. 2017), as a VAE.

    The architecture VAAL's repository also uses, sized by the input instead of fixed at
    32 or 64 pixels: the encoder halves the side with 4×4 stride-2 convs (BN + ReLU) of
    ``width``, 2·``width``, 4·``width``, 8·``width`` channels (three for an 8-pixel input,
    which is 1×1 after them), then two linear layers give μ and log σ². The decoder maps z
    linearly to an 8·``width``-channel map of side/8 and doubles it back with three
    transposed convs; a 1×1 conv gives ``channels`` outputs, unbounded, since the inputs are
    normalised images rather than values in [0, 1].

    Args:
        channels: input (and reconstruction) channels.
        side: input height and width, a power of two ≥ 8.
        latent_dim: size of z.
        width: channels of the first conv; every layer scales with it.
    """

    def __init__(self, channels: int, side: int, latent_dim: int = 64, width: int = 128) -> None:
        super().__init__()
        if side < 8 or not _is_power_of_two(side):
            raise ConfigurationError(
                f"VAAL's VAE needs square inputs with a side that is a power of two >= 8, got {side}; "
                "choose a crop_size that is one (e.g. 64), or images of such a side"
            )
        depth = min(4, side.bit_length() - 1)
        encoder: list[nn.Module] = []
        in_channels = channels
        for i in range(depth):
            out_channels = width * 2**i
            encoder += _bn_relu(nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=False), out_channels)
            in_channels = out_channels
        self.encoder = nn.Sequential(*encoder, nn.Flatten())
        flat = in_channels * (side >> depth) ** 2
        self.to_mu = nn.Linear(flat, latent_dim)
        self.to_logvar = nn.Linear(flat, latent_dim)

        start = side // 8
        decoder: list[nn.Module] = [
            nn.Linear(latent_dim, 8 * width * start * start),
            nn.Unflatten(1, (8 * width, start, start)),
        ]
        for in_channels in (8 * width, 4 * width, 2 * width):
            out_channels = in_channels // 2
            decoder += _bn_relu(nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=False), out_channels)
        decoder.append(nn.Conv2d(width, channels, 1))
        self.decoder = nn.Sequential(*decoder)

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(μ, log σ²) of q(z | x), each (B, latent_dim)."""
        hidden = self.encoder(images)
        return self.to_mu(hidden), self.to_logvar(hidden)

    def forward(self, images: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruction, μ and log σ²; ``noise`` (B, latent_dim) ~ N(0, 1) is drawn by the caller's generator."""
        mu, logvar = self.encode(images)
        z = mu + noise * (0.5 * logvar).exp()
        return self.decoder(z), mu, logvar


class Discriminator(nn.Module):
    """z → 512 → 512 → 1 with ReLUs; returns the logit of P(labeled), shape (B,)."""

    def __init__(self, latent_dim: int = 64, hidden: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).squeeze(1)
