#!/usr/bin/env python3
"""Parity fixtures for the PEM's inputs, made by SAM-6D's own code.

Usage: gen_pem_fixtures_model.py SAM6D_DIR OUT_DIR [inputs]

SAM6D_DIR: a bare git mirror of SAM-6D (its Pose_Estimation_Model folder is extracted at HEAD
with `git archive`) or a source tree (root or Pose_Estimation_Model; set SAM6D_COMMIT to record
which commit it is). E.g.
    python scripts/gen_pem_fixtures_model.py /work/.mirror/JiehongLin+SAM-6D/repo testdata/pem-fixtures

The reference functions are imported and called, never copied:
- inputs: `get_bbox` (utils/data_utils.py), `_get_template` and `get_test_data`
  (run_inference_custom.py) on small synthetic templates and a synthetic RGB-D frame, with
  `np.random.choice` wrapped so its draws are recorded (the Rust test replays them), and
  `cv2.resize` (opencv-python-headless, pinned below) on a few extra sizes.
  Packages those modules import but these functions do not need (gorilla, pycocotools,
  trimesh, imageio, torchvision) are replaced by small stand-ins: torchvision's ToTensor and
  Normalize (scripts/sam6d_reference.py) compute what torchvision computes (float32 x/255,
  then (x - mean)/std), the RLE decoder reads uncompressed COCO RLE (column-major), trimesh's
  sampler returns fixed points.

The network image (3,224,224) float32 is stored as the uint8 BGR image it was normalised from:
the script checks that normalising it reproduces the reference tensor bit for bit.

Needs: torch, numpy, opencv-python-headless==4.10.0.84 (pip install into the venv).
Output: OUT_DIR/model_inputs.npz; cli-tests/pem_model.rs reads it.
"""
import importlib.util
import json
import os
import sys
import tempfile
from types import SimpleNamespace

import cv2
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sam6d_reference import checkout, install_transforms, missing, module  # noqa: E402

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def install_stubs():
    """Stand-ins for the packages the imported PEM modules need but these functions do not."""
    install_transforms()  # rgb_transform (ToTensor, Normalize) is used
    if missing("gorilla"):
        module("gorilla")
    if missing("imageio"):
        from PIL import Image

        module("imageio", imread=lambda p: np.array(Image.open(p)))
    if missing("pycocotools"):

        def decode(rle):
            h, w = rle["size"]
            flat = np.zeros(h * w, dtype=np.uint8)
            pos, val = 0, 0
            for c in rle["counts"]:
                flat[pos : pos + c] = val
                pos, val = pos + c, 1 - val
            return flat.reshape((w, h)).T.copy()  # column-major

        module("pycocotools")
        module("pycocotools.mask", frPyObjects=lambda seg, h, w: seg, decode=decode)
    if missing("trimesh"):
        module("trimesh", load_mesh=None)


def import_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


class Recorder:
    """Wraps np.random.choice, keeping every draw."""

    def __init__(self):
        self.draws = []
        self.orig = np.random.choice

    def __call__(self, *args, **kwargs):
        out = self.orig(*args, **kwargs)
        self.draws.append(np.asarray(out, dtype=np.int64))
        return out


def rle_of(mask):
    flat = mask.T.flatten()  # column-major, as COCO
    counts, val, run = [], 0, 0
    for v in flat:
        if v != val:
            counts.append(run)
            val, run = v, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def image_u8_of(t):
    """The uint8 image (224,224,3) a normalised reference tensor was made from; asserts exact."""
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    u8 = torch.round((t * std + mean) * 255).clamp(0, 255).to(torch.uint8)
    again = u8.to(torch.float32).div(255).sub_(mean).div_(std)
    assert torch.equal(again, t), "normalised image does not invert exactly"
    return u8.permute(1, 2, 0).contiguous().numpy()


