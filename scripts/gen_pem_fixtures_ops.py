#!/usr/bin/env python3
"""Parity fixtures for the PEM's point operations and pose solver, made by SAM-6D's own code.

Usage: gen_pem_fixtures_ops.py SAM6D_DIR OUT_DIR

SAM6D_DIR is a bare git mirror of SAM-6D (its Pose_Estimation_Model folder is extracted at HEAD
with `git archive` and the commit recorded), e.g.
    python scripts/gen_pem_fixtures_ops.py /work/.mirror/JiehongLin+SAM-6D/repo testdata/pem-fixtures
or a SAM-6D source tree (its root or its Pose_Estimation_Model folder; set SAM6D_COMMIT to record
which commit it is).

The reference's CUDA pointnet2 ops are replaced by the CPU versions of scripts/pem_ref_ops.py
(installed as `pointnet2._ext`); the reference modules `pointnet2_utils` (QueryAndGroup,
furthest_point_sample, gather_operation) and `model_utils` (sample_pts_feats,
weighted_procrustes, compute_coarse_Rt, compute_fine_Rt) are imported and called, never
copied. Before writing, the FPS replacement is checked against a literal re-enactment of the
CUDA kernel (threads scanning strided points, then the shared-memory tree reduction) on inputs
full of ties, and the ball query against a literal per-centre scan.

Outputs (OUT_DIR), all inputs and outputs of the calls, B = 2:
- ops_fps.npz: FPS + gather via `sample_pts_feats` on point sets with duplicated points and
  grid coordinates (many exact ties) at N = 700 (512 threads), 300 (256) and 100 (64); and
  the indices of FPS 210 000 -> 2048 on a generated cloud (`big_cloud` below, rebuilt by the
  test from integers so the 2.5 MB cloud is not stored).
- ops_ball.npz: `QueryAndGroup` (ball query + grouping, use_xyz, features = the points) at the
  positional encoding's radii/sizes 0.1/32 and 0.2/64 on 600 points with duplicates (indices
  for all 600 centres, grouped features for the first 40).
- ops_solver.npz: `weighted_procrustes` (thresholds 0 and 0.5), `compute_coarse_Rt` at the
  real sizes (197x197 similarity, 6000 hypotheses, top 300, 1024 CAD points) with the
  `torch.rand` uniforms it drew after `torch.manual_seed(1)`, and `compute_fine_Rt` on a
  129x129 similarity. Similarities are stored as float16 and the reference ran on exactly
  those values (as float32).
"""
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pem_ref_ops  # noqa: E402
from sam6d_reference import checkout, command_line, random_rotation  # noqa: E402


# --------------------------------------------------------------------------------------------
# Literal re-enactments of the CUDA kernels (slow; used on small inputs to check pem_ref_ops).
def fps_kernel(xyz, m):
    xyz = xyz.numpy().astype(np.float32)
    B, N, _ = xyz.shape
    T = pem_ref_ops.opt_n_threads(N)
    out = np.zeros((B, m), np.int64)
    for b in range(B):
        temp = np.full(N, 1e10, np.float32)
        old = 0
        for j in range(1, m):
            x1, y1, z1 = xyz[b, old]
            dists = np.zeros(T, np.float32)
            di = np.zeros(T, np.int64)
            for t in range(T):
                best, besti = np.float32(-1), 0
                for k in range(t, N, T):
                    x2, y2, z2 = xyz[b, k]
                    d = np.float32(np.float32((x2 - x1) * (x2 - x1)) + np.float32((y2 - y1) * (y2 - y1)))
                    d = np.float32(d + np.float32((z2 - z1) * (z2 - z1)))
                    d2 = min(d, temp[k])
                    temp[k] = d2
                    if d2 > best:
                        best, besti = d2, k
                dists[t], di[t] = best, besti
            s = T // 2
            while s >= 1:
                for t in range(s):
                    v1, v2 = dists[t], dists[t + s]
                    di[t] = di[t + s] if v2 > v1 else di[t]
                    dists[t] = max(v1, v2)
                s //= 2
            old = di[0]
            out[b, j] = old
    return out


