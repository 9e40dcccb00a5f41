"""The six latent-space regularizers of Boutin et al. (2024), each a small module the
autoencoder calls at its bottleneck and after it.

A regularizer says how wide the encoder's output is (``features``), how that output becomes
the latent during training (``bottleneck``: sampling for KL, quantization for VQ) and at
use (``code``), which extra loss shapes the latent (``penalty``: on labels or on a second
view), and how a generated latent is put back onto the latent set (``project``: VQ snaps to
the codebook). The self-supervised and metric losses act on the latent itself rather than
on a projection head as in LatentMatters, so the property they train is the one the
diffusion model sees.
Letters: N drawings, H encoder features, D latent dimensions, K codebook rows, W word size,
C classes.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

REGULARIZERS = ("kl", "vq", "classification", "prototype", "simclr", "barlow")


class Regularizer(nn.Module):
    """No regularization: the latent is the encoder's output."""

    id: ClassVar[str]
    default_weight: ClassVar[float]
    needs_views: ClassVar[bool] = False  # penalty compares two augmented views
    episodic: ClassVar[bool] = False  # batches hold several drawings per category

    def features(self, latent_dim: int) -> int:
        """Width H of the encoder's output for a latent of ``latent_dim``."""
        return latent_dim

    def bottleneck(self, h: torch.Tensor, generator: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training-time latent (N, D) from encoder output ``h`` (N, H), and a loss."""
        return h, h.new_zeros(())

    def code(self, h: torch.Tensor) -> torch.Tensor:
        """The deterministic latent (N, D) of encoder output ``h`` (N, H)."""
        return h

    def penalty(self, z: torch.Tensor, labels: torch.Tensor, z_view: torch.Tensor | None
                ) -> torch.Tensor:
        """A loss on the latents (N, D) given categories (N,) and, if ``needs_views``, the
        latents of a second view (N, D)."""
        return z.new_zeros(())

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """The nearest latent the encoder can produce (identity for continuous latents)."""
        return z


class KL(Regularizer):
    """A VAE: z = mean + sigma * eps, penalized by KL(q(z|x) || N(0, I)) (nats per
    drawing); ``code`` is the mean. The default weight (beta) of 0.5 keeps small drawings
    from collapsing onto the prior."""

    id, default_weight = "kl", 0.5

    def features(self, latent_dim: int) -> int:
        return 2 * latent_dim

    def bottleneck(self, h, generator):
        mean, logvar = h.chunk(2, dim=1)  # N, D each
        logvar = logvar.clamp(-10, 10)
        eps = torch.randn(mean.shape, generator=generator).to(mean.device)
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(dim=1).mean()
        return mean + (0.5 * logvar).exp() * eps, kl

    def code(self, h):
        return h.chunk(2, dim=1)[0]


class VQ(Regularizer):
    """Vector quantization (van den Oord et al. 2017) of the latent cut into words of
    ``word_size`` dimensions, as in LatentMatters: each word becomes its nearest row of a
    (K, W) codebook; loss ||sg(h) - e||^2 + beta ||h - sg(e)||^2 summed over dimensions;
    gradients pass straight through. The codebook starts from encoder words of the first
    batch, so no row starts dead."""

    id, default_weight = "vq", 1.0

    def __init__(self, latent_dim: int, *, codebook_size: int = 256, word_size: int = 4,
                 commitment: float = 0.25):
        super().__init__()
        if latent_dim % word_size:
            raise ValueError(f"latent_dim ({latent_dim}) must be a multiple of the VQ word "
                             f"size ({word_size})")
        self.word_size, self.commitment = word_size, commitment
        self.codebook = nn.Parameter(torch.zeros(codebook_size, word_size))  # K, W
        self.register_buffer("started", torch.tensor(False))

    def _nearest(self, h: torch.Tensor) -> torch.Tensor:
        words = h.reshape(-1, self.word_size)  # N * D / W, W
        index = torch.cdist(words, self.codebook).argmin(dim=1)
        return self.codebook[index].reshape(h.shape)  # N, D

    def bottleneck(self, h, generator):
        if not bool(self.started):
            with torch.no_grad():
                words = h.detach().reshape(-1, self.word_size)
                pick = torch.randint(0, len(words), (len(self.codebook),), generator=generator)
                self.codebook.copy_(words[pick.to(h.device)])
                self.started.fill_(True)
        e = self._nearest(h)
        loss = ((h.detach() - e) ** 2).sum(dim=1).mean()
        loss = loss + self.commitment * ((h - e.detach()) ** 2).sum(dim=1).mean()
        return h + (e - h).detach(), loss

    def code(self, h):
        return self._nearest(h)

    def project(self, z):
        return self._nearest(z)


class Classification(Regularizer):
    """A linear head on the latent, cross-entropy on the (background) categories."""

    id, default_weight = "classification", 20.0

    def __init__(self, latent_dim: int, n_classes: int):
        super().__init__()
        self.head = nn.Linear(latent_dim, n_classes)

    def penalty(self, z, labels, z_view):
        return F.cross_entropy(self.head(z), labels)


class Prototype(Regularizer):
    """Prototypical networks (Snell et al. 2017) on the episode a batch holds: each drawing
    is classified among the categories of the batch by its squared distance to their mean
    latents, its own category's mean taken without it."""

    id, default_weight, episodic = "prototype", 20.0, True

    def penalty(self, z, labels, z_view):
        classes, y = labels.unique(return_inverse=True)  # C, N
        onehot = F.one_hot(y, len(classes)).to(z.dtype)  # N, C
        count = onehot.sum(dim=0)  # C
        sums = onehot.T @ z  # C, D
        means = sums / count[:, None]
        dist = torch.cdist(z, means) ** 2  # N, C
        own_count = count[y]  # N
        usable = own_count > 1
        if not bool(usable.any()):
            return z.new_zeros(())
        loo = (sums[y] - z) / (own_count - 1).clamp(min=1)[:, None]  # N, D
        own = ((z - loo) ** 2).sum(dim=1)  # N
        dist = torch.where(onehot.bool(), own[:, None], dist)
        return F.cross_entropy(-dist[usable], y[usable])


class SimCLR(Regularizer):
    """NT-Xent (Chen et al. 2020) between the latents of two views of each drawing: each
    view must pick out its twin, by cosine similarity at ``temperature``, among the 2N - 1
    other latents of the batch."""

    id, default_weight, needs_views = "simclr", 20.0, True

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        self.temperature = temperature

    def penalty(self, z, labels, z_view):
        n = len(z)
        both = F.normalize(torch.cat([z, z_view]), dim=1)  # 2N, D
        sim = both @ both.T / self.temperature
        sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device),
                              float("-inf"))
        twin = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
        return F.cross_entropy(sim, twin)


