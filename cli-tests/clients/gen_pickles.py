#!/usr/bin/env python3
"""Writes pickles made by Python's own `pickle.dumps`, with the values a safe decoder must see.

    python3 gen_pickles.py OUTDIR

For every case and every protocol 0..5 it writes NAME_pP.pkl and NAME_pP.json. The JSON holds
the expected decoded value in a tagged form that keeps what JSON cannot say:

    None, bool, int, str  -> themselves (null, true/false, number, string)
    float                 -> {"float": repr(x)}           ("nan", "inf", "-0.0", "1e+300")
    bytes, bytearray      -> {"bytes_hex": "..."} or, when long, {"bytes_file": "blob_....bin"}
    list / tuple          -> {"list": [...]} / {"tuple": [...]}
    dict                  -> {"dict": [[key, value], ...]}  (insertion order)

or, for objects the decoder must refuse, {"error": "<text the error message must contain>"}.
Standard library only; deterministic (seeded).
"""
import hashlib
import json
import os
import pickle
import random
import sys


class Thing:
    """A plain class instance: must be refused."""

    def __init__(self):
        self.x = 1


class Evil:
    """What an attacker sends: unpickling it would run a shell command."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def cases():
    rng = random.Random(20240601)
    rgb = rng.randbytes(1_000_000)
    depth = rng.randbytes(100_000)
    shared_list = [1, 2, 3]
    shared_bytes = b"xyz\xff\x00" * 10
    shared_str = "shared string é"
    recursive = []
    recursive.append(recursive)
    deep = []
    for _ in range(40):
        deep = [deep]

    ok = {
        "request": {
            "action": "sam6d_inference",
            "rgb_bytes": rgb,
            "depth_bytes": depth,
            "det_score_thresh": 0.5,
            "visualize": True,
            "cam_K": [[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]],
            "object": "obj_000005",
            "token": "abc",
            "id": 17,
        },
        "request_flat_k": {
            "action": "sam6d_inference",
            "rgb_bytes": rgb[:5000],
            "depth_bytes": b"",
            "cam_K": [572.4114, 0.0, 325.2611, 0.0, 573.57043, 242.04899, 0.0, 0.0, 1.0],
            "visualize": False,
            "id": 0,
        },
        "empty_bytes": b"",
        "all_byte_values": bytes(range(256)) * 4,
        "bytes_list": [b"", b"a", bytes([0]), bytes([255]), b"\\", b"\n\r\x1a", bytes(range(256))],
        "bytearray": bytearray(b"hello\x00\xff\x80"),
        "empty_bytearray": bytearray(),
        "bytearray_big": bytearray(rgb[:70000]),
        "strings": ["", "ascii", "héllo wörld", "日本語", "😀 emoji 🎉", "a\\b\nc\r\x00\x1a\t", "\\u0041 not an escape", "ÿ\x80\x7f"],
        "long_str": ("ab€😀ÿ\\\n" * 12000),
        "ints": [0, 1, -1, 255, 256, 65535, 65536, -(2**31), 2**31, 2**31 - 1, -(2**31) - 1,
                 2**63 - 1, -(2**63), 10**18, -(10**18), 1000000],
        "floats": [0.0, -0.0, 1e300, float("nan"), float("inf"), float("-inf"), 1.5, 5e-324, -2.5e-300, 0.1],
        "bools_none": [True, False, None],
        "scalar_int": 42,
        "scalar_none": None,
        "scalar_str": "just a string",
        "nested": {
            "a": [1, (2, 3), {"b": [[], {}, ()]}],
            "c": ((),),
            (1, "x"): "tuple key",
            3: "int key",
            b"k": "bytes key",
            2.5: "float key",
            None: "none key",
            "deep": [[[[[[[[[["ten"]]]]]]]]]],
        },
        "nesting_32": None,  # filled below
        "shared_list": {"a": shared_list, "b": shared_list},
        "shared_in_tuple": (shared_list, shared_list, [shared_list]),
        "shared_bytes": {"a": shared_bytes, "b": [shared_bytes, shared_bytes]},
        "shared_str": [shared_str, shared_str, (shared_str,)],
        "big_dict": {f"key{i}": i for i in range(3000)},
        "big_list": list(range(5000)),
        "tuples": [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)],
    }
    n32 = "leaf"
    for _ in range(32):
        n32 = [n32]
    ok["nesting_32"] = n32

    refused = {
        "set": ({1, 2, 3}, "sets are not supported"),
        "frozenset": (frozenset({1}), "sets are not supported"),
        "class_instance": (Thing(), "pickle refused"),
        "os_system": (Evil(), "system"),
        "complex": (1j, "pickle refused: global"),
        "recursive_list": (recursive, "recursive"),
        "too_deep": (deep, "deeper than 32"),
        "big_int": (2**64, "64 bits"),
        "lone_surrogate": ("\ud800", "malformed pickle"),
    }
    return ok, refused


def tagged(v, blobs):
    """The expected value in the tagged JSON form (see the module doc)."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return {"float": repr(v)}
    if isinstance(v, (bytes, bytearray)):
        if len(v) > 4096:
            name = "blob_%s.bin" % hashlib.sha1(v).hexdigest()[:16]
            blobs[name] = bytes(v)
            return {"bytes_file": name}
        return {"bytes_hex": bytes(v).hex()}
    if isinstance(v, list):
        return {"list": [tagged(x, blobs) for x in v]}
    if isinstance(v, tuple):
        return {"tuple": [tagged(x, blobs) for x in v]}
    if isinstance(v, dict):
        return {"dict": [[tagged(k, blobs), tagged(x, blobs)] for k, x in v.items()]}
    raise TypeError(type(v))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_pickles.py OUTDIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    ok, refused = cases()
    blobs = {}
    written = 0
    for proto in range(0, pickle.HIGHEST_PROTOCOL + 1):
        for name, obj in ok.items():
            expected = tagged(obj, blobs)
            data = pickle.dumps(obj, protocol=proto)
            assert pickle.loads(data) == obj or name in ("floats",), name
            write(out, f"{name}_p{proto}", data, expected)
            written += 1
        for name, (obj, needle) in refused.items():
            try:
                data = pickle.dumps(obj, protocol=proto)
            except Exception:  # noqa: BLE001 (nothing to test if Python cannot write it)
                continue
            write(out, f"{name}_p{proto}", data, {"error": needle})
            written += 1
    for name, data in blobs.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"{written} pickles in {out}")


def write(out, stem, data, expected):
    with open(os.path.join(out, stem + ".pkl"), "wb") as f:
        f.write(data)
    with open(os.path.join(out, stem + ".json"), "w") as f:
        json.dump(expected, f)


if __name__ == "__main__":
    main()
