"""BZSL, Bayesian zero-shot learning with DNA side information (Badirli et al. 2021): the model.

Image features are projected by PCA; each class is a Normal–inverse-Wishart posterior whose predictive is
a multivariate Student-t; a seen class's posterior comes from its own training images, an unseen class's
from the training images of the K seen classes whose DNA class embeddings are nearest. Every formula (and
the compat quirk of the code behind the published numbers) is in docs/method.md, "BZSL"; in short, with
d the PCA dimension and c = (m - d - 1)/s (so Psi = c * Sigma0):

    seen class (n images, mean xbar, scatter S):  kappa = k0*k1/(k0+k1), v = n + m - d + 1,
        mu = (n*xbar + kappa*mu0)/(n + kappa),
        Sigma = [Psi + S + extra] * (n + kappa + 1)/((n + kappa)*v),
        extra = q*J (compat: q = n*kappa/(n+kappa)*|xbar - mu0|^2 added to every entry) or
                n*kappa/(n+kappa)*(xbar - mu0)(xbar - mu0)^T (paper)
    unseen class (neighbours j):  kappa_j = n_j*k1/(n_j + k1), kt = (sum kappa_j + k0)*k1/(sum kappa_j + k0 + k1),
        mu = (sum kappa_j*xbar_j + k0*mu0)/(sum kappa_j + k0), v = sum n_j - K + m - d + 1,
        Sigma = (Psi + sum S_j) / (kt*v/(kt + 1))

Why hand-written, and how it is fast: no maintained library implements this model, and the direct route
(a d x d Cholesky factorisation and a triangular solve of every test point, per class and per grid point)
costs about 10^12 operations per grid point at INSECT size. Here Sigma0 = L0 L0^T is factorised once;
in coordinates whitened by L0 and centred at mu0, every class covariance is a scalar times
c*I + F^T F (+ q*w w^T), F holding the class's scatter as a few orthogonal rows (its singular vectors, at
most n - 1 of them). Log-determinants then follow from the singular values (matrix determinant lemma) and
Mahalanobis terms from the Woodbury/Sherman–Morrison identities, using each test point's projections on
those rows, which do not depend on the hyper-parameters: they are computed once per test chunk, and every
grid point costs a few sparse products instead of factorisations. Results agree with the direct route to
rounding (tests/test_bzsl.py checks 1e-9 relative).

A non-positive-definite Sigma0 (fewer within-class degrees of freedom than dimensions, or duplicated
images) gets jitter: eps*I with eps = 1e-10 * trace(Sigma0)/d, doubled until the Cholesky factorisation
succeeds; the jitter used is reported (`SeenClasses.jitter`). Every class covariance is then positive
definite by construction (c > 0 times a positive-definite matrix plus positive semi-definite terms).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.spatial.distance
from scipy.special import gammaln
from threadpoolctl import threadpool_limits

COVARIANCES = ("compat", "paper")


@dataclass(frozen=True)
class BzslParams:
    """One point of the hyper-parameter grid."""

    K: int
    k0: float
    k1: float
    m: float
    s: float

    def to_json(self) -> dict:
        return {"k0": self.k0, "k1": self.k1, "m": self.m, "s": self.s, "K": self.K}


def pca_basis(x_fit: np.ndarray, dim: int) -> np.ndarray:
    """[D, dim] top-`dim` eigenvectors of the covariance of `x_fit` [N, D], largest eigenvalue first.

    Each eigenvector's sign is fixed so that its largest-|entry| is positive (LAPACK leaves signs arbitrary,
    and the compat covariance term depends on them). Features are projected as `x @ basis`, not centred.
    """
    x_fit = np.asarray(x_fit, dtype=np.float64)
    if not 1 <= dim <= x_fit.shape[1]:
        raise ValueError(f"the PCA dimension must be between 1 and the feature dimension {x_fit.shape[1]}, got {dim}")
    with threadpool_limits(limits=1, user_api="blas"):  # see _scatter_rows
        _, vectors = np.linalg.eigh(np.cov(x_fit, rowvar=False))
    basis = vectors[:, ::-1][:, :dim]
    largest = np.argmax(np.abs(basis), axis=0)
    return basis * np.sign(basis[largest, np.arange(dim)])


def cholesky_with_jitter(matrix: np.ndarray) -> tuple[np.ndarray, float]:
    """Lower Cholesky factor of `matrix` (+ eps*I when needed, eps doubled from 1e-10*mean diagonal) and eps."""
    jitter = 0.0
    step = 1e-10 * max(float(np.trace(matrix)) / len(matrix), np.finfo(float).tiny)
    for _ in range(80):  # 1e-10 * 2^80: far beyond any useful jitter
        try:
            return np.linalg.cholesky(matrix + jitter * np.eye(len(matrix))), jitter
        except np.linalg.LinAlgError:
            jitter = step if jitter == 0.0 else 2.0 * jitter
    raise np.linalg.LinAlgError("the prior covariance is not positive definite even with jitter")


def _scatter_rows(centred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows F (r x d) with F^T F = centred^T centred, and their squared norms (the non-zero eigenvalues).

    Callers run it under `threadpool_limits(1)`: OpenBLAS's threaded LAPACK is up to 50x slower on these
    small problems (and on the 768 x 768 PCA eigendecomposition) when the cores are shared.
    """
    if len(centred) == 0:
        return np.zeros((0, centred.shape[1])), np.zeros(0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    keep = sv > 1e-12 * max(sv[0], np.finfo(float).tiny) if len(sv) else np.zeros(0, bool)
    return sv[keep, None] * vt[keep], sv[keep] ** 2


@dataclass
class SeenClasses:
    """The training side of BZSL in whitened coordinates z = L0^{-1}(x - mu0) (x in PCA coordinates)."""

    classes: np.ndarray  # [C] seen labels, ascending
    counts: np.ndarray  # [C] training images per class
    mu0: np.ndarray  # [d] prior mean (PCA coordinates)
    chol0: np.ndarray  # [d, d] L0, Sigma0 (+ jitter) = L0 L0^T
    logdet0: float
    jitter: float
    zbar: np.ndarray  # [C, d] whitened class means
    dist2: np.ndarray  # [C] |xbar - mu0|^2 in PCA coordinates (the compat q term)
    rows: np.ndarray  # [R, d] scatter rows of all classes
    lam: np.ndarray  # [R] their squared norms
    owner: np.ndarray  # [R] class index (0..C-1) of each row
    w_compat: np.ndarray  # [d] L0^{-1} 1, the whitened all-ones direction

    @property
    def dim(self) -> int:
        return self.chol0.shape[0]

    def whiten(self, x: np.ndarray) -> np.ndarray:
        """[T, d] PCA features -> whitened, centred at mu0."""
        return scipy.linalg.solve_triangular(self.chol0, (np.asarray(x) - self.mu0).T, lower=True).T


def fit_seen_classes(x: np.ndarray, y: np.ndarray) -> SeenClasses:
    """The prior (mu0, Sigma0) and per-class statistics from PCA features `x` [N, d] with labels `y`.

    mu0 is the mean of the class means; Sigma0 the mean of the unbiased class covariances over the classes
    with at least two images (a single image has no covariance; it still has a mean and a zero scatter).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    d = x.shape[1]
    sums = np.zeros((len(classes), d))
    np.add.at(sums, inverse, x)
    means = sums / counts[:, None]
    centred = x - means[inverse]
    mu0 = means.mean(axis=0)
    several = counts >= 2
    if not several.any():
        raise ValueError("every seen class has a single training image; BZSL needs class covariances")
    weights = np.where(several, 1.0 / np.maximum(counts - 1, 1), 0.0)[inverse]
    sigma0 = (centred * weights[:, None]).T @ centred / several.sum()
    chol0, jitter = cholesky_with_jitter(sigma0)
    whiten = lambda v: scipy.linalg.solve_triangular(chol0, v.T, lower=True).T  # noqa: E731
    zcentred = whiten(centred)
    order = np.argsort(inverse, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    rows, lam, owner = [], [], []
    with threadpool_limits(limits=1, user_api="blas"):
        for k in range(len(classes)):
            f, ev = _scatter_rows(zcentred[order[bounds[k] : bounds[k + 1]]])
            rows.append(f)
            lam.append(ev)
            owner.append(np.full(len(ev), k))
    return SeenClasses(
        classes=classes,
        counts=counts.astype(np.float64),
        mu0=mu0,
        chol0=chol0,
        logdet0=2.0 * float(np.log(np.diag(chol0)).sum()),
        jitter=jitter,
        zbar=whiten(means - mu0),
        dist2=((means - mu0) ** 2).sum(axis=1),
        rows=np.concatenate(rows),
        lam=np.concatenate(lam),
        owner=np.concatenate(owner).astype(np.int64),
        w_compat=whiten(np.ones((1, d)))[0],
    )


def nearest_seen_classes(unseen_side: np.ndarray, seen_side: np.ndarray, K: int) -> np.ndarray:
    """[U, K] indices of each unseen class's K nearest seen classes (Euclidean, side-information space).

    Unseen classes are taken in the given (ascending label) order; when a class's chosen set equals an
    earlier unseen class's set, its last member is replaced by the next nearest until the set differs.
    Equal distances keep the lower seen index first.
    """
    if not 1 <= K <= len(seen_side):
        raise ValueError(f"K must be between 1 and the number of seen classes ({len(seen_side)}), got {K}")
    dist = scipy.spatial.distance.cdist(unseen_side, seen_side)
    taken: set[frozenset] = set()
    chosen = np.empty((len(unseen_side), K), dtype=np.int64)
    for u, row in enumerate(dist):
        order = np.argsort(row, kind="stable")
        pick, nxt = list(order[:K]), K
        while frozenset(pick) in taken:
            if nxt >= len(order):
                raise ValueError(f"no unused set of {K} nearest seen classes is left for unseen class {u}")
            pick[-1] = order[nxt]
            nxt += 1
        taken.add(frozenset(pick))
        chosen[u] = pick
    return chosen


@dataclass
class UnseenClasses:
    """Unseen classes for one K: neighbour sets and the scatter rows of their pooled scatter."""

    classes: np.ndarray  # [U] unseen labels, ascending
    neighbours: np.ndarray  # [U, K] seen class indices
    rows: np.ndarray  # [R_U, d]
    lam: np.ndarray  # [R_U]
    owner: np.ndarray  # [R_U] unseen class index
    rows_zbar: np.ndarray  # [R_U, K] each row's dot product with the neighbours' whitened means
    zbar_gram: np.ndarray  # [U, K, K] the neighbours' whitened means' Gram matrix


def build_unseen_classes(seen: SeenClasses, classes: np.ndarray, neighbours: np.ndarray) -> UnseenClasses:
    """Pool each unseen class's neighbours' scatters (sum of S_j) into orthogonal rows."""
    rows, lam, owner, rows_zbar = [], [], [], []
    by_class = np.argsort(seen.owner, kind="stable")
    starts = np.searchsorted(seen.owner[by_class], np.arange(len(seen.classes) + 1))
    with threadpool_limits(limits=1, user_api="blas"):
        for u, nb in enumerate(neighbours):
            stacked = np.concatenate([seen.rows[by_class[starts[j] : starts[j + 1]]] for j in nb])
            f, ev = _scatter_rows(stacked)
            rows.append(f)
            lam.append(ev)
            owner.append(np.full(len(ev), u))
            rows_zbar.append(f @ seen.zbar[nb].T)
    zb = seen.zbar[neighbours]  # [U, K, d]
    return UnseenClasses(
        classes=np.asarray(classes),
        neighbours=neighbours,
        rows=np.concatenate(rows),
        lam=np.concatenate(lam),
        owner=np.concatenate(owner).astype(np.int64),
        rows_zbar=np.concatenate(rows_zbar),
        zbar_gram=np.einsum("ukd,uld->ukl", zb, zb),
    )


@dataclass
class ChunkProjections:
    """A chunk of test points' hyper-parameter-free projections (whitened, centred at mu0), class-major.

    Arrays are [classes or rows, T] so that the sparse per-class sums read them without copies.
    """

    zz: np.ndarray  # [T] |z|^2
    zbar: np.ndarray  # [C, T] zbar_c . z
    rows: np.ndarray  # [R, T] f_j . z (seen scatter rows)
    rows_sq: np.ndarray  # [R, T] their squares
    w_compat: np.ndarray  # [T] w_compat . z
    unseen_rows: dict  # K -> ([R_U, T] projections, their squares)


def project_chunk(seen: SeenClasses, unseen: dict[int, UnseenClasses], x: np.ndarray) -> ChunkProjections:
    """Project PCA features `x` [T, d] on everything the grid needs (done once per chunk)."""
    zt = np.ascontiguousarray(seen.whiten(x).T)  # [d, T]
    rows = seen.rows @ zt
    unseen_rows = {}
    for K, u in unseen.items():
        projected = u.rows @ zt
        unseen_rows[K] = (projected, projected * projected)
    return ChunkProjections(
        zz=(zt * zt).sum(axis=0),
        zbar=seen.zbar @ zt,
        rows=rows,
        rows_sq=rows * rows,
        w_compat=seen.w_compat @ zt,
        unseen_rows=unseen_rows,
    )


def _per_class_sums(owner: np.ndarray, n_groups: int, weights: list[np.ndarray], values: np.ndarray) -> np.ndarray:
    """[len(weights) * n_groups, T]: block i, row k = sum over rows j of class k of weights[i][j] * values[j]."""
    r = len(owner)
    data = np.concatenate(weights)
    rows = np.concatenate([owner + i * n_groups for i in range(len(weights))])
    cols = np.tile(np.arange(r), len(weights))
    matrix = scipy.sparse.csr_matrix((data, (rows, cols)), shape=(n_groups * len(weights), r))
    return matrix @ values


def _student_t(v, d, logdet, maha) -> np.ndarray:
    """[T, C] Student-t log-densities from per-class v, log|Sigma| and the [C, T] Mahalanobis terms."""
    v, logdet = v[:, None], logdet[:, None]
    const = gammaln((v + d) / 2) - gammaln(v / 2) - d / 2 * np.log(v * np.pi) - 0.5 * logdet
    return (const - (v + d) / 2 * np.log1p(maha / v)).T


def seen_log_densities(
    seen: SeenClasses, chunk: ChunkProjections, params: BzslParams, covariance: str = "compat"
) -> np.ndarray:
    """[T, C] predictive log-densities of the chunk's points under each seen class."""
    d, n, k0, k1, m, s = seen.dim, seen.counts, params.k0, params.k1, params.m, params.s
    kappa = k0 * k1 / (k0 + k1)
    c = (m - d - 1) / s
    v = n + m - d + 1
    a = (n + kappa + 1) / ((n + kappa) * v)
    r = n / (n + kappa)  # whitened posterior mean = r * zbar
    owner, lam, ncls = seen.owner, seen.lam, len(seen.classes)
    g = np.einsum("rd,rd->r", seen.rows, seen.zbar[owner])  # f_j . zbar of its class
    beta = r[owner] * g  # f_j . (posterior mean)
    zbn = (seen.zbar * seen.zbar).sum(axis=1)
    if covariance == "compat":  # w = L0^{-1} 1, q = n kappa/(n + kappa) |xbar - mu0|^2
        fw = seen.rows @ seen.w_compat
        wy = chunk.w_compat[None, :] - (r * (seen.zbar @ seen.w_compat))[:, None]
        ww = float(seen.w_compat @ seen.w_compat)
        q = n * kappa / (n + kappa) * seen.dist2
    elif covariance == "paper":  # w = zbar, q = n kappa/(n + kappa)
        fw = g
        wy = chunk.zbar - (r * zbn)[:, None]
        ww = zbn
        q = n * kappa / (n + kappa)
    else:
        raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
    inv = 1.0 / (c + lam)
    sums = lambda w: np.bincount(owner, weights=w, minlength=ncls)  # noqa: E731
    both = _per_class_sums(owner, ncls, [beta * inv, fw * inv], chunk.rows)
    quad = _per_class_sums(owner, ncls, [inv], chunk.rows_sq) - 2.0 * both[:ncls] + sums(beta * beta * inv)[:, None]
    yy = chunk.zz[None, :] - 2.0 * r[:, None] * chunk.zbar + (r * r * zbn)[:, None]
    y_by = (yy - quad) / c  # y^T B^{-1} y, B = c I + F^T F
    w_by = (wy - both[ncls:] + sums(fw * beta * inv)[:, None]) / c
    w_bw = (ww - sums(fw * fw * inv)) / c
    maha = (y_by - (q / (1.0 + q * w_bw))[:, None] * w_by * w_by) / a[:, None]  # Sherman-Morrison
    logdet = d * np.log(a) + seen.logdet0 + d * np.log(c) + sums(np.log1p(lam / c)) + np.log1p(q * w_bw)
    return _student_t(v, d, logdet, maha)


def unseen_log_densities(
    seen: SeenClasses, unseen: UnseenClasses, chunk: ChunkProjections, params: BzslParams
) -> np.ndarray:
    """[T, U] predictive log-densities of the chunk's points under each unseen class (for K = params.K)."""
    d, k0, k1, m, s, K = seen.dim, params.k0, params.k1, params.m, params.s, params.K
    nb = unseen.neighbours
    n_nb = seen.counts[nb]  # [U, K]
    kj = n_nb * k1 / (n_nb + k1)
    sk = kj.sum(axis=1)
    kt = (sk + k0) * k1 / (sk + k0 + k1)
    alpha = kj / (sk + k0)[:, None]  # whitened mean = sum alpha_j zbar_j (mu0 is the origin)
    c = (m - d - 1) / s
    v = n_nb.sum(axis=1) - K + m - d + 1
    a = (kt + 1) / (kt * v)
    owner, lam, ncls = unseen.owner, unseen.lam, len(unseen.classes)
    rows, rows_sq = chunk.unseen_rows[K]
    beta = (unseen.rows_zbar * alpha[owner]).sum(axis=1)
    inv = 1.0 / (c + lam)
    yy = chunk.zz[None, :] - 2.0 * np.einsum("ukt,uk->ut", chunk.zbar[nb], alpha)
    yy += np.einsum("uk,ukl,ul->u", alpha, unseen.zbar_gram, alpha)[:, None]
    quad = _per_class_sums(owner, ncls, [inv], rows_sq) - 2.0 * _per_class_sums(owner, ncls, [beta * inv], rows)
    quad += np.bincount(owner, weights=beta * beta * inv, minlength=ncls)[:, None]
    maha = (yy - quad) / c / a[:, None]
    logdet = d * np.log(a) + seen.logdet0 + d * np.log(c) + np.bincount(owner, np.log1p(lam / c), minlength=ncls)
    return _student_t(v, d, logdet, maha)


def predict(seen_scores: np.ndarray, unseen_scores: np.ndarray, seen: SeenClasses, unseen: UnseenClasses) -> np.ndarray:
    """Labels of the argmax over unseen then seen classes (so ties go to unseen classes, ascending)."""
    labels = np.concatenate([unseen.classes, seen.classes])
    return labels[np.argmax(np.concatenate([unseen_scores, seen_scores], axis=1), axis=1)]


def posterior_parameters(
    seen: SeenClasses, params: BzslParams, covariance: str = "compat", unseen: UnseenClasses | None = None
) -> dict[int, tuple[np.ndarray, np.ndarray, float]]:
    """label -> (mu, Sigma, v) in PCA coordinates, dense: for inspection and small-d checks (O(C d^2) memory)."""
    d, k0, k1, m, s = seen.dim, params.k0, params.k1, params.m, params.s
    L0 = seen.chol0
    psi = (m - d - 1) / s * (L0 @ L0.T)
    kappa = k0 * k1 / (k0 + k1)
    out = {}
    for i, label in enumerate(seen.classes):
        n = seen.counts[i]
        f = seen.rows[seen.owner == i] @ L0.T
        diff = L0 @ seen.zbar[i]
        q = n * kappa / (n + kappa)
        extra = q * seen.dist2[i] * np.ones((d, d)) if covariance == "compat" else q * np.outer(diff, diff)
        v = n + m - d + 1
        sigma = (psi + f.T @ f + extra) * (n + kappa + 1) / ((n + kappa) * v)
        out[int(label)] = (seen.mu0 + n * diff / (n + kappa), sigma, float(v))
    for u, label in enumerate([] if unseen is None else unseen.classes):
        nb = unseen.neighbours[u]
        n_nb = seen.counts[nb]
        kj = n_nb * k1 / (n_nb + k1)
        kt = (kj.sum() + k0) * k1 / (kj.sum() + k0 + k1)
        f = unseen.rows[unseen.owner == u] @ L0.T
        v = n_nb.sum() - len(nb) + m - d + 1
        mu = seen.mu0 + (kj[:, None] * (seen.zbar[nb] @ L0.T)).sum(axis=0) / (kj.sum() + k0)
        out[int(label)] = (mu, (psi + f.T @ f) / (kt * v / (kt + 1)), float(v))
    return out
