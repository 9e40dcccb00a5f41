"""Structured factorization of A = Λ'Z'WZΛ + I, the matrix behind every PLS/PIRLS step.

Why not a general sparse Cholesky: CHOLMOD is not installable from PyPI here, and the
mixed models of human studies have a fixed shape that is faster to exploit directly (as
MixedModels.jl does). The first random-effect term, the one with the most levels, gives a
block-diagonal A11 (k x k blocks, one per level) that is inverted block by block; the other
terms are few levels (units, items) and their Schur complement S = A22 - A21 A11⁻¹ A12 is
small and dense. All blocks are accumulated with ``np.bincount`` over index arrays that are
computed once per design, so a factorization costs O(n) plus a q2 x q2 Cholesky. When the
remainder is too large for dense algebra, a SuperLU factorization of the sparse A is used.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from analysis.design import Design

_DENSE_Q2 = 6000  # largest remainder handled as a dense Schur complement
_DENSE_CELLS = 40_000_000  # largest dense A21 (q2 x q1)


class Factor:
    """Factorization of A with its log-determinant and a solver for A x = b."""

    def __init__(self, a11inv: np.ndarray, logdet: float, m: np.ndarray | None,
                 s_chol: np.ndarray | None, lu: spla.SuperLU | None = None) -> None:
        self.a11inv = a11inv  # (n1, k1, k1)
        self.logdet = logdet
        self.m = m  # (q2, q1) = A21 A11⁻¹
        self.s_chol = s_chol  # lower Cholesky factor of the Schur complement
        self.lu = lu

    def _a11_solve(self, b1: np.ndarray) -> np.ndarray:
        n1, k1, _ = self.a11inv.shape
        shaped = b1.reshape(n1, k1, -1)
        return np.einsum("ikl,ilm->ikm", self.a11inv, shaped).reshape(b1.shape)

    def solve(self, b: np.ndarray) -> np.ndarray:
        """x = A⁻¹ b for b of shape (q,) or (q, m)."""
        if self.lu is not None:
            return self.lu.solve(np.asarray(b, dtype=float))
        q1 = self.a11inv.shape[0] * self.a11inv.shape[1]
        b1, b2 = b[:q1], b[q1:]
        y1 = self._a11_solve(b1)
        if self.m is None:
            return y1
        rhs = b2 - self.m @ b1
        x2 = sla.cho_solve((self.s_chol, True), rhs)
        x1 = y1 - self.m.T @ x2
        return np.concatenate([x1, x2])


class BlockSystem:
    """Index arrays for accumulating A from the rows of ZΛ; built once per design."""

    def __init__(self, design: Design) -> None:
        terms = design.terms
        self.n = design.n
        t0, rest = terms[0], terms[1:]
        self.n1, self.k1 = t0.nlevels, t0.k
        self.q1 = t0.q
        self.q2 = sum(t.q for t in rest)
        self.m_cols = sum(t.k for t in terms)
        g0 = t0.codes
        k1 = self.k1
        cols0 = g0[:, None] * k1 + np.arange(k1)  # (n, k1)
        cols2_parts, off = [], 0
        for t in rest:
            cols2_parts.append(off + t.codes[:, None] * t.k + np.arange(t.k))
            off += t.q
        cols2 = np.hstack(cols2_parts) if rest else np.zeros((self.n, 0), dtype=np.int64)
        # sparse V = ZΛ with a fixed CSR structure: only its data change with θ
        self.v_indices = np.hstack([cols0, cols2 + self.q1]).ravel()
        self.v_indptr = np.arange(0, self.n * self.m_cols + 1, self.m_cols)
        self.dense = self.q2 <= _DENSE_Q2 and self.q2 * self.q1 <= _DENSE_CELLS
        if self.dense:
            self.idx11 = (g0[:, None, None] * k1 * k1 + np.arange(k1)[:, None] * k1
                          + np.arange(k1)[None, :]).ravel()
            self.idx21 = (cols2[:, :, None] * self.q1 + cols0[:, None, :]).ravel()
            self.idx22 = (cols2[:, :, None] * self.q2 + cols2[:, None, :]).ravel()

    def v_matrix(self, vdata: np.ndarray) -> sp.csr_matrix:
        """ZΛ as sparse (n x q) from row values (n, m_cols)."""
        return sp.csr_matrix((vdata.ravel(), self.v_indices, self.v_indptr),
                             shape=(self.n, self.q1 + self.q2))

    def factor(self, vdata: np.ndarray, w: np.ndarray) -> Factor:
        """Factor A = V'WV + I for row values ``vdata`` (n, m_cols) and weights ``w`` (n,)."""
        if not self.dense:
            return self._sparse_factor(vdata, w)
        k1, n1 = self.k1, self.n1
        v0, v2 = vdata[:, :k1], vdata[:, k1:]
        wv0 = w[:, None] * v0
        a11 = np.bincount(self.idx11, (wv0[:, :, None] * v0[:, None, :]).ravel(),
                          minlength=n1 * k1 * k1).reshape(n1, k1, k1)
        a11[:, np.arange(k1), np.arange(k1)] += 1.0
        if k1 == 1:
            a11inv = 1.0 / a11
            logdet = float(np.sum(np.log(a11)))
        else:
            chol = np.linalg.cholesky(a11)
            logdet = float(2 * np.sum(np.log(np.diagonal(chol, axis1=1, axis2=2))))
            a11inv = np.linalg.inv(a11)
        if self.q2 == 0:
            return Factor(a11inv, logdet, None, None)
        a21 = np.bincount(self.idx21, (v2[:, :, None] * wv0[:, None, :]).ravel(),
                          minlength=self.q2 * self.q1).reshape(self.q2, self.q1)
        wv2 = w[:, None] * v2
        a22 = np.bincount(self.idx22, (wv2[:, :, None] * v2[:, None, :]).ravel(),
                          minlength=self.q2 * self.q2).reshape(self.q2, self.q2)
        a22[np.diag_indices(self.q2)] += 1.0
        m = np.einsum("aik,ikl->ail", a21.reshape(self.q2, n1, k1), a11inv).reshape(
            self.q2, self.q1)
        s = a22 - m @ a21.T
        s_chol = np.linalg.cholesky(s)
        logdet += float(2 * np.sum(np.log(np.diag(s_chol))))
        return Factor(a11inv, logdet, m, s_chol)

    def _sparse_factor(self, vdata: np.ndarray, w: np.ndarray) -> Factor:
        v = self.v_matrix(vdata)
        a = (v.T @ v.multiply(w[:, None]).tocsr() + sp.identity(v.shape[1])).tocsc()
        lu = spla.splu(a, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0)
        logdet = float(np.sum(np.log(np.abs(lu.U.diagonal()))))
        return Factor(np.zeros((0, 1, 1)), logdet, None, None, lu)
