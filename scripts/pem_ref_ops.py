#!/usr/bin/env python3
"""Plain PyTorch (CPU) stand-ins for the CUDA-only pointnet2 operations of SAM-6D's PEM.

The reference PEM imports `pointnet2_utils`, which needs the compiled CUDA extension
`pointnet2._ext`. Fixture generators run the reference code on CPU, so this module provides
the same operations with the same semantics (sam6d-pipeline.md §5.11) and can register them as
a fake `pointnet2._ext` module:

    import pem_ref_ops
    pem_ref_ops.install(PEM_DIR)        # PEM_DIR = .../SAM-6D/Pose_Estimation_Model
    import pointnet2_utils, model_utils # reference modules, now importable on CPU

Semantics reproduced from the kernels (model/pointnet2/_ext_src/src/*.cu):
- furthest_point_sampling: first index 0; per point the min squared distance to the chosen
  set, initialised to 1e10 (float32), distance computed as ((dx*dx + dy*dy) + dz*dz) in
  float32; next index = argmax. Ties are broken as the kernel does: it runs T threads
  (T = largest power of two <= N, at most 512), thread t scans k = t, t+T, ... and keeps its
  *first* maximum (strict >); the shared-memory tree reduction (slot i vs slot i+s, s = T/2 ..
  1) keeps the lower slot unless the upper one is strictly larger. Among tied threads the
  winner is therefore the one whose log2(T)-bit id has the smallest bit-reversed value.
  (The real kernel may contract the distance into FMAs; that changes only last-bit rounding,
  so results can differ from this emulation only on near-ties, never on exact duplicates.)
- gather_points: out[b,c,m] = in[b,c,idx[b,m]].
- ball_query: per centre, scan points in index order, keep those with d2 < r*r (strict, both
  float32) until nsample are found; unfilled slots repeat the first hit; all zeros if none.
- group_points: out[b,c,m,s] = in[b,c,idx[b,m,s]].
- three_nn / three_interpolate (not used by the PEM at inference) are provided for
  completeness with plain semantics: squared distances of the 3 nearest, first-min order.
"""
import math
import os
import sys
import types

import torch

TOTAL_THREADS = 512


def opt_n_threads(work_size):
    """Thread count the pointnet2 kernels launch for `work_size` items (cuda_utils.h)."""
    pow_2 = int(math.log(float(work_size)) / math.log(2.0))
    return max(min(1 << pow_2, TOTAL_THREADS), 1)


def _bit_reverse(t, bits):
    r = 0
    for _ in range(bits):
        r = (r << 1) | (t & 1)
        t >>= 1
    return r


def _sq_dist(pts, p):
    """((dx*dx + dy*dy) + dz*dz) in float32, as the kernels' expression (no reordering)."""
    dx = pts[..., 0] - p[..., 0:1]
    dy = pts[..., 1] - p[..., 1:2]
    dz = pts[..., 2] - p[..., 2:3]
    return (dx * dx + dy * dy) + dz * dz


def furthest_point_sampling(xyz, npoint):
    """xyz (B,N,3) float32 -> (B,npoint) int32, with the CUDA kernel's start and tie rules."""
    xyz = xyz.detach().to(torch.float32).cpu().contiguous()
    B, N, _ = xyz.shape
    out = torch.zeros(B, npoint, dtype=torch.int32)
    if npoint <= 0 or N == 0:
        return out
    T = opt_n_threads(N)
    bits = int(round(math.log2(T)))
    # rank of each thread in the reduction's preference order (smaller wins among ties)
    pref = torch.tensor([_bit_reverse(t, bits) for t in range(T)], dtype=torch.int64)
    rows = (N + T - 1) // T
    pad = rows * T - N
    k_index = torch.arange(rows * T, dtype=torch.int64).reshape(rows, T)
    temp = torch.full((B, N), 1e10, dtype=torch.float32)
    old = torch.zeros(B, dtype=torch.int64)
    barange = torch.arange(B)
    for j in range(1, npoint):
        p = xyz[barange, old]  # (B,3)
        d = _sq_dist(xyz, p)
        temp = torch.minimum(d, temp)
        # per-thread scan: thread t owns column t of the (rows, T) layout; padding never wins
        vals = torch.cat([temp, torch.full((B, pad), -1.0)], dim=1).reshape(B, rows, T)
        best = vals.max(dim=1).values  # (B,T)
        is_best = vals == best.unsqueeze(1)
        # first (smallest row) maximum of each thread
        first_row = torch.where(is_best, torch.arange(rows).reshape(1, rows, 1),
                                torch.full((1, 1, 1), rows)).min(dim=1).values  # (B,T)
        besti = k_index[first_row.clamp(max=rows - 1), torch.arange(T).reshape(1, T)]
        # block reduction: among threads holding the global max, smallest bit-reversed id
        g = best.max(dim=1, keepdim=True).values
        key = torch.where(best == g, pref.unsqueeze(0), torch.full((1, 1), 1 << 30))
        winner = key.argmin(dim=1)
        old = besti[barange, winner]
        out[:, j] = old.to(torch.int32)
    return out


def gather_points(features, idx):
    """features (B,C,N), idx (B,M) -> (B,C,M)."""
    idx = idx.long()
    B, C, _ = features.shape
    return torch.gather(features, 2, idx.unsqueeze(1).expand(B, C, idx.shape[1])).contiguous()


