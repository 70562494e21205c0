#!/usr/bin/env python3
"""Parity fixtures for the PEM's network layers, made by SAM-6D's own modules at random weights.

Usage: gen_pem_fixtures_net.py SAM6D_DIR OUT_DIR

SAM6D_DIR is either a bare git mirror of SAM-6D (its Pose_Estimation_Model folder is extracted
at HEAD with `git archive` and the commit recorded), e.g.
    python scripts/gen_pem_fixtures_net.py /work/.mirror/JiehongLin+SAM-6D/repo testdata/pem-fixtures
or a SAM-6D source tree (its root or its Pose_Estimation_Model folder; set SAM6D_COMMIT to record
which commit it is).

The reference classes are imported and instantiated, never copied:
- `feature_extraction.ViTEncoder` (ViT_AE with timm's VisionTransformer: depth 12 and 12 heads
  are hard-coded there, so only the width is reduced: embed_dim 24, out_dim 16);
- `transformer.GeometricStructureEmbedding` (hidden_dim 32), `transformer.GeometricTransformer`
  (['self', 'cross'], d_model 32, 4 heads), `transformer.SparseToDenseTransformer` (d_model 32,
  focusing factor 3, bg token on, replaced);
- `fine_point_matching.PositionalEncoding` (out_dim 32; radii 0.1 / 0.2 and 32 / 64
  neighbours as the checkpoint).
The CUDA pointnet2 ops are replaced by scripts/pem_ref_ops.py (CPU, same semantics). Packages
that are imported but not used here are stubbed: torchvision (timm imports it at import time)
and tqdm. Needs `timm==0.9.16` and `einops==0.8.2` in the venv (pip install --no-deps).

The full-size modules are also built (base.yaml sizes) and their state-dict names and shapes are
checked against ../shared/reference/manifest-pem-base.json when that file is there.

Weights: PyTorch's random initialisation (seeded), then biases, LayerNorm/BatchNorm affine
parameters, BatchNorm running statistics, the class token and the linear attention's `scale`
are perturbed so that none is trivial (zero or one). Every weight and float input is rounded to
float16 and stored as float16 (exact in float32: the module runs in float32 on the rounded
values); outputs are float32. Names: the official checkpoint names (`feature_extraction.rgb_net.
vit.blocks.0.attn.qkv.weight`, …) for weights, `input.*` and `output.*` for the rest.

Outputs (OUT_DIR): net_feature_extraction.safetensors, net_geo_embedding.safetensors,
net_geometric_transformer.safetensors, net_sparse_to_dense.safetensors,
net_positional_encoding.safetensors, and this script's line in README.md.
cli-tests/pem_layers.rs describes what each holds.
"""
import importlib.abc
import importlib.machinery
import json
import os
import sys
import types
from types import SimpleNamespace

import torch
from safetensors.torch import save_file

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, SCRIPTS)
import pem_ref_ops  # noqa: E402
from sam6d_reference import checkout, command_line, write_readme_line  # noqa: E402

MANIFEST = os.path.join(SCRIPTS, "..", "..", "shared", "reference", "manifest-pem-base.json")


# --------------------------------------------------------------------------------------------
# Stand-ins for packages imported but not used by the modules under test.
class _AnythingMeta(type):
    def __getattr__(cls, name):
        # A distinct class per name: enum-like members (InterpolationMode.X) stay distinct keys.
        if name.startswith("__"):
            raise AttributeError(name)
        sub = _AnythingMeta(name, (cls,), {})
        setattr(cls, name, sub)
        return sub


class _Anything(metaclass=_AnythingMeta):
    """Any attribute, call or subclassing works; nothing is ever computed with it."""

    def __init__(self, *a, **k):
        pass

    def __getattr__(self, name):
        return _Anything()

    def __call__(self, *a, **k):
        return _Anything()


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots):
        self.roots = roots

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        m = types.ModuleType(spec.name)
        m.__path__ = []
        m.__getattr__ = lambda attr: _Anything  # PEP 562: `from torchvision.x import Y` works
        return m

    def exec_module(self, module):
        pass


def install_stubs():
    missing = [n for n in ("torchvision", "tqdm") if importlib.util.find_spec(n) is None]
    if missing:
        sys.meta_path.insert(0, _StubFinder(set(missing)))


# --------------------------------------------------------------------------------------------
def load_reference(sam6d_dir):
    pem_dir, commit = checkout(sam6d_dir, "Pose_Estimation_Model")
    install_stubs()
    pem_ref_ops.install(pem_dir)
    import feature_extraction
    import fine_point_matching
    import transformer

    return SimpleNamespace(fe=feature_extraction, tr=transformer, fpm=fine_point_matching, commit=commit)


# --------------------------------------------------------------------------------------------
def q16(t):
    """Rounds to float16 values (kept as float32)."""
    return t.detach().half().float()


