"""Sparse dictionary features (NMF as in CRAFT, TopK sparse autoencoders) of a layer.

Fitted on position vectors sampled from the layer; a feature's activation at a position is
its code, and its contribution to the layer is the code times its atom.
"""

from __future__ import annotations

import hashlib
import logging
from typing import ClassVar

import torch
from pydantic import Field

from stimuli.nmf import NMF
from stimuli.sae import TopKSAE
from stimuli.sources.base import Encoder, SourceConfig, UnitSource

log = logging.getLogger(__name__)


class _Dictionary(UnitSource):
    needs_fit: ClassVar[bool] = True
    estimator: NMF | TopKSAE

    def _make(self, n_channels: int) -> NMF | TopKSAE:
        raise NotImplementedError

    def fit(self, X: torch.Tensor) -> None:
        self.estimator = self._make(X.shape[1])
        self.estimator.fit(self._prepare(X).to(self.device))

    def _prepare(self, X: torch.Tensor) -> torch.Tensor:
        return X

    def state(self) -> dict:
        return {"n_channels": int(self.estimator.get_dictionary().shape[1]),
                **self.estimator.state()}

    def load_state(self, state: dict) -> None:
        state = dict(state)
        self.estimator = self._make(state.pop("n_channels"))
        self.estimator.load_state(state)

    def encoder(self) -> Encoder:
        return self.estimator.encode

    def dictionary(self) -> torch.Tensor:
        return self.estimator.get_dictionary()

    def quality(self) -> dict:
        est = self.estimator
        dead = est.dead_components_ if isinstance(est, NMF) else est.dead_features_
        atoms = est.get_dictionary()
        return {
            "method": "nmf-hals" if isinstance(est, NMF) else "topk-sae",
            "n_components": int(atoms.shape[0]),
            "relative_error": float(f"{float(est.relative_error_):.6g}"),
            "explained_variance": float(f"{float(est.explained_variance_):.6g}"),
            "dead": len(dead),
            "checksum": hashlib.sha256(atoms.cpu().numpy().tobytes()).hexdigest(),
        }


class NMFSource(_Dictionary):
    """Non-negative matrix factorisation of the layer's activations (CRAFT's concepts)."""

    id = "nmf"
    revision = 2  # 2: extrapolated HALS fit, projected-gradient codes
    description = "NMF dictionary features (CRAFT concepts), accelerated HALS"

    class Config(SourceConfig):
        n_components: int = Field(32, ge=1)  # capped at the layer's channel count
        max_iter: int = Field(200, ge=1)

    def _make(self, n_channels: int) -> NMF:
        k = min(self.config.n_components, n_channels)
        return NMF(k, max_iter=self.config.max_iter, random_state=self.seed, device=self.device)

    def _prepare(self, X: torch.Tensor) -> torch.Tensor:
        if (X < 0).any():
            log.warning("negative activations: NMF sees them clamped at 0")
            return X.clamp(min=0)
        return X

    def encoder(self) -> Encoder:
        """Codes of the activations clamped at 0, as the dictionary was fitted on them (a
        transformer's residual stream, unlike a ReLU's output, is signed)."""
        encode = self.estimator.encode
        return lambda X: encode(X.clamp(min=0))


    def objective_encoder(self) -> Encoder:
        """Least-squares codes, X pinv(D): linear, so an optimized image gets a gradient
        from every atom's share (the NNLS codes are a solver's output, not differentiable)."""
        inverse = torch.linalg.pinv(self.estimator.get_dictionary().double()).float()  # C, K
        return lambda X: X.clamp(min=0) @ inverse.to(X)


class SAESource(_Dictionary):
    """A TopK sparse autoencoder on the layer's activations."""

    id = "sae"
    revision = 2  # 2: encode folds the input scale and bias into one product
    description = "TopK sparse-autoencoder features"

    class Config(SourceConfig):
        n_components: int = Field(32, ge=1)
        k: int = Field(4, ge=1)  # active features per position
        epochs: int = Field(20, ge=1)

    def objective_encoder(self) -> Encoder:
        """The encoder's scaled pre-activations, before TopK: a feature outside a
        position's top k still gets a gradient towards it."""
        est = self.estimator
        weight, bias = est.folded_encoder()  # C, K and K
        return lambda X: torch.addmm(bias.to(X), X, weight.to(X)) * est.scale_

    def _make(self, n_channels: int) -> TopKSAE:
        c = self.config
        return TopKSAE(c.n_components, k=min(c.k, c.n_components), epochs=c.epochs,
                       decoder_bias=False, random_state=self.seed, device=self.device)
