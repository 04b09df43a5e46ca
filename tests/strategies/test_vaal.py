"""VAAL: crops, training on tiny images, re-initialisation, errors, and identical networks across ranks."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import al_lightning.strategies.vaal  # noqa: F401  (registers "vaal")
from al_lightning.distributed import average_over_ranks
from al_lightning.errors import ConfigurationError
from al_lightning.strategies import PoolOutputs, build
from al_lightning.strategies.ranking import smallest_k
from al_lightning.strategies.vaal import centre_crop, random_crop
from al_lightning.strategies.vaal_networks import VAE

TINY = dict(width=8, crop_size=8)


@pytest.fixture(autouse=True)
def one_thread():
    """The networks are tiny: a second intra-op thread only adds waiting, badly so on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def blobs(kind: str, n: int, generator: torch.Generator, side: int = 8) -> torch.Tensor:
    """Normalised-looking images: "bright" ones with horizontal stripes, "dark" ones with vertical stripes."""
    stripes = (torch.arange(side) % 2).float() * 2 - 1
    noise = 0.3 * torch.randn(n, 3, side, side, generator=generator)
    if kind == "bright":
        return noise + 1.0 + stripes[None, None, :, None]
    return noise - 1.0 + stripes[None, None, None, :]


def numbered(n: int, side: int) -> torch.Tensor:
    """(n, 1, side, side) images whose pixels are all different, so a crop tells where it came from."""
    return torch.arange(n * side * side, dtype=torch.float32).view(n, 1, side, side)


def state(vaal) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value.clone()
        for name, net in (("vae", vaal.vae), ("discriminator", vaal.discriminator))
        for key, value in net.state_dict().items()
    }


def test_random_crop_takes_a_random_window_of_large_images():
    images = numbered(32, 16)
    crops = random_crop(images, 8, torch.Generator().manual_seed(0))
    assert crops.shape == (32, 1, 8, 8)
    offsets = set()
    for i, crop in enumerate(crops):
        top, left = divmod(int(crop[0, 0, 0]) - i * 256, 16)
        assert torch.equal(crop, images[i, :, top : top + 8, left : left + 8])
        offsets.add((top, left))
    assert len(offsets) > 10
    assert torch.equal(crops, random_crop(images, 8, torch.Generator().manual_seed(0)))


def test_centre_crop_and_small_images_whole():
    images = numbered(4, 16)
    assert torch.equal(centre_crop(images, 8), images[:, :, 4:12, 4:12])
    small = numbered(4, 8)
    assert torch.equal(random_crop(small, 16, torch.Generator()), small)
    assert torch.equal(centre_crop(small, 16), small)