def smooth_image(rng, h, w):
    """A colour image that compresses (gradients + a little noise)."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 127 // max(h + w - 2, 1))], axis=-1)
    noise = rng.integers(0, 2, size=(h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def gen_inputs(pem_dir, out):
    install_stubs()
    sys.path.insert(0, os.path.join(pem_dir, "utils"))
    data_utils = import_file("data_utils", os.path.join(pem_dir, "utils", "data_utils.py"))
    ric = import_file("run_inference_custom", os.path.join(pem_dir, "run_inference_custom.py"))
    rng = np.random.default_rng(8)
    np.random.seed(8)  # the reference's own draws (np.random.choice), so reruns write the same file
    arrays = {}

    # get_bbox on random masks of several shapes (blobs near the edges included).
    bbox_masks, bbox_out = [], []
    for k in range(24):
        m = np.zeros((30, 40), dtype=bool)
        r0, c0 = rng.integers(0, 30), rng.integers(0, 40)
        r1, c1 = min(30, r0 + rng.integers(1, 30)), min(40, c0 + rng.integers(1, 40))
        m[r0:r1, c0:c1] = rng.random((r1 - r0, c1 - c0)) < 0.6
        m[r0, c0] = True
        bbox_masks.append(m)
        bbox_out.append(data_utils.get_bbox(m))
    arrays["bbox_masks"] = np.stack(bbox_masks).astype(np.uint8)
    arrays["bbox_out"] = np.array(bbox_out, dtype=np.int64)

    # cv2.resize INTER_LINEAR on extra sizes (up, down, non-integer ratios, 1-pixel sides).
    sizes = [((13, 9), (31, 17)), ((50, 50), (7, 7)), ((37, 23), (23, 37)), ((1, 5), (4, 3)), ((150, 130), (61, 47)), ((29, 29), (100, 100))]
    for i, ((w, h), (dw, dh)) in enumerate(sizes):
        src = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) if w * h < 5000 else smooth_image(rng, h, w)
        arrays[f"resize{i}_src"] = src
        arrays[f"resize{i}_dst"] = cv2.resize(src, (dw, dh), interpolation=cv2.INTER_LINEAR)

    cfg = SimpleNamespace(img_size=224, n_sample_template_point=300, n_sample_observed_point=256, n_sample_model_point=64, rgb_mask_flag=True)
    tmp = tempfile.mkdtemp(prefix="pem-inputs-")
    from PIL import Image

    # Two templates (64x64): a large mask (> 300 pixels: drawn without replacement) and a small
    # one (with replacement). xyz in mm, float16 as the render script stores it.
    for v, (r0, r1, c0, c1) in enumerate([(10, 50, 20, 44), (40, 52, 3, 17)]):
        rgb = smooth_image(rng, 64, 64)
        mask = np.zeros((64, 64), dtype=bool)
        mask[r0:r1, c0:c1] = rng.random((r1 - r0, c1 - c0)) < 0.8
        xyz = (rng.standard_normal((64, 64, 3)) * 40).astype(np.float16)
        Image.fromarray(rgb).save(os.path.join(tmp, f"rgb_{v}.png"))
        Image.fromarray(mask.astype(np.uint8) * 255).save(os.path.join(tmp, f"mask_{v}.png"))
        np.save(os.path.join(tmp, f"xyz_{v}.npy"), xyz)
        rec = Recorder()
        np.random.choice = rec
        try:
            t_rgb, t_choose, t_pts = ric._get_template(tmp, cfg, v)
        finally:
            np.random.choice = rec.orig
        assert len(rec.draws) == 1
        arrays[f"tem{v}_rgb_in"] = rgb
        arrays[f"tem{v}_mask"] = mask.astype(np.uint8)
        arrays[f"tem{v}_xyz_mm"] = xyz
        arrays[f"tem{v}_draw"] = rec.draws[0]
        arrays[f"tem{v}_image"] = image_u8_of(t_rgb)
        arrays[f"tem{v}_choose"] = np.asarray(t_choose, dtype=np.int64)
        arrays[f"tem{v}_pts"] = np.asarray(t_pts, dtype=np.float32)

    # Observed frame 80x60: depth in mm with holes, four detections: a normal one, one with a
    # far-away outlier patch (gated), one with only 20 depth pixels (skipped), one small (< 256
    # points: drawn with replacement), one below the score threshold (dropped).
    H, W = 60, 80
    rgb = smooth_image(rng, H, W)
    depth = (700 + 30 * rng.standard_normal((H, W))).astype(np.uint16)
    depth[rng.random((H, W)) < 0.1] = 0
    depth[5:8, 60:64] = 1500  # outlier patch, inside detection 1's mask
    K = [500.0, 0.0, 39.5, 0.0, 505.0, 30.25, 0.0, 0.0, 1.0]
    dets = []
    masks = []
    for (r0, r1, c0, c1), score in [((20, 50, 10, 40), 0.9), ((3, 30, 45, 78), 0.5), ((55, 60, 0, 6), 0.8), ((30, 40, 50, 60), 0.7), ((0, 20, 0, 20), 0.1)]:
        m = np.zeros((H, W), dtype=bool)
        m[r0:r1, c0:c1] = True
        masks.append(m)
        dets.append({"scene_id": 0, "image_id": 0, "category_id": 1, "bbox": [c0, r0, c1 - c0, r1 - r0], "score": score, "time": 0.0, "segmentation": rle_of(m)})
    model_points = (rng.standard_normal((cfg.n_sample_model_point, 3)) * 25).astype(np.float64)
    sys.modules["trimesh"].load_mesh = lambda path: SimpleNamespace(sample=lambda n: model_points[:n])
    Image.fromarray(rgb).save(os.path.join(tmp, "rgb.png"))
    Image.fromarray(depth).save(os.path.join(tmp, "depth.png"))
    assert np.array_equal(np.array(Image.open(os.path.join(tmp, "depth.png"))), depth)
    with open(os.path.join(tmp, "cam.json"), "w") as f:
        json.dump({"cam_K": K, "depth_scale": 1.0}, f)
    with open(os.path.join(tmp, "seg.json"), "w") as f:
        json.dump(dets, f)
    rec = Recorder()
    np.random.choice = rec
    try:
        ret, _, _, mp, kept = ric.get_test_data(os.path.join(tmp, "rgb.png"), os.path.join(tmp, "depth.png"), os.path.join(tmp, "cam.json"), "cad.ply", os.path.join(tmp, "seg.json"), 0.2, cfg)
    finally:
        np.random.choice = rec.orig
    kept_idx = [next(i for i, d in enumerate(dets) if d["bbox"] == k["bbox"]) for k in kept]
    assert len(rec.draws) == len(kept_idx)
    radius = np.max(np.linalg.norm(mp, axis=1))
    arrays["obs_rgb"] = rgb
    arrays["obs_depth"] = depth.astype(np.int32)  # npy u2 is not read by tch
    arrays["obs_K"] = np.array(K, dtype=np.float64)
    arrays["obs_masks"] = np.stack(masks).astype(np.uint8)
    arrays["obs_scores"] = np.array([d["score"] for d in dets], dtype=np.float64)
    arrays["obs_radius"] = np.array([radius], dtype=np.float32)
    arrays["obs_kept"] = np.array(kept_idx, dtype=np.int64)
    for j in range(len(kept_idx)):
        arrays[f"obs{j}_draw"] = rec.draws[j]
        arrays[f"obs{j}_image"] = image_u8_of(ret["rgb"][j])
    arrays["obs_pts"] = ret["pts"].numpy()
    arrays["obs_choose"] = ret["rgb_choose"].numpy()
    np.savez_compressed(os.path.join(out, "model_inputs.npz"), **arrays)
    print(f"model_inputs.npz: kept detections {kept_idx}, draws {[len(d) for d in rec.draws]}")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    pem_dir, commit = checkout(sys.argv[1], "Pose_Estimation_Model")
    out = sys.argv[2]
    what = sys.argv[3] if len(sys.argv) > 3 else "inputs"
    os.makedirs(out, exist_ok=True)
    # torch.cuda stand-in: get_test_data moves its tensors with .cuda().
    torch.Tensor.cuda = lambda self, *a, **k: self
    if what == "inputs":
        gen_inputs(pem_dir, out)
    print(f"SAM-6D commit {commit}, torch {torch.__version__}, numpy {np.__version__}, opencv {cv2.__version__}")


if __name__ == "__main__":
    main()
