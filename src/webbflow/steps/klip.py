"""klip for coronagraphy, as jwst 3.0's ``coron.klip`` (reference-star differential imaging).

The Karhunen-Loeve basis of the aligned PSF planes (each mean-subtracted, float64):
``eigh(cov(R))`` sorted by decreasing eigenvalue, ``Z = V.T R``, each row normalised, the first
``truncate`` kept.  Each science integration ``t`` (float64, not mean-subtracted) gives
``psfsub = (t - mean(t)) - Z.T (Z t)``; ERR is the standard deviation over the PSF planes of their
own residuals ``R_k - Z.T (Z R_k)`` (ddof 0), the same for every integration.  With
``truncate >= npsf`` that is full-rank projection and ERR is round-off carrying no noise
information (jwst's too).  No NaN handling: jwst's median replacement runs first.

jwst rebuilds the basis for every integration; it depends on the PSF planes only, so it is built
once per science exposure here (bit-identical, most of jwst's klip time).
"""

import logging

import numpy as np

__all__ = ["KLBasis", "kl_basis", "klip"]

log = logging.getLogger(__name__)


class KLBasis:
    """A truncated KL basis and the ERR image it implies.

    Attributes
    ----------
    vectors : ndarray
        (nmodes, npix) float64, unit rows.
    eigenvalues : ndarray
        All eigenvalues of the reference covariance, decreasing.
    err : ndarray
        (ny, nx) float64, std of the references' residuals.
    """

    def __init__(self, vectors, eigenvalues, err):
        self.vectors = vectors
        self.eigenvalues = eigenvalues
        self.err = err


def kl_basis(refs, truncate=50):
    """Build the KL basis of PSF reference planes (jwst's ``karhunen_loeve_transform``, normalised).

    Parameters
    ----------
    refs : ndarray
        (npsf, ny, nx) aligned PSF planes (finite).
    truncate : int
        KL modes kept (jwst's ``truncate``, default 50).

    Returns
    -------
    KLBasis
    """
    if truncate < 0:
        raise ValueError(f"klip truncate must be >= 0, not {truncate}")
    npsf, ny, nx = refs.shape
    r = refs.astype(np.float64).reshape(npsf, ny * nx)
    for k in range(npsf):  # row by row, as jwst (np.mean per row, float64)
        r[k] -= np.mean(r[k], dtype=np.float64)
    eigval, eigvect = np.linalg.eigh(np.cov(r))
    order = eigval.argsort()[::-1]
    eigval, eigvect = eigval[order], eigvect[:, order]
    z = np.dot(eigvect.T, r)
    for k in range(len(z)):
        z[k] /= np.linalg.norm(z[k])
    z = z[:truncate]
    # The residuals one reference at a time with np.dot, as jwst: with full-rank bases they are
    # round-off, which a differently ordered product (one matrix multiply) would not reproduce.
    fit = np.empty_like(r)
    for k in range(npsf):
        fit[k] = r[k] - np.dot(z.T, np.dot(r[k], z.T))
    err = np.std(fit, 0).reshape(ny, nx)
    if truncate >= npsf:
        log.info("klip: truncate %d >= %d PSF planes: full-rank projection, ERR is round-off", truncate, npsf)
    return KLBasis(z, eigval, err)


def klip(science, basis):
    """Subtract the KL projection of each science integration.

    Parameters
    ----------
    science : ndarray
        (nints, ny, nx) science cube (after bad-pixel replacement).
    basis : KLBasis
        From :func:`kl_basis`.

    Returns
    -------
    data, err : ndarray
        (nints, ny, nx) float32: PSF-subtracted integrations and jwst's ERR (the basis' ERR in every
        plane).
    """
    nints, ny, nx = science.shape
    z = basis.vectors
    out = np.empty(science.shape, np.float32)
    for i in range(nints):
        t = science[i].astype(np.float64).reshape(-1)
        model = np.dot(z.T, np.dot(t, z.T))
        sub = t - t.mean()
        sub -= model
        out[i] = sub.reshape(ny, nx)
    err = np.broadcast_to(basis.err.astype(np.float32), science.shape).copy()
    return out, err