@pytest.mark.parametrize("side", [8, 16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_vae_reconstructs_at_the_input_size(side, channels):
    vae = VAE(channels, side, latent_dim=6, width=2)
    x = torch.randn(2, channels, side, side)
    reconstruction, mu, logvar = vae(x, torch.zeros(2, 6))
    assert reconstruction.shape == x.shape and mu.shape == logvar.shape == (2, 6)


def test_bad_crop_sizes_are_rejected():
    with pytest.raises(ConfigurationError, match="power of two"):
        build("vaal", crop_size=48)
    vaal = build("vaal", width=8, crop_size=64)
    vaal.reset(0)
    with pytest.raises(ConfigurationError, match="power of two"):
        vaal.train_step(torch.randn(2, 3, 12, 12), torch.randn(2, 3, 12, 12))


def test_training_crops_large_images_and_scoring_uses_the_centre():
    vaal = build("vaal", **TINY)
    vaal.reset(0)
    images = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    vaal.train_step(images[:3], images[3:])
    assert vaal.vae.encoder[0].in_channels == 3
    scores = vaal.score(images)
    assert scores.shape == (6,) and ((scores > 0) & (scores < 1)).all()
    assert torch.equal(scores, vaal.score(images))
    assert torch.equal(scores, vaal.score(images[:, :, 4:12, 4:12]))


def test_vaal_learns_to_query_what_the_labeled_set_lacks():
    g = torch.Generator().manual_seed(0)
    labeled = blobs("bright", 64, g)
    pool = torch.cat([blobs("bright", 64, g), blobs("dark", 64, g)])
    vaal = build("vaal", seed=0, discriminator_lr=3e-3, **TINY)
    vaal.reset(0)
    batches = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(80):
        lab = labeled[torch.randperm(64, generator=batches)[:16]]
        unl = pool[torch.randperm(128, generator=batches)[:16]]
        losses.append(vaal.train_step(lab, unl))
    assert set(losses[0]) == {"vae_loss", "reconstruction", "kl", "adversarial", "discriminator_loss"}
    # From 2·log 2 towards its floor: bright images are in both sets, so only the dark ones are told apart.
    assert sum(s["discriminator_loss"] for s in losses[-10:]) / 10 < 0.75 * losses[0]["discriminator_loss"]

    chosen = vaal.select(PoolOutputs(index=torch.arange(128) + 1000, images=pool), 20)
    assert (chosen >= 1064).float().mean() >= 0.8


def test_selection_is_smallest_scores_across_batches(monkeypatch):
    monkeypatch.setattr(al_lightning.strategies.vaal, "SCORE_BATCH", 7)
    g = torch.Generator().manual_seed(2)
    pool = torch.cat([blobs("bright", 20, g), blobs("dark", 20, g)])
    vaal = build("vaal", **TINY)
    vaal.fit(pool[:20], pool, steps=3, batch_size=8)
    chosen = vaal.select(PoolOutputs(index=torch.arange(40), images=pool), 9)
    assert chosen.tolist() == smallest_k(vaal.score(pool), 9).tolist()


def test_reset_reinitialises_and_the_seed_fixes_the_selection():
    g = torch.Generator().manual_seed(3)
    labeled, pool = blobs("bright", 16, g), torch.cat([blobs("bright", 16, g), blobs("dark", 16, g)])
    outputs = PoolOutputs(index=torch.arange(32), images=pool)

    trained = build("vaal", **TINY)
    trained.reset(5)
    trained.fit(labeled, pool, steps=5, batch_size=8)
    before = state(trained)
    chosen = trained.select(outputs, 10)

    fresh = build("vaal", **TINY)
    fresh.reset(5)
    fresh.fit(labeled, pool, steps=5, batch_size=8)
    assert fresh.select(outputs, 10).tolist() == chosen.tolist()

    trained.reset(5)
    with pytest.raises(ConfigurationError, match="train_step"):
        trained.select(outputs, 1)
    one_step = build("vaal", **TINY)
    one_step.reset(5)
    for vaal in (trained, one_step):
        vaal.train_step(labeled[:4], pool[:4])
    after, expected = state(trained), state(one_step)
    assert all(torch.equal(after[k], expected[k]) for k in expected)
    assert not all(torch.equal(after[k], before[k]) for k in before if k.endswith("weight"))


def test_the_global_rng_is_left_alone():
    images = torch.zeros(4, 3, 8, 8)
    before = torch.random.get_rng_state()
    vaal = build("vaal", **TINY)
    vaal.fit(images, images, steps=1, batch_size=4)
    vaal.select(PoolOutputs(index=torch.arange(4), images=images), 1)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_selecting_before_training_names_the_fix():
    vaal = build("vaal")
    outputs = PoolOutputs(index=torch.arange(4), images=torch.zeros(4, 3, 8, 8))
    with pytest.raises(ConfigurationError, match=r"train_step\(labeled, unlabeled\).*fit\("):
        vaal.select(outputs, 2)


def test_average_over_ranks_is_a_no_op_in_one_process():
    assert not dist.is_initialized()
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    net(torch.randn(5, 3)).sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    buffers = [b.clone() for b in net.buffers()]
    average_over_ranks(net)
    assert all(torch.equal(p.grad, g) for p, g in zip(net.parameters(), grads))
    assert all(torch.equal(b, c) for b, c in zip(net.buffers(), buffers))


def _train_on_rank(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        g = torch.Generator().manual_seed(100 + rank)
        vaal = build("vaal", **TINY)
        vaal.reset(0)
        for _ in range(3):
            vaal.train_step(blobs("bright", 8, g), blobs("dark", 8, g) * (rank + 1))
        torch.save(state(vaal), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.timeout(180)  # two gloo processes: a hang fails in minutes
def test_two_ranks_keep_identical_networks(tmp_path):
    mp.spawn(_train_on_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    zero, one = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert zero.keys() == one.keys()
    assert all(torch.equal(zero[k], one[k]) for k in zero)
    assert zero["vae.encoder.1.running_mean"].abs().sum() > 0  # trained, BatchNorm statistics averaged too
