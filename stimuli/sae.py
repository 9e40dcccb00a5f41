"""A TopK sparse autoencoder (Makhzani & Frey 2013; Gao et al. 2024) in torch.

z = TopK(ReLU((x - b_dec) W_enc + b_enc)), x_hat = z W_dec + b_dec, with unit-norm decoder
rows (the dictionary). Features that stop firing are re-seeded from badly reconstructed
inputs. Letters: N rows, C input channels, K features (dictionary size), k active per row.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def topk_relu(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest entries of ReLU(pre) per row, zero the rest: (N, K) -> (N, K)."""
    values, index = torch.topk(pre, k, dim=1)
    return torch.zeros_like(pre).scatter_(1, index, values.clamp(min=0))


def _check_matrix(X, name: str = "X") -> torch.Tensor:
    X = torch.as_tensor(X)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(
            f"{name} must be a non-empty 2-D matrix (N, C), got shape {tuple(X.shape)}"
        )
    if not torch.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return X.float()


class TopKSAE:
    """TopK sparse autoencoder estimator: ``fit``, ``encode``/``transform``, ``decode``.

    Learned attributes: ``W_enc_`` (C, K), ``b_enc_`` (K,), ``W_dec_`` (K, C) unit rows,
    ``b_dec_`` (C,), ``scale_`` (inputs are divided by it so their mean squared norm is C),
    ``reconstruction_err_`` (Frobenius norm of X - X_hat), ``relative_error_``,
    ``explained_variance_``, ``dead_features_`` (never active on the training data),
    ``n_resampled_``. Training is reproducible for a ``random_state`` on a given device.
    """

    def __init__(
        self,
        n_features: int = 32,
        *,
        k: int = 4,
        epochs: int = 30,
        batch_size: int = 256,
        lr: float = 3e-3,
        resample_every: int = 100,
        decoder_bias: bool = True,
        random_state: int = 0,
        device: str | torch.device = "cpu",
    ):
        self.n_features = n_features
        self.k = k
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.resample_every = resample_every
        self.decoder_bias = decoder_bias
        self.random_state = random_state
        self.device = device

    def _validate(self, X) -> torch.Tensor:
        X = _check_matrix(X).to(self.device)
        if not (isinstance(self.n_features, int) and self.n_features >= 1):
            raise ValueError(f"n_features must be a positive int, got {self.n_features!r}")
        if not (isinstance(self.k, int) and 1 <= self.k <= self.n_features):
            raise ValueError(
                f"k must be an int in [1, n_features = {self.n_features}], got {self.k!r}"
            )
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs, batch_size and lr must be positive")
        return X

    @torch.enable_grad()
    def fit(self, X) -> TopKSAE:
        """Train on X (N, C) with Adam on the mean squared error."""
        X = self._validate(X)
        n, c = X.shape
        gen = torch.Generator().manual_seed(self.random_state)
        self.scale_ = float((X**2).sum(dim=1).mean().sqrt() / c**0.5) or 1.0
        Xs = X / self.scale_
        # decoder rows start at random data rows (unit norm), the encoder at their transpose
        start = torch.randint(0, n, (self.n_features,), generator=gen).to(self.device)
        W_dec = torch.nn.functional.normalize(
            Xs[start] + 1e-3 * torch.randn(self.n_features, c, generator=gen).to(self.device), dim=1
        )
        params = {
            "W_dec": W_dec.clone().requires_grad_(),
            "W_enc": W_dec.T.clone().requires_grad_(),
            "b_enc": torch.zeros(self.n_features, device=self.device, requires_grad=True),
            "b_dec": torch.zeros(c, device=self.device, requires_grad=self.decoder_bias),
        }
        opt = torch.optim.Adam([p for p in params.values() if p.requires_grad], lr=self.lr)
        last_fired = torch.zeros(self.n_features, dtype=torch.int64, device=self.device)
        step, resampled = 0, 0
        steps_total = self.epochs * ((n + self.batch_size - 1) // self.batch_size)
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=gen).to(self.device)
            for i in range(0, n, self.batch_size):
                x = Xs[order[i : i + self.batch_size]]  # B, C
                z = topk_relu((x - params["b_dec"]) @ params["W_enc"] + params["b_enc"], self.k)
                loss = ((z @ params["W_dec"] + params["b_dec"] - x) ** 2).sum(dim=1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                with torch.no_grad():
                    params["W_dec"] /= params["W_dec"].norm(dim=1, keepdim=True).clamp(min=1e-8)
                    last_fired[(z > 0).any(dim=0)] = step
                    if step % self.resample_every == 0 and step < 0.8 * steps_total:
                        dead = (step - last_fired >= self.resample_every).nonzero().flatten()
                        if len(dead):
                            self._resample(Xs, params, opt, dead, gen)
                            last_fired[dead] = step
                            resampled += len(dead)
        self.W_enc_ = params["W_enc"].detach()
        self.b_enc_ = params["b_enc"].detach()
        self.W_dec_ = params["W_dec"].detach()
        self.b_dec_ = params["b_dec"].detach()
        self.n_resampled_ = resampled
        self._score(X)
        return self

    @torch.no_grad()
    def _resample(self, Xs, params, opt, dead, gen) -> None:
        """Point dead features at the worst-reconstructed rows of a random sample."""
        sample = Xs[torch.randint(0, len(Xs), (min(len(Xs), 4096),), generator=gen).to(Xs.device)]
        z = topk_relu((sample - params["b_dec"]) @ params["W_enc"] + params["b_enc"], self.k)
        resid = sample - (z @ params["W_dec"] + params["b_dec"])  # S, C
        worst = torch.topk((resid**2).sum(dim=1), len(dead)).indices
        direction = torch.nn.functional.normalize(resid[worst], dim=1)  # D, C
        params["W_dec"][dead] = direction
        params["W_enc"][:, dead] = direction.T
        params["b_enc"][dead] = 0.0
        for name in ("W_dec", "W_enc", "b_enc"):  # forget Adam's moments for them
            state = opt.state.get(params[name])
            for key in ("exp_avg", "exp_avg_sq") if state else ():
                if name == "W_enc":
                    state[key][:, dead] = 0.0
                else:
                    state[key][dead] = 0.0
        log.info("SAE: re-seeded %d dead feature(s)", len(dead))

    @torch.no_grad()
    def _score(self, X: torch.Tensor) -> None:
        err2, codes_max = 0.0, torch.zeros(self.n_features, device=self.device)
        for i in range(0, len(X), 8192):
            z = self.encode(X[i : i + 8192])
            err2 += float(((self.decode(z) - X[i : i + 8192]).double() ** 2).sum())
            codes_max = torch.maximum(codes_max, z.amax(dim=0))
        xx = float((X.double() ** 2).sum())
        centred = float(((X.double() - X.double().mean(dim=0)) ** 2).sum())
        self.reconstruction_err_ = err2**0.5
        self.relative_error_ = (err2 / max(xx, 1e-12)) ** 0.5
        self.explained_variance_ = 1.0 - err2 / max(centred, 1e-12)
        self.dead_features_ = (codes_max <= 0).nonzero().flatten().tolist()
        if self.dead_features_:
            log.warning("SAE: %d dead feature(s) after training", len(self.dead_features_))

    def _check_fitted(self) -> None:
        if not hasattr(self, "W_dec_"):
            raise ValueError("this TopKSAE is not fitted yet; call fit first")

    @torch.no_grad()
    def encode(self, X) -> torch.Tensor:
        """Sparse codes (N, K), at most k non-zero per row, in the units of X."""
        self._check_fitted()
        X = _check_matrix(X).to(self.device) / self.scale_
        pre = (X - self.b_dec_) @ self.W_enc_ + self.b_enc_
        return topk_relu(pre, self.k) * self.scale_

    transform = encode

    @torch.no_grad()
    def decode(self, Z: torch.Tensor) -> torch.Tensor:
        """Codes (N, K) -> reconstruction (N, C)."""
        self._check_fitted()
        return Z.to(self.W_dec_) @ self.W_dec_ + self.b_dec_ * self.scale_

    def get_dictionary(self) -> torch.Tensor:
        """Decoder rows (K, C), unit norm."""
        self._check_fitted()
        return self.W_dec_

    def state(self) -> dict:
        self._check_fitted()
        keys = (
            "scale_",
            "n_resampled_",
            "reconstruction_err_",
            "relative_error_",
            "explained_variance_",
            "dead_features_",
        )
        tensors = {k: getattr(self, k).cpu() for k in ("W_enc_", "b_enc_", "W_dec_", "b_dec_")}
        return {**tensors, **{k: getattr(self, k) for k in keys}}

    def load_state(self, state: dict) -> TopKSAE:
        for key, value in state.items():
            setattr(self, key, value.to(self.device) if isinstance(value, torch.Tensor) else value)
        return self