def group_points(features, idx):
    """features (B,C,N), idx (B,M,S) -> (B,C,M,S)."""
    idx = idx.long()
    B, C, _ = features.shape
    _, M, S = idx.shape
    flat = idx.reshape(B, 1, M * S).expand(B, C, M * S)
    return torch.gather(features, 2, flat).reshape(B, C, M, S).contiguous()


def ball_query(new_xyz, xyz, radius, nsample):
    """Argument order of `_ext.ball_query`: centres (B,M,3), points (B,N,3) -> (B,M,nsample) int32."""
    new_xyz = new_xyz.detach().to(torch.float32).cpu()
    xyz = xyz.detach().to(torch.float32).cpu()
    B, M, _ = new_xyz.shape
    N = xyz.shape[1]
    r = torch.tensor(radius, dtype=torch.float32)
    r2 = r * r
    out = torch.zeros(B, M, nsample, dtype=torch.int32)
    if N == 0 or nsample <= 0:
        return out
    ar = torch.arange(N, dtype=torch.int64)
    chunk = 512
    for m0 in range(0, M, chunk):
        c = new_xyz[:, m0:m0 + chunk]  # (B,m,3)
        dx = c[..., 0:1] - xyz[..., 0].unsqueeze(1)
        dy = c[..., 1:2] - xyz[..., 1].unsqueeze(1)
        dz = c[..., 2:3] - xyz[..., 2].unsqueeze(1)
        d2 = (dx * dx + dy * dy) + dz * dz  # (B,m,N)
        hit = d2 < r2
        key = torch.where(hit, ar, torch.full((1,), N, dtype=torch.int64))
        k = min(nsample, N)
        first = torch.topk(key, k, dim=2, largest=False, sorted=True).values  # ascending
        if k < nsample:
            first = torch.cat([first, torch.full(first.shape[:2] + (nsample - k,), N)], dim=2)
        found = first < N
        first_hit = torch.where(found[..., :1], first[..., :1], torch.zeros_like(first[..., :1]))
        res = torch.where(found, first, first_hit.expand_as(first))
        out[:, m0:m0 + chunk] = res.to(torch.int32)
    return out


def three_nn(unknown, known):
    """(B,n,3), (B,m,3) -> squared distances (B,n,3) and indices (B,n,3) int32 of the 3 nearest."""
    d = torch.cdist(unknown.double(), known.double()) ** 2
    dist2, idx = torch.topk(d, 3, dim=2, largest=False, sorted=True)
    return dist2.float(), idx.int()


def three_interpolate(features, idx, weight):
    """features (B,c,m), idx (B,n,3), weight (B,n,3) -> (B,c,n)."""
    g = group_points(features, idx)  # (B,c,n,3)
    return (g * weight.unsqueeze(1)).sum(-1)


def make_ext_module():
    ext = types.ModuleType("pointnet2._ext")
    ext.furthest_point_sampling = furthest_point_sampling
    ext.gather_points = gather_points
    ext.group_points = group_points
    ext.ball_query = ball_query
    ext.three_nn = three_nn
    ext.three_interpolate = three_interpolate
    return ext


def install(pem_dir=None):
    """Register the CPU ops as `pointnet2._ext`; with `pem_dir` (the reference's
    Pose_Estimation_Model folder) also put its model/, utils/, provider/ and model/pointnet2/
    folders on sys.path as run_inference_custom.py does. Returns the `pointnet2_utils` module
    when pem_dir is given."""
    pkg = sys.modules.get("pointnet2")
    if pkg is None:
        pkg = types.ModuleType("pointnet2")
        pkg.__path__ = []
        sys.modules["pointnet2"] = pkg
    ext = make_ext_module()
    sys.modules["pointnet2._ext"] = ext
    pkg._ext = ext
    try:  # pytorch_utils imports scipy.stats.t at import time only (never used at inference)
        import scipy.stats  # noqa: F401
    except ImportError:
        scipy = types.ModuleType("scipy")
        stats = types.ModuleType("scipy.stats")
        stats.t = None
        scipy.stats = stats
        sys.modules["scipy"] = scipy
        sys.modules["scipy.stats"] = stats
    if pem_dir is None:
        return None
    for sub in ("provider", "utils", "model", os.path.join("model", "pointnet2")):
        path = os.path.join(pem_dir, sub)
        if path not in sys.path:
            sys.path.append(path)
    import pointnet2_utils
    return pointnet2_utils


if __name__ == "__main__":
    # Self-check: ties with duplicated points and the block-size rule.
    torch.manual_seed(0)
    base = torch.rand(2, 300, 3)
    xyz = torch.cat([base, base, base[:, :100]], dim=1)  # 700 points, every point duplicated
    idx = furthest_point_sampling(xyz, 64)
    print("fps (N=700)", idx[0, :16].tolist())
    small = torch.cat([base[:, :50], base[:, :50]], dim=1)  # N = 100 -> 64 threads
    print("fps (N=100)", furthest_point_sampling(small, 16)[0].tolist())
    bq = ball_query(xyz[:, :8], xyz, 0.2, 8)
    print("ball_query", bq[0, 0].tolist())
