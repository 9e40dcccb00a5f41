"""Structured factorization of A = Λ'Z'WZΛ + I, the matrix behind every PLS/PIRLS step.

Why not a general sparse Cholesky: CHOLMOD is not installable from PyPI here, and the
mixed models of human studies have a fixed shape that is faster to exploit directly (as
MixedModels.jl does). The first random-effect term, the one with the most levels, gives a
block-diagonal A11 (k x k blocks, one per level) that is inverted block by block; the other
terms are few levels (units, items) and their Schur complement S = A22 - A21 A11⁻¹ A12 is
small and dense. All blocks are accumulated with ``np.bincount`` over index arrays that are
computed once per design, so a factorization costs O(n) plus a q2 x q2 Cholesky. When the
remainder is too large for dense algebra, a SuperLU factorization of the sparse A is used.

A batch of B designs of one shape (same n and numbers of levels, different codes, as the
datasets of a power simulation) shares one system: its arrays gain a leading axis B and
numpy's stacked routines factor all B at once, which is what makes refitting hundreds of
small models cheap (the per-call overhead of Python is paid once per batch).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from analysis.design import Design

_DENSE_Q2 = 6000  # largest remainder handled as a dense Schur complement
_DENSE_CELLS = 40_000_000  # largest dense A21 (q2 x q1)


class Factor:
    """Factorization of A with its log-determinant and a solver for A x = b.

    Arrays carry a leading batch axis B (1 for a single design, dropped again by
    ``logdet`` and ``solve`` when ``batched`` is false)."""

    def __init__(self, a11inv: np.ndarray, logdet: np.ndarray, m: np.ndarray | None,
                 s_chol: np.ndarray | None, batched: bool,
                 lu: spla.SuperLU | None = None) -> None:
        self.a11inv = a11inv  # (B, n1, k1, k1)
        self._logdet = logdet  # (B,)
        self.m = m  # (B, q2, q1) = A21 A11⁻¹
        self.s_chol = s_chol  # (B, q2, q2) lower Cholesky factor of the Schur complement
        self.batched = batched
        self.lu = lu

    @property
    def logdet(self) -> np.ndarray | float:
        """log|A|: (B,) for a batch, a float otherwise."""
        return self._logdet if self.batched else float(self._logdet[0])

    def solve(self, b: np.ndarray) -> np.ndarray:
        """x = A⁻¹ b for b of shape (q,) or (q, c), with a leading B for a batch."""
        if self.lu is not None:
            return self.lu.solve(np.asarray(b, dtype=float))
        x = b if self.batched else b[None]
        vector = x.ndim == 2
        if vector:
            x = x[..., None]
        nb, n1, k1, _ = self.a11inv.shape
        x1, x2 = x[:, :n1 * k1], x[:, n1 * k1:]  # (B, q1, c), (B, q2, c)
        y1 = np.einsum("bikl,bilc->bikc", self.a11inv,
                       x1.reshape(nb, n1, k1, -1)).reshape(x1.shape)
        if self.m is not None:
            x2 = sla.cho_solve((self.s_chol, True), x2 - self.m @ x1, check_finite=False)
            y1 = np.concatenate([y1 - self.m.transpose(0, 2, 1) @ x2, x2], axis=1)
        if vector:
            y1 = y1[..., 0]
        return y1 if self.batched else y1[0]


class BlockSystem:
    """Index arrays for accumulating A from the rows of ZΛ; built once per design.

    ``codes`` are the terms' level indices in the design's order (the first term has the
    most levels), each (n,) for one design or (B, n) for a batch of B designs."""

    def __init__(self, codes: Sequence[np.ndarray], ks: Sequence[int],
                 nlevels: Sequence[int]) -> None:
        self.batched = codes[0].ndim == 2
        g = [np.atleast_2d(c) for c in codes]  # (B, n) each
        self.batch, self.n = g[0].shape
        self.n1, self.k1 = nlevels[0], ks[0]
        self.q1 = self.n1 * self.k1
        self.q2 = sum(k * m for k, m in zip(ks[1:], nlevels[1:], strict=True))
        self.q = self.q1 + self.q2
        self.m_cols = sum(ks)
        k1 = self.k1
        cols0 = g[0][..., None] * k1 + np.arange(k1)  # (B, n, k1)
        cols2_parts, off = [], 0
        for c, k, m in zip(g[1:], ks[1:], nlevels[1:], strict=True):
            cols2_parts.append(off + c[..., None] * k + np.arange(k))
            off += k * m
        cols2 = (np.concatenate(cols2_parts, axis=-1) if cols2_parts
                 else np.zeros((self.batch, self.n, 0), dtype=np.int64))  # (B, n, k2)
        # V = ZΛ has a fixed pattern: row i holds its m_cols values in columns cols[i]
        self.cols = np.concatenate([cols0, cols2 + self.q1], axis=-1)  # (B, n, m_cols)
        self._flat_cols = (self.cols + self._offsets(self.q)).ravel()
        self.dense = self.q2 <= _DENSE_Q2 and self.q2 * self.q1 <= _DENSE_CELLS
        if self.batched and not self.dense:
            raise ValueError(f"a batch needs a dense Schur complement (q2 = {self.q2})")
        if self.dense:  # flat positions in (B, n1, k1, k1), (B, q2, q1), (B, q2, q2)
            self.idx11 = (g[0][..., None, None] * k1 * k1 + np.arange(k1)[:, None] * k1
                          + np.arange(k1) + self._offsets(self.n1 * k1 * k1, 3)).ravel()
            self.idx21 = (cols2[..., :, None] * self.q1 + cols0[..., None, :]
                          + self._offsets(self.q2 * self.q1, 3)).ravel()
            self.idx22 = (cols2[..., :, None] * self.q2 + cols2[..., None, :]
                          + self._offsets(self.q2 * self.q2, 3)).ravel()

    @classmethod
    def of(cls, design: Design) -> BlockSystem:
        return cls([t.codes for t in design.terms], [t.k for t in design.terms],
                   [t.nlevels for t in design.terms])

    def _offsets(self, size: int, ndim: int = 2) -> np.ndarray:
        """b * size for each batch member, shaped to broadcast over (B, n, ...)."""
        return (np.arange(self.batch) * size).reshape((-1,) + (1,) * ndim)

    def _batch(self, a: np.ndarray, core_ndim: int) -> np.ndarray:
        """``a`` with the leading batch axis (broadcast when it has none)."""
        a = np.asarray(a, dtype=float)
        return np.broadcast_to(a, (self.batch,) + a.shape[a.ndim - core_ndim:])

    def _unbatch(self, a: np.ndarray) -> np.ndarray:
        return a if self.batched else a[0]

    def at_cols(self, u: np.ndarray) -> np.ndarray:
        """The entries of u (…, q) at each row's columns, (…, n, m_cols)."""
        u = self._batch(u, 1).reshape(-1)
        return self._unbatch(u[self._flat_cols].reshape(self.cols.shape))

    def v_mul(self, vdata: np.ndarray, u: np.ndarray) -> np.ndarray:
        """ZΛu (…, n) from row values ``vdata`` (…, n, m_cols) and u (…, q)."""
        return np.einsum("...j,...j->...", vdata, self.at_cols(u))

    def vt_mul(self, vdata: np.ndarray, r: np.ndarray) -> np.ndarray:
        """(ZΛ)'r: (…, q) for r (…, n), or (…, q, c) for r (…, n, c)."""
        if np.ndim(r) == (3 if self.batched else 2):  # one column at a time
            return np.stack([self.vt_mul(vdata, r[..., j]) for j in range(r.shape[-1])],
                            axis=-1)
        vals = self._batch(vdata, 2) * self._batch(r, 1)[..., None]
        out = np.bincount(self._flat_cols, vals.ravel(), minlength=self.batch * self.q)
        return self._unbatch(out.reshape(self.batch, self.q))

    def v_matrix(self, vdata: np.ndarray) -> sp.csr_matrix:
        """ZΛ of one design as sparse (n x q) from row values (n, m_cols)."""
        indptr = np.arange(0, self.n * self.m_cols + 1, self.m_cols)
        return sp.csr_matrix((np.ravel(vdata), self.cols[0].ravel(), indptr),
                             shape=(self.n, self.q))

    def factor(self, vdata: np.ndarray, w: np.ndarray) -> Factor:
        """Factor A = V'WV + I for row values ``vdata`` (…, n, m_cols) and weights w (…, n)."""
        if not self.dense:
            return self._sparse_factor(vdata, w)
        nb, k1, n1, q1, q2 = self.batch, self.k1, self.n1, self.q1, self.q2
        vdata, w = self._batch(vdata, 2), self._batch(w, 1)
        v0, v2 = vdata[..., :k1], vdata[..., k1:]
        wv0 = w[..., None] * v0
        a11 = np.bincount(self.idx11, (wv0[..., :, None] * v0[..., None, :]).ravel(),
                          minlength=nb * n1 * k1 * k1).reshape(nb, n1, k1, k1)
        a11[..., np.arange(k1), np.arange(k1)] += 1.0
        if k1 == 1:
            a11inv = 1.0 / a11
            logdet = np.log(a11).sum(axis=(1, 2, 3))
        else:
            chol = np.linalg.cholesky(a11)
            logdet = 2 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(axis=(1, 2))
            a11inv = np.linalg.inv(a11)
        if q2 == 0:
            return Factor(a11inv, logdet, None, None, self.batched)
        a21 = np.bincount(self.idx21, (v2[..., :, None] * wv0[..., None, :]).ravel(),
                          minlength=nb * q2 * q1).reshape(nb, q2, q1)
        wv2 = w[..., None] * v2
        a22 = np.bincount(self.idx22, (wv2[..., :, None] * v2[..., None, :]).ravel(),
                          minlength=nb * q2 * q2).reshape(nb, q2, q2)
        a22[:, np.arange(q2), np.arange(q2)] += 1.0
        m = np.einsum("baik,bikl->bail", a21.reshape(nb, q2, n1, k1), a11inv).reshape(
            nb, q2, q1)
        s_chol = np.linalg.cholesky(a22 - m @ a21.transpose(0, 2, 1))
        logdet += 2 * np.log(np.diagonal(s_chol, axis1=1, axis2=2)).sum(axis=1)
        return Factor(a11inv, logdet, m, s_chol, self.batched)

    def row_inverse(self, fac: Factor) -> np.ndarray:
        """Entries of A⁻¹ at each row's columns, (…, n, m_cols, m_cols): what derivatives
        of log|A| need (row i of ZΛ, v_i, has leverage v_i' A⁻¹ v_i).

        From the blocks: A⁻¹ = [[A11⁻¹ + M'S⁻¹M, -M'S⁻¹], [-S⁻¹M, S⁻¹]], M = A21 A11⁻¹."""
        if not self.dense:
            raise ValueError("row_inverse needs the dense Schur complement")
        nb, n1, k1, q2 = self.batch, self.n1, self.k1, self.q2
        out = np.empty((nb, self.n, self.m_cols, self.m_cols))
        blocks = fac.a11inv  # (B, n1, k1, k1)
        if q2:
            assert fac.m is not None and fac.s_chol is not None
            l_inv = np.linalg.inv(fac.s_chol)
            s_inv = l_inv.transpose(0, 2, 1) @ l_inv
            k = s_inv @ fac.m  # S⁻¹M (B, q2, q1)
            blocks = blocks + np.einsum("baik,bail->bikl", fac.m.reshape(nb, q2, n1, k1),
                                        k.reshape(nb, q2, n1, k1))
            k2 = self.m_cols - k1
            out[..., k1:, :k1] = -k.ravel()[self.idx21].reshape(nb, self.n, k2, k1)
            out[..., :k1, k1:] = np.swapaxes(out[..., k1:, :k1], -1, -2)
            out[..., k1:, k1:] = s_inv.ravel()[self.idx22].reshape(nb, self.n, k2, k2)
        out[..., :k1, :k1] = blocks.ravel()[self.idx11].reshape(nb, self.n, k1, k1)
        return self._unbatch(out)

    def _sparse_factor(self, vdata: np.ndarray, w: np.ndarray) -> Factor:
        v = self.v_matrix(vdata)
        a = (v.T @ v.multiply(w[:, None]).tocsr() + sp.identity(v.shape[1])).tocsc()
        lu = spla.splu(a, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0)
        logdet = np.log(np.abs(lu.U.diagonal())).sum(keepdims=True)
        return Factor(np.zeros((1, 0, 1, 1)), logdet, None, None, False, lu)
