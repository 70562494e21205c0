#!/usr/bin/env python3
"""End-to-end parity fixture for the whole PEM: SAM-6D's own `Net` at random weights, reduced sizes.

Usage: gen_pem_fixtures_e2e.py SAM6D_DIR OUT_DIR

SAM6D_DIR is a bare git mirror of SAM-6D (its Pose_Estimation_Model folder is extracted at HEAD
with `git archive`, the commit recorded) or a source tree, as for gen_pem_fixtures_net.py, e.g.
    python scripts/gen_pem_fixtures_e2e.py /work/.mirror/JiehongLin+SAM-6D/repo testdata/pem-fixtures

The reference `pose_estimation_model.Net` is built from base.yaml's `model` section with the
widths shrunk (the ViT keeps its hard-coded 12 blocks / 12 heads at width 24; feature width 16,
token width 32, similarity width 24, 3 blocks per stage) and the point counts reduced
(`fine_npoint` 256, `coarse_npoint` 32, `nproposal1` 200, `nproposal2` 20), in eval mode. Its
CUDA pointnet2 ops are replaced by scripts/pem_ref_ops.py; the stubs, the weight perturbation
(non-trivial biases, norms' affine parameters and BatchNorm running statistics) and the float16
rounding of every weight are gen_pem_fixtures_net.py's (imported from it). Needs `timm==0.9.16`
and `einops` in the venv.

The batch (B = 2, two different objects and poses): an image of 8-bit levels at 56×56, enlarged
4× by repetition (nearest) to 224×224 and mapped to (x − 128)/64 (stored at 56×56: the test
enlarges it the same way); observed points = a visible half of the object's surface drawn with
replacement (exact duplicates, so FPS meets exact ties), with millimetre noise, rigidly moved
~0.6 m in front of the camera, and a few outliers; template points = 256 distinct surface points (model
frame, metres) with random features; 128 CAD points. Points are float32 values, template
features float16 values.

`torch.manual_seed(1)` (as the reference's `rd_seed`) before the forward; `torch.rand` is
wrapped to record the hypothesis uniforms `compute_coarse_Rt` draws, so the test injects them.
Recorded per stage: the dense observed features and the radius (feature extraction), the FPS
indices (`sample_pts_feats`), the last block's similarity of each stage
(`compute_feature_similarity`), init_R / init_t, pred_R / pred_t / pred_pose_score.

Output: OUT_DIR/e2e_pem.safetensors (names: official checkpoint names for the weights,
`input.*`, `output.*`) and this script's line in OUT_DIR/README.md. Test: cli-tests/pem_e2e.rs.
"""
import os
import sys
from types import SimpleNamespace

import torch

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, SCRIPTS)
import gen_pem_fixtures_net as netgen  # noqa: E402
from sam6d_reference import command_line, random_rotation, write_readme_line  # noqa: E402

# Reduced sizes (the test builds PemConfig from the same numbers).
FE_EMBED, FE_OUT = 24, 16
HIDDEN, SIM_OUT, NBLOCK = 32, 24, 3
FINE_NPOINT, COARSE_NPOINT = 256, 32
NPROPOSAL1, NPROPOSAL2 = 200, 20
N_MODEL = 128
B = 2


def reduced_cfg():
    ns = SimpleNamespace
    return ns(
        coarse_npoint=COARSE_NPOINT,
        fine_npoint=FINE_NPOINT,
        feature_extraction=ns(vit_type="vit_base", up_type="linear", embed_dim=FE_EMBED, out_dim=FE_OUT, use_pyramid_feat=True, pretrained=False),
        geo_embedding=ns(sigma_d=0.2, sigma_a=15, angle_k=3, reduction_a="max", hidden_dim=HIDDEN),
        coarse_point_matching=ns(
            nblock=NBLOCK, input_dim=FE_OUT, hidden_dim=HIDDEN, out_dim=SIM_OUT, temp=0.1, sim_type="cosine",
            normalize_feat=True, loss_dis_thres=0.15, nproposal1=NPROPOSAL1, nproposal2=NPROPOSAL2,
        ),
        fine_point_matching=ns(
            nblock=NBLOCK, input_dim=FE_OUT, hidden_dim=HIDDEN, out_dim=SIM_OUT, pe_radius1=0.1, pe_radius2=0.2,
            focusing_factor=3, temp=0.1, sim_type="cosine", normalize_feat=True, loss_dis_thres=0.15,
        ),
    )


