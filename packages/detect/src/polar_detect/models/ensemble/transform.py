"""Global transformation block of the feature-level ensemble: resize -> concatenate ->
standardise -> balance sources -> PCA.

Every feature source yields a map (B, C_i, h_i, w_i). :func:`resize_concat` resizes each
map bilinearly (``align_corners=False``) to the first source's (h, w) and concatenates along
channels: (B, D, h, w), D = sum C_i. :class:`GlobalTransform` then maps every patch vector
x (D,) to y (N,)::

    z_j = (x_j - mean_j) / std_j * w_j
    y   = components @ z                      (components: (N, D), orthonormal rows)

with ``mean`` per channel over every training patch and, by ``balance`` (sources have very
different units -- ImageNet activations, DRÆM encoder activations, PatchCore distances):

* ``"source"`` (default): std_j = 1 and w_j = sqrt(D / (S * V_i)) for the channels of
  source i of S sources, V_i = the total variance of source i's channels: every source holds
  the same total variance D / S whatever its units and channel count (a 1-channel PatchCore
  distance map is not drowned by a 300-channel backbone), while the channels *within* a
  source keep their relative variances -- the geometry PatchCore's distances use, where
  near-constant channels stay negligible. With one source this is one global scale factor.
* ``"channel"``: std_j = the channel's population std (ddof 0) and w_j = 1: every channel
  unit variance (a z-score; near-constant, noise-only channels are amplified to the same
  weight as informative ones).

Either way the total variance is D (a mean per-channel variance of 1); a channel or source
with zero variance gets factor 1 (it maps to 0).
* ``components``: the top-N eigenvectors of the covariance of z (descending eigenvalue),
  each signed so that its entry of largest magnitude is positive. By default outputs are
  *not* whitened: component k has variance eigenvalue_k, and y keeps z's Euclidean
  geometry when N = D (a rotation), so noise added to y is isotropic in z's units. With
  ``whiten`` component k is divided by sqrt(eigenvalue_k) (every output unit variance).

Fitting is streaming (:class:`MomentAccumulator`): one pass over the training maps keeps the
count, mean and scatter matrix (D x D) in float64, merged batch by batch (Chan et al.'s
pairwise update), so memory is O(D^2) whatever the number of patches. The covariance is
exact (not an incremental approximation), so the components equal scikit-learn's
``StandardScaler`` -> column weights -> ``PCA(N)`` on the same patches up to sign (tested).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BALANCES = ("source", "channel")


def resize_concat(maps: list[torch.Tensor], size: tuple[int, int] | None = None) -> torch.Tensor:
    """Bilinearly resize every (B, C_i, h_i, w_i) map to ``size`` (default: the first map's
    (h, w)) and concatenate along channels -> (B, sum C_i, h, w)."""
    if not maps:
        raise ValueError("no feature maps to concatenate")
    size = tuple(maps[0].shape[-2:]) if size is None else tuple(size)
    out = [m if tuple(m.shape[-2:]) == size else
           F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps]
    return torch.cat(out, 1)


def flatten_patches(f: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (B*h*w, D), patches in (b, y, x) order."""
    return f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])


class MomentAccumulator:
    """Streaming count, mean and scatter matrix of D-dimensional rows (float64)."""

    def __init__(self, dim: int):
        self.dim = int(dim)
        self.n = 0
        self.mean = torch.zeros(self.dim, dtype=torch.float64)
        self.scatter = torch.zeros(self.dim, self.dim, dtype=torch.float64)

    def update(self, x: torch.Tensor) -> None:
        """Add rows ``x`` (n, D)."""
        x = x.detach().to("cpu", torch.float64).reshape(-1, self.dim)
        nb = x.shape[0]
        if nb == 0:
            return
        mb = x.mean(0)
        xc = x - mb
        sb = xc.T @ xc
        n = self.n + nb
        delta = mb - self.mean
        self.scatter += sb + torch.outer(delta, delta) * (self.n * nb / n)
        self.mean += delta * (nb / n)
        self.n = n

    def covariance(self) -> torch.Tensor:
        """Population covariance (ddof 0)."""
        if self.n == 0:
            raise ValueError("no training patches to fit the transform on")
        return self.scatter / self.n


