"""A TopK sparse autoencoder (Makhzani & Frey 2013; Gao et al. 2024) in torch.

z = TopK(ReLU((x - b_dec) W_enc + b_enc)), x_hat = z W_dec + b_dec, with unit-norm decoder
rows (the dictionary). Training follows Gao et al. (2024, "Scaling and evaluating sparse
autoencoders"): unit-norm decoder rows with gradient projection, the AuxK loss for dead
latents, a learning-rate warm-up and decay; it starts from a TopK dictionary-learning warm
start (k-means++ seeding, then MOD, Engan et al. 1999, with TopK codes), without which a
dictionary of exactly the planted size stalls with features that mix two atoms. Features that
stop firing are also re-seeded from badly reconstructed inputs.
Letters: N rows, C input channels, K features (dictionary size), k active per row.
"""

from __future__ import annotations

import logging
import math

import torch

log = logging.getLogger(__name__)


def topk_relu(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest entries of ReLU(pre) per row, zero the rest: (N, K) -> (N, K)."""
    values, index = torch.topk(pre, k, dim=1)
    return torch.zeros_like(pre).scatter_(1, index, values.clamp(min=0))


INIT_ROWS = 20000  # rows of X (a random subset) that the warm start sees


def kmeans_pp_rows(X: torch.Tensor, n: int, *, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) on the cosine distance of the rows of
    X (M, C): ``n`` unit rows (n, C), each drawn with probability proportional to its distance
    to the nearest row already drawn."""
    Xn = torch.nn.functional.normalize(X, dim=1)  # M, C
    first = int(torch.randint(0, len(X), (1,), generator=generator))
    picked = [first]
    dist = (1 - Xn @ Xn[first]).clamp(min=0)  # M
    for _ in range(n - 1):
        weights = (dist + 1e-12).cpu()
        j = int(torch.multinomial(weights, 1, generator=generator))
        picked.append(j)
        dist = torch.minimum(dist, (1 - Xn @ Xn[j]).clamp(min=0))
    return Xn[picked]


def topk_dictionary_init(
    X: torch.Tensor, n_features: int, k: int, *, iters: int, generator: torch.Generator
) -> torch.Tensor:
    """A warm-start dictionary (K, C), unit rows, for X (M, C).

    k-means++ rows, then ``iters`` rounds of the method of optimal directions (Engan et al.
    1999) with the SAE's own coding: codes Z = TopK(ReLU(X D^+)) (M, K), then the decoder D
    solving min ||X - Z D|| by least squares; unused rows take the worst-reconstructed row.
    """
    D = kmeans_pp_rows(X, n_features, generator=generator)  # K, C
    eye = torch.eye(n_features, dtype=X.dtype, device=X.device)
    for _ in range(iters):
        Z = topk_relu(X @ torch.linalg.pinv(D), k)  # M, K
        gram = Z.T @ Z  # K, K
        ridge = 1e-6 * gram.diagonal().mean().clamp(min=1e-12) * eye
        new = torch.linalg.solve(gram + ridge, Z.T @ X)  # K, C
        unused = (Z > 0).sum(dim=0) == 0  # K
        if unused.any():
            resid = ((X - Z @ D) ** 2).sum(dim=1)  # M
            new[unused] = X[torch.topk(resid, int(unused.sum())).indices]
        D = torch.nn.functional.normalize(new, dim=1)
    return D


def _aux_loss(
    resid: torch.Tensor, pre: torch.Tensor, W_dec: torch.Tensor, dead: torch.Tensor, aux_k: int
) -> torch.Tensor:
    """AuxK (Gao et al. 2024): the residual (B, C) reconstructed by the top ``aux_k`` dead
    latents of ``pre`` (B, K), ``dead`` a (K,) mask; the squared error per row, averaged."""
    masked = pre.masked_fill(~dead, float("-inf"))  # B, K
    z = topk_relu(masked, min(aux_k, int(dead.sum())))
    return ((z @ W_dec - resid) ** 2).sum(dim=1).mean()


def _check_shape(X, name: str = "X") -> torch.Tensor:
    X = torch.as_tensor(X)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(
            f"{name} must be a non-empty 2-D matrix (N, C), got shape {tuple(X.shape)}"
        )
    return X.float()


def _check_matrix(X, name: str = "X") -> torch.Tensor:
    X = _check_shape(X, name)
    lo, hi = torch.aminmax(X)  # one pass; a NaN anywhere makes both NaN
    if not (torch.isfinite(lo) and torch.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return X


class TopKSAE:
    """TopK sparse autoencoder estimator: ``fit``, ``encode``/``transform``, ``decode``.

    Learned attributes: ``W_enc_`` (C, K), ``b_enc_`` (K,), ``W_dec_`` (K, C) unit rows,
    ``b_dec_`` (C,), ``scale_`` (inputs are divided by it so their mean squared norm is C),
    ``reconstruction_err_`` (Frobenius norm of X - X_hat), ``relative_error_``,
    ``explained_variance_``, ``dead_features_`` (never active on the training data),
    ``n_resampled_``. ``aux_k`` (default min(K // 2, 2k)) latents serve the AuxK loss.
    Training is reproducible for a ``random_state`` on a given device.
    """

    def __init__(
        self,
        n_features: int = 32,
        *,
        k: int = 4,
        epochs: int = 30,
        batch_size: int = 256,
        lr: float = 3e-3,
        warmup: float = 0.05,
        init_iters: int = 20,
        aux_k: int | None = None,
        aux_coef: float = 1 / 32,
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
        self.warmup = warmup
        self.init_iters = init_iters
        self.aux_k = aux_k
        self.aux_coef = aux_coef
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
        if not 0 <= self.warmup < 1 or self.init_iters < 0 or self.aux_coef < 0:
            raise ValueError("warmup must be in [0, 1), init_iters and aux_coef non-negative")
        if self.aux_k is not None and self.aux_k < 1:
            raise ValueError(f"aux_k must be a positive int or None, got {self.aux_k!r}")
        return X

    @torch.enable_grad()
    def fit(self, X) -> TopKSAE:
        """Train on X (N, C): a TopK dictionary-learning warm start, then Adam on the MSE.

        The standard recipe (Gao et al. 2024) plus a warm start: decoder rows from a k-means++
        seeding of the data rows refined by ``init_iters`` rounds of MOD with TopK codes
        (:func:`topk_dictionary_init`), the encoder starting at the decoder's pseudo-inverse
        (which produced the warm-start codes); unit-norm decoder rows with the gradient
        projected off their radial direction; the AuxK loss (``aux_coef``) on latents dead for
        an epoch; a linear warm-up over ``warmup`` of the steps, then cosine decay to zero.
        """
        X = self._validate(X)
        n, c = X.shape
        nf, dev = self.n_features, self.device
        gen = torch.Generator().manual_seed(self.random_state)
        self.scale_ = float((X**2).sum(dim=1).mean().sqrt() / c**0.5) or 1.0
        Xs = X / self.scale_
        b_dec = torch.zeros(c, device=dev)  # C, learned if decoder_bias
        rows = torch.randperm(n, generator=gen)[:INIT_ROWS].to(dev)
        W_dec = topk_dictionary_init(
            Xs[rows] - b_dec, nf, self.k, iters=self.init_iters, generator=gen
        )  # K, C
        params = {
            "W_dec": W_dec.clone().requires_grad_(),
            "W_enc": torch.linalg.pinv(W_dec).requires_grad_(),  # C, K
            "b_enc": torch.zeros(nf, device=dev, requires_grad=True),
            "b_dec": b_dec.clone().requires_grad_(self.decoder_bias),
        }
        opt = torch.optim.Adam([p for p in params.values() if p.requires_grad], lr=self.lr)
        steps_per_epoch = (n + self.batch_size - 1) // self.batch_size
        steps_total = self.epochs * steps_per_epoch
        warm = max(1, round(self.warmup * steps_total))

        def lr_factor(step: int) -> float:
            return min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * step / steps_total))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
        aux_k = self.aux_k if self.aux_k is not None else max(1, min(nf // 2, 2 * self.k))
        last_fired = torch.zeros(nf, dtype=torch.int64, device=dev)
        step, resampled = 0, 0
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=gen).to(dev)
            for i in range(0, n, self.batch_size):
                x = Xs[order[i : i + self.batch_size]]  # B, C
                pre = (x - params["b_dec"]) @ params["W_enc"] + params["b_enc"]  # B, K
                z = topk_relu(pre, self.k)
                x_hat = z @ params["W_dec"] + params["b_dec"]
                loss = ((x_hat - x) ** 2).sum(dim=1).mean()
                dead = step - last_fired >= steps_per_epoch  # K
                if self.aux_coef > 0 and bool(dead.any()):
                    loss = loss + self.aux_coef * _aux_loss(
                        x - x_hat.detach(), pre, params["W_dec"], dead, aux_k
                    )
                opt.zero_grad()
                loss.backward()
                with torch.no_grad():  # keep the decoder's gradient tangent to its unit rows
                    grad, rows_ = params["W_dec"].grad, params["W_dec"]
                    grad -= (grad * rows_).sum(dim=1, keepdim=True) * rows_
                opt.step()
                sched.step()
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
        """Sparse codes (N, K), at most k non-zero per row, in the units of X.

        One product, TopK and a scatter: the input scale and the decoder bias are folded into
        the encoder's weights and bias once per fitted model, ((X / s) - b_dec) W_enc + b_enc
        = X (W_enc / s) + (b_enc - b_dec W_enc). NaN or infinite inputs reach every
        pre-activation of their row, so they are looked for there, (N, K), not in X (N, C).
        """
        self._check_fitted()
        X = _check_shape(X).to(self.device)
        weight, bias = self.folded_encoder()  # C, K and K
        pre = torch.addmm(bias, X, weight)  # N, K
        if not torch.isfinite(pre.sum()) and not torch.isfinite(pre).all():  # the sum: cheap
            _check_matrix(X)  # names NaN or infinite inputs
            raise ValueError("X is too large: its pre-activations overflow")
        values, index = torch.topk(pre, self.k, dim=1)  # N, k
        return torch.zeros_like(pre).scatter_(1, index, values.clamp_(min=0).mul_(self.scale_))

    def folded_encoder(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_enc / scale (C, K), b_enc - b_dec W_enc (K,)), computed once per fitted state."""
        learned = (self.W_enc_, self.b_enc_, self.b_dec_, self.scale_)
        cached = getattr(self, "_folded", None)
        if cached is None or any(a is not b for a, b in zip(cached[0], learned, strict=True)):
            weight = (self.W_enc_ / self.scale_).contiguous()
            bias = self.b_enc_ - self.b_dec_ @ self.W_enc_
            self._folded = (learned, (weight, bias))
        return self._folded[1]

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