# --------------------------------------------------------------------------------------------
def surface(gen, n, axes):
    """n points on an ellipsoid with semi-axes `axes` (metres), model frame."""
    d = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    return d / d.norm(dim=1, keepdim=True) * torch.tensor(axes, dtype=torch.float64)


def one_instance(gen, axes, t):
    model = surface(gen, N_MODEL, axes)
    dense_po = surface(gen, FINE_NPOINT, axes)
    # Observed: the half facing the camera (model −z after rotation ≈ toward the camera), 180
    # distinct surface points (with noise) drawn with replacement to 256 (duplicates: FPS ties),
    # and 6 outliers.
    R = random_rotation(gen, torch.float64)
    visible = surface(gen, 600, axes)
    cam = visible @ R.T
    visible = visible[cam[:, 2] < 0][:180]
    # Noise before the draw: repeated draws are exact duplicates, as repeated depth pixels are.
    visible = visible + torch.randn(visible.shape, generator=gen, dtype=torch.float64) * 0.001
    draw = torch.randint(0, visible.shape[0], (FINE_NPOINT,), generator=gen)
    obs = visible[draw] @ R.T + torch.tensor(t, dtype=torch.float64)
    out_idx = torch.randperm(FINE_NPOINT, generator=gen)[:6]
    obs[out_idx] += torch.randn(6, 3, generator=gen, dtype=torch.float64) * 0.05
    return obs.float(), dense_po.float(), model.float()


def make_batch(gen):
    insts = [one_instance(gen, (0.06, 0.04, 0.03), (0.02, -0.01, 0.6)), one_instance(gen, (0.05, 0.05, 0.02), (-0.03, 0.02, 0.75))]
    pts, dense_po, model = (torch.stack(x) for x in zip(*insts))
    img56 = torch.randint(0, 256, (B, 3, 56, 56), generator=gen).to(torch.uint8)
    rgb = (img56.float().repeat_interleave(4, dim=2).repeat_interleave(4, dim=3) - 128.0) / 64.0
    rgb_choose = torch.randint(0, 224 * 224, (B, FINE_NPOINT), generator=gen)
    dense_fo = netgen.q16(torch.randn(B, FINE_NPOINT, FE_OUT, generator=gen))
    end_points = {"pts": pts, "rgb": rgb, "rgb_choose": rgb_choose, "model": model, "dense_po": dense_po, "dense_fo": dense_fo}
    stored = {
        "input.rgb56_u8": img56, "input.pts": pts, "input.rgb_choose": rgb_choose, "input.model": model,
        "input.dense_po": dense_po, "input.dense_fo": dense_fo.half(),
    }
    return end_points, stored