def balance_weights(variances: torch.Tensor, source_channels: list[int], balance: str
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(std, w) per channel from the channel variances (see module docstring)."""
    if balance not in BALANCES:
        raise ValueError(f"balance must be one of {BALANCES}, got {balance!r}")
    var = variances.to(torch.float64).clamp_min(0)
    d, s = sum(source_channels), len(source_channels)
    if balance == "channel":
        std = var.sqrt()
        dead = std <= 1e-12 * max(1.0, float(std.max()))
        return torch.where(dead, torch.ones_like(std), std), torch.ones(d, dtype=torch.float64)
    w, start = [], 0
    for c in source_channels:
        v = float(var[start:start + c].sum())
        w.append(torch.full((c,), math.sqrt(d / (s * v)) if v > 0 else 1.0, dtype=torch.float64))
        start += c
    return torch.ones(d, dtype=torch.float64), torch.cat(w)


def pca_components(cov: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``n`` eigenvectors (rows, sign-fixed) and all eigenvalues (descending) of a
    symmetric covariance matrix."""
    vals, vecs = torch.linalg.eigh(cov)
    vals, vecs = vals.flip(0).clamp_min(0.0), vecs.flip(1)
    comp = vecs[:, :n].T.clone()
    idx = comp.abs().argmax(1)
    sign = torch.sign(comp[torch.arange(len(comp)), idx])
    sign[sign == 0] = 1.0
    return comp * sign[:, None], vals


class GlobalTransform(nn.Module):
    """Standardise, balance and project (B, D, h, w) feature maps to (B, N, h, w).

    Build with :meth:`fit` (from a :class:`MomentAccumulator` over training patches) or with
    the dimensions and load a state dict (buffers ``mean``, ``std``, ``weight``,
    ``components``)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        if not 1 <= out_dim <= in_dim:
            raise ValueError(f"PCA output channels must be in 1..{in_dim} (the input channels), got {out_dim}")
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.register_buffer("weight", torch.ones(in_dim))
        self.register_buffer("components", torch.eye(in_dim)[:out_dim].clone())
        self.info: dict = {}

    @classmethod
    def fit(cls, acc: MomentAccumulator, source_channels: list[int], out_dim: int | None,
            balance: str = "source", whiten: bool = False) -> "GlobalTransform":
        """Fit on the accumulated moments; ``out_dim`` None keeps all D channels; ``whiten``
        divides component k by sqrt(eigenvalue_k) (unit variance per output channel)."""
        d = acc.dim
        if sum(source_channels) != d:
            raise ValueError(f"source channels {source_channels} do not add up to {d}")
        t = cls(d, d if out_dim is None else out_dim)
        cov = acc.covariance()
        std, w = balance_weights(cov.diagonal(), source_channels, balance)
        scale = w / std
        comp, vals = pca_components(cov * torch.outer(scale, scale), t.out_dim)
        if whiten:
            top = vals[:t.out_dim]
            comp = comp / top.clamp_min(1e-12 * max(1.0, float(top.max()))).sqrt()[:, None]
        t.mean.copy_(acc.mean.float())
        t.std.copy_(std.float())
        t.weight.copy_(w.float())
        t.components.copy_(comp.float())
        total = float(vals.sum())
        t.info = {"patches": int(acc.n), "in_dim": d, "out_dim": t.out_dim, "balance": balance, "whiten": whiten,
                  "source_channels": list(map(int, source_channels)),
                  "constant_channels": int((cov.diagonal() <= 0).sum()),
                  "explained_variance_ratio": float(vals[:t.out_dim].sum() / total) if total > 0 else 1.0}
        return t

    def standardise(self, f: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> balanced z (B, D, h, w)."""
        v = (1, -1, 1, 1)
        return (f - self.mean.view(v)) / self.std.view(v) * self.weight.view(v)

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """The same map on patch rows: (P, D) -> (P, N)."""
        return ((x - self.mean) / self.std * self.weight) @ self.components.T

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> (B, N, h, w)."""
        return torch.einsum("nd,bdhw->bnhw", self.components, self.standardise(f))
