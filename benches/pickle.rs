//! Decoding speed of an inference request pickle: our safe decoder (`sam6d::protocol::pickle`)
//! against `serde_pickle::value_from_slice`.
//!
//! `cargo bench --bench pickle -- [--runs N] [--rgb-kb N] [--depth-kb N]`
//!
//! The request is the dict our Python clients send: `rgb_bytes` (550 kB of incompressible
//! bytes, like a PNG), `depth_bytes` (50 kB), `cam_K`, and the small fields. Protocols 2 and 3
//! are written by serde-pickle; protocols 2 to 5 are also written by `python3`'s own pickle when
//! it is on PATH (protocol 2 from Python memoizes, protocol 4/5 use FRAME, MEMOIZE and
//! SHORT_BINUNICODE). A second table decodes many small values instead (a 10 000-entry dict of
//! `[int, float, str]`), where the per-opcode cost shows. Times are the median of `--runs`
//! decodes (default 300), after a few warm-up runs.
mod common;

use common::arg;
use sam6d::protocol::pickle::{decode, Limits};
use serde_pickle::{DeOptions, HashableValue as HV, SerOptions, Value as SP};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

fn random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

fn request(rgb: &[u8], depth: &[u8]) -> SP {
    let mut d = BTreeMap::new();
    let s = |x: &str| HV::String(x.into());
    d.insert(s("action"), SP::String("sam6d_inference".into()));
    d.insert(s("rgb_bytes"), SP::Bytes(rgb.to_vec()));
    d.insert(s("depth_bytes"), SP::Bytes(depth.to_vec()));
    d.insert(s("det_score_thresh"), SP::F64(0.5));
    d.insert(s("visualize"), SP::Bool(true));
    let row = |r: [f64; 3]| SP::List(r.iter().map(|&x| SP::F64(x)).collect());
    d.insert(s("cam_K"), SP::List(vec![row([572.4114, 0.0, 325.2611]), row([0.0, 573.57043, 242.04899]), row([0.0, 0.0, 1.0])]));
    d.insert(s("object"), SP::String("obj_000005".into()));
    d.insert(s("token"), SP::String("abc".into()));
    d.insert(s("id"), SP::I64(17));
    SP::Dict(d)
}

/// `{"key0": [0, 0.5, "s0"], ...}`: many small values.
fn small_values(n: i64) -> SP {
    SP::Dict((0..n).map(|i| (HV::String(format!("key{i}")), SP::List(vec![SP::I64(i), SP::F64(i as f64 * 0.5), SP::String(format!("s{i}"))]))).collect())
}

/// Named pickles.
type Pickles = Vec<(String, Vec<u8>)>;

/// The same request (and the small-values dict) pickled by Python at protocols 2..=5, or why
/// not.
fn python_pickles(rgb: &[u8], depth: &[u8]) -> Result<(Pickles, Pickles), String> {
    let dir = tempfile::TempDir::new().map_err(|e| e.to_string())?;
    std::fs::write(dir.path().join("rgb"), rgb).map_err(|e| e.to_string())?;
    std::fs::write(dir.path().join("depth"), depth).map_err(|e| e.to_string())?;
    let script = r#"
import pickle, sys, os
d = sys.argv[1]
rgb = open(os.path.join(d, "rgb"), "rb").read()
depth = open(os.path.join(d, "depth"), "rb").read()
req = {"action": "sam6d_inference", "rgb_bytes": rgb, "depth_bytes": depth, "det_score_thresh": 0.5,
       "visualize": True, "cam_K": [[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]],
       "object": "obj_000005", "token": "abc", "id": 17}
small = {"key%d" % i: [i, i * 0.5, "s%d" % i] for i in range(10000)}
for p in (2, 3, 4, 5):
    open(os.path.join(d, "p%d" % p), "wb").write(pickle.dumps(req, protocol=p))
    open(os.path.join(d, "small%d" % p), "wb").write(pickle.dumps(small, protocol=p))
"#;
    let out = Command::new("python3").arg("-c").arg(script).arg(dir.path()).output().map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let read = |stem: &str| {
        (2..=5)
            .map(|p| Ok((format!("python3 protocol {p}"), std::fs::read(dir.path().join(format!("{stem}{p}"))).map_err(|e| e.to_string())?)))
            .collect::<Result<Vec<_>, String>>()
    };
    Ok((read("p")?, read("small")?))
}