def perturb_and_round(module, gen):
    """Makes trivial parameters non-trivial, then rounds everything to float16 values."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias":
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
            elif leaf == "weight" and p.dim() == 1:  # LayerNorm / BatchNorm scale
                p.copy_(1.0 + torch.randn(p.shape, generator=gen) * 0.1)
            elif leaf in ("cls_token", "scale"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            p.copy_(q16(p))
        for name, b in module.named_buffers():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_mean":
                b.copy_(q16(torch.randn(b.shape, generator=gen) * 0.1))
            elif leaf == "running_var":
                b.copy_(q16(0.5 + torch.rand(b.shape, generator=gen)))
            elif leaf == "num_batches_tracked":
                b.fill_(1000)
            elif b.is_floating_point():
                # div_term: stored as float16 values too, so the Rust side computes with exactly
                # what the reference used.
                b.copy_(q16(b))


def state(module, prefix):
    out = {}
    for k, v in module.state_dict().items():
        v = v.detach().contiguous()
        out[prefix + k] = v.half() if v.is_floating_point() else v
    return out


def save(path, tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    print(f"{os.path.basename(path)}: {os.path.getsize(path)} bytes")


def check_full_layout(ref):
    """Full-size reference modules versus the checkpoint manifest (names and shapes)."""
    if not os.path.isfile(MANIFEST):
        print(f"skipped the full-size layout check: {MANIFEST} not found")
        return
    manifest = json.load(open(MANIFEST))
    fe_cfg = SimpleNamespace(vit_type="vit_base", up_type="linear", embed_dim=768, out_dim=256, use_pyramid_feat=True, pretrained=False)
    geo_cfg = SimpleNamespace(sigma_d=0.2, sigma_a=15, angle_k=3, reduction_a="max", hidden_dim=256)
    ours = {}
    ours.update({"feature_extraction." + k: v for k, v in ref.fe.ViTEncoder(fe_cfg, 2048).state_dict().items()})
    ours.update({"geo_embedding." + k: v for k, v in ref.tr.GeometricStructureEmbedding(geo_cfg).state_dict().items()})
    for i in range(3):
        g = ref.tr.GeometricTransformer(blocks=["self", "cross"], d_model=256, num_heads=4)
        ours.update({f"coarse_point_matching.transformers.{i}." + k: v for k, v in g.state_dict().items()})
        s = ref.tr.SparseToDenseTransformer(256, sparse_blocks=["self", "cross"], num_heads=4, focusing_factor=3)
        ours.update({f"fine_point_matching.transformers.{i}." + k: v for k, v in s.state_dict().items()})
    ours.update({"fine_point_matching.PE." + k: v for k, v in ref.fpm.PositionalEncoding(256, r1=0.1, r2=0.2).state_dict().items()})
    for k, v in ours.items():
        assert k in manifest, f"{k} not in the manifest"
        assert list(v.shape) == manifest[k], f"{k}: {list(v.shape)} vs manifest {manifest[k]}"
    rest = sorted(k for k in manifest if k not in ours)
    print(f"full-size layout: {len(ours)} tensors match the manifest; not these modules': {rest}")


# --------------------------------------------------------------------------------------------
def feature_extraction_fixture(ref, out_dir, gen):
    cfg = SimpleNamespace(vit_type="vit_base", up_type="linear", embed_dim=24, out_dim=16, use_pyramid_feat=True, pretrained=False)
    net = ref.fe.ViTEncoder(cfg, 2048).eval()
    perturb_and_round(net, gen)
    # Image-like input: 8-bit levels mapped to (x − 128)/64 (exact in float32 and float16).
    img = torch.randint(0, 256, (2, 3, 224, 224), generator=gen)
    rgb = (img.float() - 128.0) / 64.0
    choose = torch.randint(0, 224 * 224, (2, 1024), generator=gen)
    choose[:, :4] = torch.tensor([0, 223, 224 * 223, 224 * 224 - 1])  # corners: border rules
    with torch.no_grad():
        feats = net.get_img_feats(rgb, choose)  # (2, 1024, 16)
    t = state(net, "feature_extraction.")
    t.update({"input.rgb_u8": img.to(torch.uint8), "input.choose": choose.to(torch.int64), "output.features": feats.float()})
    save(os.path.join(out_dir, "net_feature_extraction.safetensors"), t)


def bg_and_points(gen, b, n):
    """Background point (100,100,100) first, then points in a unit-ish blob (normalised units)."""
    pts = q16(torch.randn(b, n, 3, generator=gen) * 0.4)
    return torch.cat([torch.full((b, 1, 3), 100.0), pts], dim=1)


def geo_embedding_fixture(ref, out_dir, gen):
    cfg = SimpleNamespace(sigma_d=0.2, sigma_a=15, angle_k=3, reduction_a="max", hidden_dim=32)
    net = ref.tr.GeometricStructureEmbedding(cfg).eval()
    perturb_and_round(net, gen)
    points = bg_and_points(gen, 2, 30)
    with torch.no_grad():
        emb = net(points)
    t = state(net, "geo_embedding.")
    t.update({"input.points": points.half(), "output.embedding": emb.float()})
    save(os.path.join(out_dir, "net_geo_embedding.safetensors"), t)


def geometric_transformer_fixture(ref, out_dir, gen):
    net = ref.tr.GeometricTransformer(blocks=["self", "cross"], d_model=32, num_heads=4).eval()
    perturb_and_round(net, gen)
    f0 = q16(torch.randn(2, 21, 32, generator=gen))
    f1 = q16(torch.randn(2, 17, 32, generator=gen))
    e0 = q16(torch.randn(2, 21, 21, 32, generator=gen))
    e1 = q16(torch.randn(2, 17, 17, 32, generator=gen))
    with torch.no_grad():
        o0, o1 = net(f0, e0, f1, e1)
    t = state(net, "coarse_point_matching.transformers.0.")
    t.update({"input.f0": f0.half(), "input.f1": f1.half(), "input.emb0": e0.half(), "input.emb1": e1.half(), "output.f0": o0.float(), "output.f1": o1.float()})
    save(os.path.join(out_dir, "net_geometric_transformer.safetensors"), t)


def fps_like(gen, b, n, s):
    """(b, s) distinct indices in [0, n) starting at 0, as FPS gives (int32, as the reference)."""
    rows = [torch.cat([torch.zeros(1, dtype=torch.int64), 1 + torch.randperm(n - 1, generator=gen)[: s - 1]]) for _ in range(b)]
    return torch.stack(rows).to(torch.int32)


def sparse_to_dense_fixture(ref, out_dir, gen):
    net = ref.tr.SparseToDenseTransformer(32, sparse_blocks=["self", "cross"], num_heads=4, focusing_factor=3, with_bg_token=True, replace_bg_token=True).eval()
    perturb_and_round(net, gen)
    # Set 0: 60 dense points, 20 sparse (the linear attention takes the k·v order); set 1: 50
    # dense, 4 sparse (the q·k order): both of the reference's contraction orders are covered.
    n0, s0, n1, s1 = 60, 20, 50, 4
    d0 = q16(torch.randn(2, 1 + n0, 32, generator=gen))
    d1 = q16(torch.randn(2, 1 + n1, 32, generator=gen))
    i0, i1 = fps_like(gen, 2, n0, s0), fps_like(gen, 2, n1, s1)
    e0 = q16(torch.randn(2, 1 + s0, 1 + s0, 32, generator=gen))
    e1 = q16(torch.randn(2, 1 + s1, 1 + s1, 32, generator=gen))
    with torch.no_grad():
        o0, o1 = net(d0, e0, i0, d1, e1, i1)
    t = state(net, "fine_point_matching.transformers.0.")
    t.update({
        "input.dense0": d0.half(), "input.dense1": d1.half(), "input.fps_idx0": i0, "input.fps_idx1": i1,
        "input.emb0": e0.half(), "input.emb1": e1.half(), "output.dense0": o0.float(), "output.dense1": o1.float(),
    })
    save(os.path.join(out_dir, "net_sparse_to_dense.safetensors"), t)


def positional_encoding_fixture(ref, out_dir, gen):
    net = ref.fpm.PositionalEncoding(32, r1=0.1, r2=0.2).eval()
    perturb_and_round(net, gen)
    # Half spread out (few neighbours), half in a tight cluster (the 32 / 64 caps are reached).
    spread = torch.rand(2, 150, 3, generator=gen) - 0.5
    cluster = torch.randn(2, 150, 3, generator=gen) * 0.05
    points = q16(torch.cat([spread, cluster], dim=1)[:, torch.randperm(300, generator=gen)])
    with torch.no_grad():
        pe = net(points)
        inside = torch.cdist(points.double(), points.double())
    for r, ns in ((0.1, 32), (0.2, 64)):
        n = (inside < r).sum(-1)
        print(f"PE radius {r}: neighbours per point {int(n.min())}..{int(n.max())}, {int((n >= ns).sum())} centres reach the cap {ns}")
    t = state(net, "fine_point_matching.PE.")
    t.update({"input.points": points.half(), "output.encoding": pe.float()})
    save(os.path.join(out_dir, "net_positional_encoding.safetensors"), t)


def main():
    sam6d_dir, out_dir = command_line(__doc__)
    torch.manual_seed(0)
    ref = load_reference(sam6d_dir)
    check_full_layout(ref)
    for i, make in enumerate([feature_extraction_fixture, geo_embedding_fixture, geometric_transformer_fixture, sparse_to_dense_fixture, positional_encoding_fixture]):
        torch.manual_seed(100 + i)  # module initialisation
        make(ref, out_dir, torch.Generator().manual_seed(200 + i))
    import timm  # only now: timm imports torchvision, which load_reference stood in for

    write_readme_line(
        out_dir,
        "`net_*.safetensors`",
        f"the PEM's network layers (feature extraction, geometric embedding, "
        f"geometric and sparse-to-dense transformers, positional encoding) at reduced width, random "
        f"weights; `python scripts/gen_pem_fixtures_net.py SAM6D_DIR testdata/pem-fixtures` from SAM-6D "
        f"{ref.commit}, torch {torch.__version__}, timm {timm.__version__}; tests: cli-tests/pem_layers.rs.",
    )


if __name__ == "__main__":
    main()