def ball_kernel(xyz, centres, radius, nsample):
    xyz = xyz.numpy().astype(np.float32)
    centres = centres.numpy().astype(np.float32)
    r2 = np.float32(radius) * np.float32(radius)
    B, M, _ = centres.shape
    out = np.zeros((B, M, nsample), np.int64)
    for b in range(B):
        for j in range(M):
            c = centres[b, j]
            d = xyz[b] - c
            d2 = (d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]) + d[:, 2] * d[:, 2]
            hits = np.nonzero(d2 < r2)[0][:nsample]
            if len(hits):
                out[b, j, :] = hits[0]
                out[b, j, : len(hits)] = hits
    return out


# --------------------------------------------------------------------------------------------
def tied_cloud(gen, B, N, levels=5, scale=0.25):
    """Grid coordinates (many equal distances) drawn with replacement (duplicated points)."""
    base = torch.randint(0, levels, (B, N // 2 + 1, 3), generator=gen).float() * scale
    pick = torch.randint(0, N // 2 + 1, (B, N), generator=gen)
    return torch.gather(base, 1, pick.unsqueeze(2).expand(B, N, 3)).contiguous()


BIG_N, BIG_NPOINT = 210_000, 2048


def big_cloud():
    """The 210 000-point cloud of the big FPS case, from integers only (the Rust test rebuilds
    it bit for bit): point i repeats grid cell j = (i * 2654435761) mod 65521, coordinates
    (j mod 41, (j div 41) mod 41, j div 1681) / 32 (exact in float32)."""
    i = np.arange(BIG_N, dtype=np.int64)
    j = (i * 2654435761) % 65521
    xyz = np.stack([j % 41, (j // 41) % 41, j // 1681], axis=1).astype(np.float32) / np.float32(32)
    return torch.from_numpy(xyz).unsqueeze(0)


def fps_fixture(model_utils, out):
    gen = torch.Generator().manual_seed(81)
    arrays = {}
    for name, n, m, c in [("a", 700, 64, 5), ("b", 300, 48, 4), ("c", 100, 40, 2)]:
        xyz = tied_cloud(gen, 2, n)
        feats = torch.randn(2, n, c, generator=gen)
        pts, f, idx = model_utils.sample_pts_feats(xyz, feats, m, return_index=True)
        lit = fps_kernel(xyz, m)
        assert (idx.long().numpy() == lit).all(), f"FPS replacement differs from the kernel ({name})"
        arrays.update({f"{name}_xyz": xyz.numpy(), f"{name}_feats": feats.numpy(), f"{name}_idx": idx.numpy(), f"{name}_pts": pts.numpy(), f"{name}_sampled_feats": f.numpy()})
    xyz = big_cloud()
    idx = model_utils.furthest_point_sample(xyz, BIG_NPOINT)
    arrays["big_idx"] = idx.numpy()
    arrays["big_n"] = np.array(BIG_N)
    np.savez_compressed(os.path.join(out, "ops_fps.npz"), **arrays)


GROUP_CENTRES = 40


def ball_fixture(pointnet2_utils, out):
    gen = torch.Generator().manual_seed(82)
    base = torch.rand(2, 400, 3, generator=gen) * 0.8 - 0.4
    pick = torch.randint(0, 400, (2, 600), generator=gen)
    xyz = torch.gather(base, 1, pick.unsqueeze(2).expand(2, 600, 3)).contiguous()
    arrays = {"xyz": xyz.numpy()}
    for tag, r, ns in [("r1", 0.1, 32), ("r2", 0.2, 64)]:
        idx = pointnet2_utils.ball_query(r, ns, xyz, xyz)
        assert (idx.long().numpy() == ball_kernel(xyz, xyz, r, ns)).all(), f"ball query replacement differs ({tag})"
        grouper = pointnet2_utils.QueryAndGroup(r, ns, use_xyz=True)
        # (B,6,M,ns) as the PE builds it; stored for the first GROUP_CENTRES centres (size)
        grouped = grouper(xyz, xyz[:, :GROUP_CENTRES].contiguous(), xyz.transpose(1, 2).contiguous())
        arrays.update({f"{tag}_radius": np.array(r), f"{tag}_nsample": np.array(ns), f"{tag}_idx": idx.numpy(), f"{tag}_grouped": grouped.numpy()})
    np.savez_compressed(os.path.join(out, "ops_ball.npz"), **arrays)


def matching_case(gen, B, n, n_model):
    """Template points, observed = R·template + t + noise (shuffled), a similarity that is high
    on true pairs (plus noise and some background rows), and CAD points near the template."""
    pts2, pts1, atten, model = [], [], [], []
    for _ in range(B):
        tmpl = torch.rand(n, 3, generator=gen) - 0.5
        R = random_rotation(gen, torch.float32)
        t = torch.rand(3, generator=gen) * 2 - 1
        perm = torch.randperm(n, generator=gen)
        obs = tmpl[perm] @ R.T + t + 0.01 * torch.randn(n, 3, generator=gen)
        a = torch.randn(n + 1, n + 1, generator=gen) * 2.0
        a[1 + torch.arange(n), 1 + perm] += 9.0  # observed i <-> template perm[i]
        bg_rows = torch.randperm(n, generator=gen)[: n // 8] + 1
        a[bg_rows, 0] += 14.0  # some observed points matched to the background
        a = a.clamp(-10, 10)
        cad = torch.cat([tmpl, torch.rand(n_model - n, 3, generator=gen) - 0.5]) if n_model >= n else tmpl[:n_model]
        pts2.append(tmpl)
        pts1.append(obs)
        atten.append(a)
        model.append(cad)
    atten16 = torch.stack(atten).half()
    return atten16, torch.stack(pts1).contiguous(), torch.stack(pts2).contiguous(), torch.stack(model).contiguous()


def solver_fixture(model_utils, out):
    gen = torch.Generator().manual_seed(83)
    arrays = {}

    src = torch.randn(2, 50, 3, generator=gen)
    R = torch.stack([random_rotation(gen, torch.float32), random_rotation(gen, torch.float32)])
    ref = src @ R.transpose(1, 2) + torch.randn(2, 1, 3, generator=gen) + 0.05 * torch.randn(2, 50, 3, generator=gen)
    w = torch.rand(2, 50, generator=gen)
    w[:, :5] = 0.0
    arrays.update({"proc_src": src.numpy(), "proc_ref": ref.numpy(), "proc_w": w.numpy()})
    for tag, thr in [("t0", 0.0), ("t5", 0.5)]:
        r, t = model_utils.weighted_procrustes(src, ref, w, weight_thresh=thr, eps=1e-5)
        arrays.update({f"proc_{tag}_R": r.numpy(), f"proc_{tag}_t": t.numpy()})

    # coarse stage at the real sizes
    atten16, pts1, pts2, model = matching_case(gen, 2, 196, 1024)
    drawn = []
    real_rand = torch.rand

    def recording_rand(*args, **kwargs):
        x = real_rand(*args, **kwargs)
        drawn.append(x.clone())
        return x

    torch.manual_seed(1)
    torch.rand = recording_rand
    try:
        init_R, init_t = model_utils.compute_coarse_Rt(atten16.float(), pts1, pts2, model, 6000, 300)
    finally:
        torch.rand = real_rand
    assert len(drawn) == 1 and tuple(drawn[0].shape) == (2, 18000)
    arrays.update({"coarse_atten_f16": atten16.numpy(), "coarse_pts1": pts1.numpy(), "coarse_pts2": pts2.numpy(), "coarse_model": model.numpy(),
                   "coarse_uniforms": drawn[0].numpy(), "coarse_R": init_R.numpy(), "coarse_t": init_t.numpy()})

    # fine stage (reduced size: the real one is 2049x2049)
    atten16, pts1, pts2, model = matching_case(gen, 2, 128, 256)
    R, t, score = model_utils.compute_fine_Rt(atten16.float(), pts1, pts2, model)
    arrays.update({"fine_atten_f16": atten16.numpy(), "fine_pts1": pts1.numpy(), "fine_pts2": pts2.numpy(), "fine_model": model.numpy(),
                   "fine_R": R.numpy(), "fine_t": t.numpy(), "fine_score": score.numpy()})
    np.savez_compressed(os.path.join(out, "ops_solver.npz"), **arrays)


def main():
    sam6d_dir, out = command_line(__doc__)
    pem_dir, commit = checkout(sam6d_dir, "Pose_Estimation_Model")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    pointnet2_utils = pem_ref_ops.install(pem_dir)
    import model_utils

    fps_fixture(model_utils, out)
    ball_fixture(pointnet2_utils, out)
    solver_fixture(model_utils, out)
    print(f"ops_fps.npz, ops_ball.npz, ops_solver.npz from SAM-6D {commit}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
