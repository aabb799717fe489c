"""Coresets: the Sequential PatchCore online coreset (constant memory) and greedy k-center.

Sequential rule (issue 6). Points arrive in order. While the coreset holds fewer than |M|
points, each point is appended. Afterwards a dense distance matrix D_M (|M| x |M|, +inf on
the diagonal) is kept. For a new point p: d_p = distance to its nearest coreset point;
d_m = smallest off-diagonal entry of D_M at (i, j). If d_p > d_m, p replaces coreset point
min(i, j) and row/column min(i, j) of D_M are updated. Ties in d_m: the pair whose smaller
index is smallest. Consequence (tested): the coreset's minimum pairwise distance d_m never
decreases, since every distance from p to the remaining points is >= d_p > d_m.

Memory: M (|M| x D) + D_M (|M|^2) + one chunk's distances (chunk x |M|): independent of the
number of images. The per-point rule is sequential, but is evaluated chunk-wise: distances
of a whole chunk to M are computed at once, and only the column of a replaced point is
recomputed after a replacement, so the Python loop runs once per replacement, not per point.
"""
from __future__ import annotations

import torch


def pairwise_dist(a: torch.Tensor, b: torch.Tensor, a2: torch.Tensor | None = None,
                  b2: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean distances (n, m); matrix-product form in one (n, m) buffer, clamped at 0.
    ``a2``/``b2``: precomputed squared norms."""
    a2 = (a * a).sum(1) if a2 is None else a2
    b2 = (b * b).sum(1) if b2 is None else b2
    d = a @ b.T
    d.mul_(-2.0).add_(a2[:, None]).add_(b2[None])
    return d.clamp_min_(0).sqrt_()


class SequentialCoreset:
    def __init__(self, size: int, dim: int, chunk_size: int = 4096,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        if size < 2:
            raise ValueError("coreset size must be >= 2")
        self.size, self.dim, self.chunk_size = int(size), int(dim), int(chunk_size)
        self.M = torch.zeros(self.size, self.dim, device=device, dtype=dtype)
        self.n = 0                      # filled rows
        self.D = None                   # dense D_M once full
        self.row_min = None             # min of each D_M row
        self.changes = 0                # points added or replaced since last reset_changes()

    # -------------------------------------------------------------- state
    @property
    def full(self) -> bool:
        return self.n == self.size

    @property
    def points(self) -> torch.Tensor:
        return self.M[: self.n]

    def min_pairwise(self) -> float:
        """Smallest off-diagonal distance d_m (inf while fewer than 2 points)."""
        if self.full:
            return float(self.row_min.min())
        if self.n < 2:
            return float("inf")
        d = pairwise_dist(self.points, self.points)
        d.fill_diagonal_(float("inf"))
        return float(d.min())

    def reset_changes(self) -> int:
        c, self.changes = self.changes, 0
        return c

    @classmethod
    def from_points(cls, points: torch.Tensor, size: int | None = None, **kw) -> "SequentialCoreset":
        """Continue from a saved coreset (fine-tuning): the points are re-inserted in order."""
        cs = cls(size or len(points), points.shape[1], device=points.device, dtype=points.dtype, **kw)
        cs.update(points)
        cs.reset_changes()
        return cs

    def _build_matrix(self):
        d = pairwise_dist(self.M, self.M)
        self.D = torch.minimum(d, d.T)      # exactly symmetric: ties in d_m resolve to min(i, j)
        self.D.fill_diagonal_(float("inf"))
        self.row_min = self.D.min(1).values

    # -------------------------------------------------------------- update
    @torch.no_grad()
    def update(self, x: torch.Tensor) -> int:
        """Process points x (n, D) in order; returns how many were added or replaced."""
        x = x.to(self.M.device, self.M.dtype).reshape(-1, self.dim)
        changes = 0
        start = 0
        if not self.full:
            take = min(self.size - self.n, len(x))
            self.M[self.n: self.n + take] = x[:take]
            self.n += take
            changes += take
            start = take
            if self.full:
                self._build_matrix()
        for s in range(start, len(x), self.chunk_size):
            changes += self._update_chunk(x[s: s + self.chunk_size])
        self.changes += changes
        return changes

    def _update_chunk(self, c: torch.Tensor) -> int:
        c2 = (c * c).sum(1)
        dist = pairwise_dist(c, self.M, a2=c2)          # (n, |M|) chunk-to-coreset
        dmin = dist.min(1).values
        changes, t, n = 0, 0, len(c)
        while t < n:
            d_m = self.row_min.min()
            cand = torch.nonzero(dmin[t:] > d_m)
            if len(cand) == 0:
                break
            t += int(cand[0])
            # replacement: index min(i, j) of the smallest D_M entry = first row attaining it
            r = int(torch.nonzero(self.row_min == d_m)[0])
            self._replace(r, c[t], dist[t])
            changes += 1
            t += 1
            if t < n:                                   # column r changed for the rest
                rest = dist[t:]
                old_r = rest[:, r].clone()
                mr = self.M[r]
                col = (c2[t:] - 2.0 * (c[t:] @ mr) + mr @ mr).clamp_min_(0).sqrt_()
                rest[:, r] = col
                dmin_rest = dmin[t:]
                was_nn = old_r <= dmin_rest             # r was (one of) their nearest
                torch.minimum(dmin_rest, col, out=dmin_rest)
                if bool(was_nn.any()):
                    idx = torch.nonzero(was_nn)[:, 0]
                    dmin_rest[idx] = rest[idx].min(1).values
        return changes

    def _replace(self, r: int, p: torch.Tensor, dist_p: torch.Tensor):
        self.M[r] = p
        new = dist_p.clone()
        new[r] = float("inf")
        old = self.D[r].clone()
        self.D[r] = new
        self.D[:, r] = new
        # incremental row minima: rows whose minimum was at column r need a full recompute
        affected = old <= self.row_min
        self.row_min = torch.minimum(self.row_min, new)
        affected[r] = True
        idx = torch.nonzero(affected)[:, 0]
        self.row_min[idx] = self.D[idx].min(1).values


def sequential_coreset(points: torch.Tensor, size: int, chunk_size: int = 4096) -> torch.Tensor:
    cs = SequentialCoreset(size, points.shape[1], chunk_size, points.device, points.dtype)
    cs.update(points)
    return cs.points.clone()


def meld(coresets: list[torch.Tensor], size: int, chunk_size: int = 4096,
         epochs: int = 1) -> torch.Tensor:
    """Meld coresets into one of ``size`` points with the same rule, in the given order
    (no feature extraction). ``epochs`` > 1 passes over the union again until nothing
    changes."""
    dim = coresets[0].shape[1]
    cs = SequentialCoreset(size, dim, chunk_size, coresets[0].device, coresets[0].dtype)
    for e in range(epochs):
        cs.reset_changes()
        for c in coresets:
            cs.update(c)
        if e > 0 and cs.changes == 0:
            break
    return cs.points.clone()


@torch.no_grad()
def greedy_kcenter(x: torch.Tensor, n: int, proj_dim: int | None = 128, seed: int = 0,
                   chunk_size: int = 65536) -> torch.Tensor:
    """Indices of the original PatchCore's greedy (k-center) coreset of ``n`` points.

    As in PatchCore, distances are computed on a Johnson-Lindenstrauss random projection
    (``proj_dim``; None = exact) and the first center is drawn at random."""
    N = len(x)
    n = min(int(n), N)
    g = torch.Generator().manual_seed(seed)
    z = x
    if proj_dim and proj_dim < x.shape[1]:
        P = torch.randn(x.shape[1], proj_dim, generator=g).to(x) / proj_dim ** 0.5
        z = x @ P
    sel = torch.empty(n, dtype=torch.long)
    sel[0] = int(torch.randint(N, (1,), generator=g))
    mind = torch.empty(N, dtype=z.dtype, device=z.device)
    zz = (z * z).sum(1)
    for s in range(0, N, chunk_size):  # chunked to keep the temporary small
        mind[s: s + chunk_size] = pairwise_dist(z[s: s + chunk_size], z[sel[0]: sel[0] + 1])[:, 0]
    for k in range(1, n):
        i = int(torch.argmax(mind))
        sel[k] = i
        d2 = (zz - 2.0 * (z @ z[i]) + zz[i]).clamp_min_(0).sqrt_()
        torch.minimum(mind, d2, out=mind)
    return sel
