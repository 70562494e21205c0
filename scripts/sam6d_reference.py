"""Getting SAM-6D's reference code and making it importable here: shared by the fixture generators.

The generators (gen_ism_fixtures.py, gen_pem_fixtures_*.py) import and call the reference
code itself, never a copy of it. What they all need is kept here so it stays the same: their
command line (`command_line`), the reference folder from a bare git mirror or a source tree
(`checkout`), stand-in modules for packages the reference imports but the called code never
uses (`module`, `missing`, `unused`, `install_transforms`), their README.md line
(`write_readme_line`) and random rotations (`random_rotation`). What only one generator needs
stays in that generator.
"""
import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import types

import numpy as np
import torch


def command_line(doc):
    """(SAM6D_DIR, OUT_DIR) from the command line `SCRIPT SAM6D_DIR OUT_DIR`, with OUT_DIR
    created; anything else prints the generator's docstring `doc` and exits."""
    if len(sys.argv) != 3:
        sys.exit(doc)
    os.makedirs(sys.argv[2], exist_ok=True)
    return sys.argv[1], sys.argv[2]


def checkout(src, part):
    """(folder, commit) of the reference's `part` ("Instance_Segmentation_Model" or
    "Pose_Estimation_Model"). `src` is a bare git mirror of SAM-6D, whose SAM-6D/`part` is
    extracted at HEAD with `git archive` into a temporary folder (removed at exit), or a source
    tree (its root, its SAM-6D folder or the `part` folder itself), whose commit is taken from
    SAM6D_COMMIT."""
    if os.path.isfile(os.path.join(src, "HEAD")) and os.path.isdir(os.path.join(src, "objects")):
        commit = subprocess.run(["git", "-C", src, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        tmp = tempfile.mkdtemp(prefix="sam6d-ref-")
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        archive = subprocess.run(["git", "-C", src, "archive", commit, f"SAM-6D/{part}"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        return os.path.join(tmp, "SAM-6D", part), commit
    for cand in (os.path.join(src, "SAM-6D", part), os.path.join(src, part), src):
        if os.path.isfile(os.path.join(cand, "run_inference_custom.py")):  # both parts have it
            return cand, os.environ.get("SAM6D_COMMIT", "unknown (set SAM6D_COMMIT)")
    sys.exit(f"{src}: neither a bare git mirror of SAM-6D nor a SAM-6D source tree with {part}")


# --------------------------------------------------------------------------------------------
# Stand-ins for packages the reference imports at import time only.
def module(name, **attrs):
    """Registers a module `name` that holds only `attrs` (and makes it an attribute of its
    parent, which must be registered first, so `import a.b` and `a.b` both work)."""
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, m)
    return m


def missing(name):
    """True when `name` is neither installed nor already stood in for."""
    return name not in sys.modules and importlib.util.find_spec(name) is None


def unused(what):
    """A stand-in function that the called reference code must never reach."""

    def f(*args, **kwargs):
        raise NotImplementedError(f"{what} is a fixture generator's stand-in: the reference code under test was not expected to call it")

    return f


def install_transforms():
    """When torchvision is missing, registers torchvision.transforms with the Compose, ToTensor
    and Normalize the reference normalises its images with. They compute what torchvision's
    `to_tensor` / `normalize` compute: float32(x) / 255 for HWC uint8 arrays, then
    (x - mean) / std with mean and std in the tensor's dtype. Returns whether it did (callers
    add the other torchvision names they need only then)."""
    if not missing("torchvision"):
        return False

    class Compose:
        def __init__(self, transforms):
            self.transforms = transforms

        def __call__(self, x):
            for t in self.transforms:
                x = t(x)
            return x

    class ToTensor:  # torchvision.transforms.functional.to_tensor for HWC uint8 arrays
        def __call__(self, pic):
            assert isinstance(pic, np.ndarray) and pic.dtype == np.uint8 and pic.ndim == 3
            img = torch.from_numpy(pic.transpose((2, 0, 1))).contiguous()
            return img.to(dtype=torch.get_default_dtype()).div(255)

    class Normalize:  # torchvision.transforms.functional.normalize
        def __init__(self, mean, std):
            self.mean, self.std = mean, std

        def __call__(self, tensor):
            mean = torch.as_tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
            std = torch.as_tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
            return tensor.clone().sub_(mean).div_(std)

    module("torchvision")
    module("torchvision.transforms", Compose=Compose, ToTensor=ToTensor, Normalize=Normalize)
    return True


# --------------------------------------------------------------------------------------------
def write_readme_line(out_dir, files, text):
    """Writes the line "- FILES: TEXT" into OUT_DIR/README.md in place of the line about the same
    FILES: generators share one folder's README, each owning the line about its files."""
    key = f"- {files}:"
    path = os.path.join(out_dir, "README.md")
    lines = open(path).read().splitlines() if os.path.isfile(path) else []
    lines = [l for l in lines if not l.startswith(key)]
    lines.append(f"{key} {text}")
    open(path, "w").write("\n".join(lines) + "\n")


def random_rotation(gen, dtype):
    """A random rotation matrix (3, 3) of `dtype`: the matrix of a normalised Gaussian
    quaternion drawn from the torch generator `gen` (computed in float64)."""
    q = torch.randn(4, generator=gen, dtype=torch.float64)
    w, x, y, z = (q / q.norm()).tolist()
    return torch.tensor([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ], dtype=dtype)