class Barlow(Regularizer):
    """Barlow Twins (Zbontar et al. 2021): the cross-correlation of the standardized latents
    of two views is pushed to the identity (diagonal to 1, off-diagonal to 0, weighted by
    ``off_diagonal``)."""

    id, default_weight, needs_views = "barlow", 5.0, True

    def __init__(self, off_diagonal: float = 0.05):
        super().__init__()
        self.off_diagonal = off_diagonal

    def penalty(self, z, labels, z_view):
        c = cross_correlation(z, z_view)  # D, D
        diag = torch.diagonal(c)
        return ((diag - 1) ** 2).sum() + self.off_diagonal * ((c**2).sum() - (diag**2).sum())


def cross_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(D, D) correlation between the dimensions of ``a`` and ``b`` (N, D) over N."""
    a = (a - a.mean(0)) / (a.std(0) + 1e-5)
    b = (b - b.mean(0)) / (b.std(0) + 1e-5)
    return a.T @ b / len(a)


def make_regularizer(name: str, latent_dim: int, n_classes: int, **options) -> Regularizer:
    """The regularizer called ``name``; ``options`` are its own (e.g. VQ's
    ``codebook_size``)."""
    makers = {
        "kl": lambda: KL(),
        "vq": lambda: VQ(latent_dim, **options),
        "classification": lambda: Classification(latent_dim, n_classes),
        "prototype": lambda: Prototype(),
        "simclr": lambda: SimCLR(**options),
        "barlow": lambda: Barlow(**options),
    }
    if name not in makers:
        raise ValueError(f"unknown regularizer {name!r}; one of {', '.join(REGULARIZERS)}")
    if options and name in ("kl", "classification", "prototype"):
        raise ValueError(f"the {name} regularizer takes no options, got {sorted(options)}")
    return makers[name]()


DEFAULT_WEIGHTS = {
    cls.id: cls.default_weight for cls in (KL, VQ, Classification, Prototype, SimCLR, Barlow)}