/// Median seconds of `runs` calls (after `runs / 10 + 2` warm-up calls).
fn median_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..runs / 10 + 2 {
        f();
    }
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Prints one table row per pickle; `check` asserts what our decoder made of it.
fn table(title: &str, pickles: &[(String, Vec<u8>)], runs: usize, check: impl Fn(&str, &sam6d::protocol::pickle::Value)) {
    println!();
    println!("{title}");
    println!("{:<26} {:>9} {:>12} {:>10} {:>12} {:>10} {:>8}", "pickle", "size kB", "ours µs", "ours MB/s", "serde µs", "serde MB/s", "speedup");
    let limits = Limits::default();
    // Warm up on the whole table first: the first row timed would otherwise pay for the
    // allocator adapting to the previous table's very different sizes.
    for (_, p) in pickles {
        for _ in 0..runs / 10 + 2 {
            let _ = black_box(decode(black_box(p), &limits));
            let _ = black_box(serde_pickle::value_from_slice(black_box(p), DeOptions::new()));
        }
    }
    for (name, p) in pickles {
        check(name, &decode(p, &limits).unwrap_or_else(|e| panic!("{name}: {e}")));
        let ours = median_secs(runs, || {
            black_box(decode(black_box(p), &limits).unwrap());
        });
        let theirs = match serde_pickle::value_from_slice(p, DeOptions::new()) {
            Ok(_) => Some(median_secs(runs, || {
                black_box(serde_pickle::value_from_slice(black_box(p), DeOptions::new()).unwrap());
            })),
            Err(e) => {
                println!("  (serde-pickle cannot decode {name}: {e})");
                None
            }
        };
        let mbs = |t: f64| p.len() as f64 / t / 1e6;
        let (st, smbs, speed) = match theirs {
            Some(t) => (format!("{:.1}", t * 1e6), format!("{:.0}", mbs(t)), format!("{:.1}×", t / ours)),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!("{:<26} {:>9.1} {:>12.1} {:>10.0} {:>12} {:>10} {:>8}", name, p.len() as f64 / 1e3, ours * 1e6, mbs(ours), st, smbs, speed);
    }
}

fn main() {
    let runs: usize = arg("--runs", 300);
    let rgb = random_bytes(arg("--rgb-kb", 550) * 1000, 0x1234_5678_9abc_def1);
    let depth = random_bytes(arg("--depth-kb", 50) * 1000, 0x0fed_cba9_8765_4321);
    let req = request(&rgb, &depth);
    let small = small_values(10_000);
    let mut requests = vec![
        ("serde-pickle protocol 2".to_string(), serde_pickle::value_to_vec(&req, SerOptions::new().proto_v2()).unwrap()),
        ("serde-pickle protocol 3".to_string(), serde_pickle::value_to_vec(&req, SerOptions::new()).unwrap()),
    ];
    let mut smalls = vec![
        ("serde-pickle protocol 2".to_string(), serde_pickle::value_to_vec(&small, SerOptions::new().proto_v2()).unwrap()),
        ("serde-pickle protocol 3".to_string(), serde_pickle::value_to_vec(&small, SerOptions::new()).unwrap()),
    ];
    match python_pickles(&rgb, &depth) {
        Ok((r, s)) => {
            requests.extend(r);
            smalls.extend(s);
        }
        Err(e) => println!("(no Python-written pickles: {})", e.trim()),
    }
    let title = format!("inference request: {} kB rgb + {} kB depth bytes; median of {runs} decodes", rgb.len() / 1000, depth.len() / 1000);
    table(&title, &requests, runs, |name, v| {
        assert_eq!(v.get("rgb_bytes").and_then(|b| b.as_bytes()), Some(&rgb[..]), "{name}");
        assert_eq!(v.get("depth_bytes").and_then(|b| b.as_bytes()), Some(&depth[..]), "{name}");
    });
    table(&format!("many small values: 10 000-entry dict of [int, float, str]; median of {runs} decodes"), &smalls, runs, |name, v| {
        assert_eq!(v.get("key9999").and_then(|l| l.as_seq()).map(<[_]>::len), Some(3), "{name}");
    });
}