# --------------------------------------------------------------------------------------------
def run_reference(ref_modules, net, end_points):
    """Net.forward with recorders around the functions whose results the test compares."""
    pem_mod, cpm_mod, fpm_mod = ref_modules
    rec = {"fps": [], "sim": [], "rand": []}

    orig_sample = pem_mod.sample_pts_feats

    def sample(*a, **k):
        out = orig_sample(*a, **k)
        rec["fps"].append(out[2].clone())
        return out

    def sim_recorder(orig, key):
        def f(*a, **k):
            out = orig(*a, **k)
            rec[key] = out.clone()
            return out
        return f

    orig_rand = torch.rand

    def rand(*a, **k):
        out = orig_rand(*a, **k)
        rec["rand"].append(out.clone())
        return out

    feats = {}
    hook = net.feature_extraction.register_forward_hook(lambda m, i, o: feats.update(dense_fm=o[1].clone(), radius=o[4].clone()))
    orig_cpm_sim, orig_fpm_sim = cpm_mod.compute_feature_similarity, fpm_mod.compute_feature_similarity
    pem_mod.sample_pts_feats = sample
    cpm_mod.compute_feature_similarity = sim_recorder(orig_cpm_sim, "coarse_sim")
    fpm_mod.compute_feature_similarity = sim_recorder(orig_fpm_sim, "fine_sim")
    torch.rand = rand
    try:
        torch.manual_seed(1)
        with torch.no_grad():
            out = net(dict(end_points))
    finally:
        torch.rand = orig_rand
        pem_mod.sample_pts_feats = orig_sample
        cpm_mod.compute_feature_similarity, fpm_mod.compute_feature_similarity = orig_cpm_sim, orig_fpm_sim
        hook.remove()
    assert len(rec["fps"]) == 2 and len(rec["rand"]) == 1, (len(rec["fps"]), len(rec["rand"]))
    assert rec["rand"][0].shape == (B, NPROPOSAL1 * 3)
    return {
        "input.uniforms": rec["rand"][0].float(),
        "output.dense_fm": feats["dense_fm"].float(),
        "output.radius": feats["radius"].float(),
        "output.fps_idx_m": rec["fps"][0].to(torch.int64),
        "output.fps_idx_o": rec["fps"][1].to(torch.int64),
        "output.coarse_similarity": rec["coarse_sim"].float(),
        "output.init_R": out["init_R"].float(),
        "output.init_t": out["init_t"].float(),
        "output.fine_similarity": rec["fine_sim"].float(),
        "output.pred_R": out["pred_R"].float(),
        "output.pred_t": out["pred_t"].float(),
        "output.pred_pose_score": out["pred_pose_score"].float(),
    }


def margins(outputs):
    """How far the discrete choices are from flipping (printed: a fixture on a knife edge would
    make the test flaky against legitimate float differences)."""
    for key in ("coarse_similarity", "fine_similarity"):
        a = outputs["output." + key].double()
        s = torch.softmax(a, 2) * torch.softmax(a, 1)
        top = s[:, 1:, :].topk(2, dim=2).values
        gap = (top[..., 0] - top[..., 1]) / top[..., 0]
        print(f"{key}: smallest relative gap between a row's best and second-best assignment {gap.min().item():.2e}")


def main():
    sam6d_dir, out_dir = command_line(__doc__)
    ref = netgen.load_reference(sam6d_dir)
    import coarse_point_matching
    import fine_point_matching
    import pose_estimation_model

    torch.manual_seed(300)  # module initialisation
    net = pose_estimation_model.Net(reduced_cfg()).eval()
    netgen.perturb_and_round(net, torch.Generator().manual_seed(301))
    end_points, stored = make_batch(torch.Generator().manual_seed(302))
    outputs = run_reference((pose_estimation_model, coarse_point_matching, fine_point_matching), net, end_points)
    margins(outputs)
    print("radius", outputs["output.radius"].tolist(), "pose score", outputs["output.pred_pose_score"].tolist())
    print("pred_t", outputs["output.pred_t"].tolist())

    tensors = netgen.state(net, "")
    tensors.update(stored)
    tensors.update(outputs)
    netgen.save(os.path.join(out_dir, "e2e_pem.safetensors"), tensors)
    import timm  # only now: timm imports torchvision, which load_reference stood in for

    write_readme_line(
        out_dir,
        "`e2e_pem.safetensors`",
        f"the whole PEM (`pose_estimation_model.Net`) at reduced sizes, random weights, "
        f"B = 2 synthetic detections, per-stage outputs and the recorded hypothesis uniforms; "
        f"`python scripts/gen_pem_fixtures_e2e.py /work/.mirror/JiehongLin+SAM-6D/repo testdata/pem-fixtures` from SAM-6D "
        f"{ref.commit}, torch {torch.__version__}, timm {timm.__version__}, CPU ops of scripts/pem_ref_ops.py; tests: cli-tests/pem_e2e.rs.",
    )


if __name__ == "__main__":
    main()
