//! `sam6d eval` on a small BOP scene written from synthetic frames with known poses, against
//! predictions written by hand (exact, perturbed, missing, extra), with the figures worked out
//! here from the ground truth.
use super::{expect_error, s, sam6d, stderr};
use sam6d::geometry::{Mesh, Pose};
use sam6d::synth::bop::{write_scene, BopFrame};
use sam6d::synth::{self, SceneSpec, SceneTarget, SyntheticFrame};
use serde_json::Value;
use std::fmt::Write;
use std::path::Path;

struct Fixture {
    _dir: tempfile::TempDir,
    scene: String,
    models: String,
    models_no_info: String,
    root: std::path::PathBuf,
    mesh: Mesh,
    /// Ground truth per image (im_id 1, 2, 3): poses of the bracket instances.
    gt: Vec<Vec<Pose>>,
    camera: sam6d::io::Camera,
}

/// Scene 000007: image 1 with one bracket, image 2 with two, image 3 with one. Models folder
/// with obj_000001.ply and models_info.json (diameter only: no symmetry), and a second one
/// without models_info.json.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let target = synth::procedural_targets().into_iter().find(|t| t.name == "bracket").unwrap();
    let frames: Vec<SyntheticFrame> = [(11, 1), (12, 2), (13, 1)]
        .iter()
        .map(|&(seed, instances)| {
            let mut spec = SceneSpec::new(seed, vec![SceneTarget { object: target.clone(), instances }]);
            (spec.occlusion, spec.distractors) = (0.0, 1);
            synth::generate(&spec)
        })
        .collect();
    let scene = dir.path().join("000007");
    let bop: Vec<BopFrame> = frames.iter().enumerate().map(|(i, f)| BopFrame { im_id: i as u32 + 1, frame: f }).collect();
    write_scene(&scene, &bop, 1.0, |n| (n == "bracket").then_some(1)).unwrap();
    let models = dir.path().join("models");
    let models_no_info = dir.path().join("models-no-info");
    for m in [&models, &models_no_info] {
        std::fs::create_dir_all(m).unwrap();
        sam6d::geometry::ply::write_ascii_ply(&target.mesh, &m.join("obj_000001.ply")).unwrap();
    }
    let diameter = target.mesh.diameter() as f64;
    std::fs::write(models.join("models_info.json"), format!(r#"{{"1": {{"diameter": {diameter}}}}}"#)).unwrap();
    let gt = frames.iter().map(|f| f.gt.iter().map(|g| g.pose).collect()).collect();
    Fixture {
        scene: s(&scene).to_string(),
        models: s(&models).to_string(),
        models_no_info: s(&models_no_info).to_string(),
        root: dir.path().to_path_buf(),
        mesh: Mesh::clone(&target.mesh),
        gt,
        camera: frames[0].camera,
        _dir: dir,
    }
}

fn csv_row(out: &mut String, scene: u32, im: u32, score: f64, pose: &Pose, time: f64) {
    let r: Vec<String> = pose.rotation_rows().iter().flatten().map(|x| x.to_string()).collect();
    let t: Vec<String> = pose.translation_array().iter().map(|x| x.to_string()).collect();
    let _ = writeln!(out, "{scene},{im},1,{score},{},{},{time}", r.join(" "), t.join(" "));
}

fn shifted_x(p: &Pose, dx: f64) -> Pose {
    Pose::new(p.r, p.t + nalgebra::Vector3::new(dx, 0.0, 0.0))
}

fn run_json(args: &[&str], json: &Path) -> (String, Value) {
    let mut all = args.to_vec();
    all.extend(["--json", s(json)]);
    let o = sam6d(&all);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    (String::from_utf8_lossy(&o.stdout).into_owned(), v)
}

fn close(v: &Value, want: f64, what: &str) {
    let got = v.as_f64().unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!((got - want).abs() < 1e-9, "{what}: {got} != {want}");
}

#[test]
fn eval_scores_hand_written_predictions() {
    let f = fixture();
    let d = f.mesh.diameter() as f64;
    let (g1, g2, g3) = (&f.gt[0], &f.gt[1], &f.gt[2]);
    assert_eq!((g1.len(), g2.len(), g3.len()), (1, 2, 1));

    // Image 1: exact (score 0.9) and an extra far-off estimate (0.1) beyond the one target;
    // image 2: instance 0 exact, instance 1 shifted by 0.07 d along the camera x axis;
    // image 3: nothing; image 99 is not in the scene.
    let mut csv = "scene_id,im_id,obj_id,score,R,t,time\n".to_string();
    csv_row(&mut csv, 7, 1, 0.9, &g1[0], 0.5);
    csv_row(&mut csv, 7, 1, 0.1, &shifted_x(&g1[0], 300.0), 0.5);
    csv_row(&mut csv, 7, 2, 0.8, &g2[0], 1.5);
    csv_row(&mut csv, 7, 2, 0.7, &shifted_x(&g2[1], 0.07 * d), 1.5);
    csv_row(&mut csv, 7, 99, 0.9, &g1[0], 3.0);
    let pred = f.root.join("results.csv");
    std::fs::write(&pred, &csv).unwrap();

    // By hand. 4 targets (all brackets are well visible). MSSD of the shifted estimate = 0.07 d
    // (a pure translation moves every vertex by it): found at 0.10 … 0.50 d, not at 0.05 d.
    // MSSD recall: 2/4 at 0.05, 3/4 at the 9 others → AR_MSSD = (0.5 + 9 · 0.75) / 10 = 0.725.
    // MSPD of the shift dx along camera x: Δu = fx · dx / z, largest at the nearest vertex.
    let z_min = f.mesh.vertices.iter().map(|v| g2[1].apply(&v.cast()).z).fold(f64::INFINITY, f64::min);
    let mspd = f.camera.fx * 0.07 * d / z_min;
    let mspd_recall: Vec<f64> = (1..=10).map(|k| if mspd < 5.0 * k as f64 { 0.75 } else { 0.5 }).collect();
    let ar_mspd = mspd_recall.iter().sum::<f64>() / 10.0;
    // ADD = 0.07 d < 0.1 d: 3 of 4; ADI ≤ ADD; no symmetry: ADD(-S) = ADD.
    let json = f.root.join("scores.json");
    let (out, v) = run_json(&["eval", "--scene", &f.scene, "--pred", s(&pred), "--models", &f.models], &json);
    let all = &v["overall"];
    assert_eq!(all["targets"], 4);
    assert_eq!(all["estimates"], 3);
    assert_eq!(all["hits_mssd"], serde_json::json!([2, 3, 3, 3, 3, 3, 3, 3, 3, 3]));
    close(&all["ar_mssd"], 0.725, "AR_MSSD");
    for (k, want) in mspd_recall.iter().enumerate() {
        close(&all["recall_mspd"][k], *want, &format!("MSPD recall {k} (MSPD {mspd:.2} px)"));
    }
    close(&all["ar_mspd"], ar_mspd, "AR_MSPD");
    // VSD (the scene has depth): the two exact estimates are right at all 100 (τ, θ) pairs; the
    // bracket shifted sideways by 0.07 d leaves too much of both silhouettes unmatched at every
    // θ ≤ 0.5, so 2 of 4 targets are found → AR_VSD 0.5, and AR is the mean of the three.
    close(&all["ar_vsd"], 0.5, "AR_VSD");
    close(&all["ar"], (0.5 + 0.725 + ar_mspd) / 3.0, "AR");
    close(&all["add_recall"], 0.75, "ADD");
    close(&all["adi_recall"], 0.75, "ADI");
    close(&all["add_s_recall"], 0.75, "ADD(-S)");
    // Errors of the 3 matched targets: 0, 0, 0.07 d → median 0.
    assert_eq!(all["matched"], 3);
    assert!(all["median_translation_error_mm"].as_f64().unwrap() < 1e-6);
    assert!(all["median_rotation_error_deg"].as_f64().unwrap() < 1e-3);
    // Times of images 1 and 2 (image 99 is not in the scene).
    assert_eq!(v["time"]["frames"], 2);
    close(&v["time"]["mean_s"], 1.0, "mean time");
    close(&v["time"]["median_s"], 1.0, "median time");
    let p = &v["predictions"];
    assert_eq!((p["rows"].as_u64(), p["rows_for_unknown_images"].as_u64(), p["rows_beyond_top_n"].as_u64()), (Some(5), Some(1), Some(1)));
    let obj = &v["objects"][0];
    assert_eq!((obj["obj_id"].as_u64(), obj["symmetric"].as_bool(), obj["diameter_source"].as_str()), (Some(1), Some(false), Some("models_info.json")));
    assert_eq!(obj["targets"], 4);
    assert_eq!(v["scenes"][0]["scene_id"], 7);
    assert_eq!(v["scenes"][0]["image_width"], 640);
    // The table: one row per object and the overall one, the ignored rows, the VSD column.
    let all_row = out.lines().find(|l| l.trim_start().starts_with("all")).unwrap_or_else(|| panic!("no 'all' row: {out}"));
    assert!(all_row.contains("0.725") && all_row.contains("0.750"), "{all_row}");
    for needle in ["1 row(s) for images not in the given scenes", "1 row(s) beyond the top n", "AR_VSD", "mean 1.000 s"] {
        assert!(out.contains(needle), "stdout lacks {needle:?}:\n{out}");
    }

    // The same estimates as batch JSON lines (plus a failed frame), scored with a models folder
    // without models_info.json: same figures, diameter from the mesh, and a note saying so.
    let mut jsonl = String::new();
    let frame = |im: u32, poses: &[(Pose, f64)], time: f64| {
        let rot: Vec<_> = poses.iter().map(|(p, _)| p.rotation_rows()).collect();
        let tr: Vec<_> = poses.iter().map(|(p, _)| p.translation_array()).collect();
        let sc: Vec<_> = poses.iter().map(|(_, s)| *s).collect();
        serde_json::json!({"frame": {"name": format!("{im:06}"), "scene_id": 7, "im_id": im}, "obj_id": 1, "object": "obj_000001",
            "rotation": rot, "translation": tr, "pose_scores": sc, "time_s": time})
        .to_string()
    };
    let _ = writeln!(jsonl, "{}", frame(1, &[(g1[0], 0.9), (shifted_x(&g1[0], 300.0), 0.1)], 0.5));
    let _ = writeln!(jsonl, "{}", frame(2, &[(g2[0], 0.8), (shifted_x(&g2[1], 0.07 * d), 0.7)], 1.5));
    let _ = writeln!(jsonl, r#"{{"frame": {{"name": "000003", "scene_id": 7, "im_id": 3}}, "inputs": {{}}, "error": "depth unreadable"}}"#);
    let pred = f.root.join("results.jsonl");
    std::fs::write(&pred, &jsonl).unwrap();
    let (out, w) = run_json(&["eval", "--scene", &f.scene, "--pred", s(&pred), "--models", &f.models_no_info], &json);
    for key in ["targets", "estimates", "hits_mssd", "hits_mspd", "add_recall", "adi_recall", "matched"] {
        assert_eq!(w["overall"][key], v["overall"][key], "{key}");
    }
    assert_eq!(w["predictions"]["error_lines"], 1);
    assert_eq!(w["objects"][0]["diameter_source"], "mesh");
    assert!(out.contains("no models_info.json") && out.contains("1 failed frame(s)"), "{out}");
}

#[test]
fn eval_input_errors_are_clear() {
    let f = fixture();
    let g = &f.gt[0][0];
    let mut csv = "scene_id,im_id,obj_id,score,R,t,time\n".to_string();
    csv_row(&mut csv, 7, 1, 0.9, g, 0.5);
    csv.push_str("7,2,1,0.5,1 0 0 0 1 0 0 0,0 0 500,0.1\n");
    let bad = f.root.join("bad.csv");
    std::fs::write(&bad, &csv).unwrap();
    let o = sam6d(&["eval", "--scene", &f.scene, "--pred", s(&bad), "--models", &f.models]);
    expect_error(&o, 1, &["bad.csv line 3", "R has 8 numbers"]);

    // An estimate for an object with no model.
    let mut csv = "scene_id,im_id,obj_id,score,R,t,time\n".to_string();
    csv_row(&mut csv, 7, 1, 0.9, g, 0.5);
    csv.push_str("7,1,2,0.5,1 0 0 0 1 0 0 0 1,0 0 500,0.1\n");
    let other = f.root.join("other.csv");
    std::fs::write(&other, &csv).unwrap();
    let o = sam6d(&["eval", "--scene", &f.scene, "--pred", s(&other), "--models", &f.models]);
    expect_error(&o, 1, &["object 2", "obj_000002.ply"]);

    // Missing files and folders.
    let o = sam6d(&["eval", "--scene", s(&f.root.join("000008")), "--pred", s(&other), "--models", &f.models]);
    expect_error(&o, 1, &["000008", "does not exist"]);
    let o = sam6d(&["eval", "--scene", &f.scene, "--pred", s(&f.root.join("nope.csv")), "--models", &f.models]);
    expect_error(&o, 1, &["nope.csv"]);
    std::fs::remove_file(Path::new(&f.scene).join("scene_camera.json")).unwrap();
    let o = sam6d(&["eval", "--scene", &f.scene, "--pred", s(&other), "--models", &f.models]);
    expect_error(&o, 1, &["scene_camera.json"]);
    // Usage: --scene is required.
    let o = sam6d(&["eval", "--pred", s(&other), "--models", &f.models]);
    expect_error(&o, 2, &["--scene"]);
}

/// The real chain: `infer` over a BOP scene of 4 synthetic bracket frames writes a BOP19 CSV
/// and JSON lines, `eval` scores the CSV. With one bracket per frame, n = 1 and each frame's
/// figure comes from its best estimate alone, so every recall can be recomputed here from the
/// JSON lines' first pose against scene_gt.json with `sam6d::geometry::metrics`.
#[test]
fn eval_of_a_real_infer_run_agrees_with_its_json_lines() {
    use sam6d::geometry::metrics;
    let dir = tempfile::tempdir().unwrap();
    let target = synth::procedural_targets().into_iter().find(|t| t.name == "bracket").unwrap();
    let mut frames: Vec<SyntheticFrame> = (31..35)
        .map(|seed| {
            let mut spec = SceneSpec::new(seed, vec![SceneTarget { object: target.clone(), instances: 1 }]);
            spec.occlusion = 0.0;
            synth::generate(&spec)
        })
        .collect();
    // Frame 4: no depth over the bracket's bounding box, so that it cannot be found there (no
    // estimate, or one on something else) and the recalls are not all 1.
    let f4 = &mut frames[3];
    let px = synth::scene::project_vertices(&target.mesh, &f4.gt[0].pose, &f4.camera);
    let (w, h) = (f4.depth.width, f4.depth.height);
    let (u0, u1) = px.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p[0]), b.max(p[0])));
    let (v0, v1) = px.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p[1]), b.max(p[1])));
    for v in (v0.max(0.0) as usize)..(v1.ceil().min(h as f64) as usize) {
        for u in (u0.max(0.0) as usize)..(u1.ceil().min(w as f64) as usize) {
            f4.depth.mm[v * w + u] = 0.0;
        }
    }
    let scene = dir.path().join("000003");
    let bop: Vec<BopFrame> = frames.iter().enumerate().map(|(i, f)| BopFrame { im_id: i as u32 + 1, frame: f }).collect();
    write_scene(&scene, &bop, 1.0, |n| (n == "bracket").then_some(2)).unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let cad = models.join("obj_000002.ply");
    sam6d::geometry::ply::write_ascii_ply(&target.mesh, &cad).unwrap();
    let d = target.mesh.diameter() as f64;
    std::fs::write(models.join("models_info.json"), format!(r#"{{"2": {{"diameter": {d}}}}}"#)).unwrap();

    let (csv, jsonl, json) = (dir.path().join("out.csv"), dir.path().join("out.jsonl"), dir.path().join("e.json"));
    let o = sam6d(&["infer", "--scene", s(&scene), "--cad", s(&cad), "--bop-csv", s(&csv), "--jsonl", s(&jsonl)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (out, v) = run_json(&["eval", "--scene", s(&scene), "--pred", s(&csv), "--models", s(&models)], &json);

    // Per frame: the errors of the best estimate against the ground truth, or none.
    let lines: Vec<Value> = std::fs::read_to_string(&jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    let mut errors: Vec<Option<(f64, f64, f64)>> = Vec::new();
    let mut targets = 0;
    for line in &lines {
        assert!(line.get("error").is_none(), "{line}");
        let im = line["frame"]["im_id"].as_u64().unwrap() as usize;
        assert_eq!((line["frame"]["scene_id"].as_u64(), line["obj_id"].as_u64()), (Some(3), Some(2)));
        let f = &frames[im - 1];
        let gt = &f.gt[0];
        if gt.visible_fraction < 0.1 {
            continue; // not a target (BOP19), and no other instance to count
        }
        targets += 1;
        errors.push((!line["pose_scores"].as_array().unwrap().is_empty()).then(|| {
            let est = super::parse_pose(line, 0);
            let pts = &target.mesh.vertices;
            (metrics::add(&est, &gt.pose, pts), metrics::mssd(&est, &gt.pose, pts), metrics::mspd(&est, &gt.pose, pts, &f.camera))
        }));
    }
    assert_eq!(targets, 4, "the brackets are unoccluded: all targets");
    assert!(errors[3].is_none_or(|e| e.0 > 0.1 * d), "frame 4 has no depth on the bracket: {:?}", errors[3]);
    let all = &v["overall"];
    assert_eq!(all["targets"], targets);
    let found = errors.iter().flatten().count();
    assert_eq!(all["estimates"], found, "top 1 per frame");
    assert_eq!(v["time"]["frames"], lines.iter().filter(|l| !l["pose_scores"].as_array().unwrap().is_empty()).count());

    // Hits below `th`, allowing for the JSON lines' rounding right at a threshold.
    let check = |got: &Value, err: fn(&(f64, f64, f64)) -> f64, th: f64, what: &str| {
        let got = got.as_f64().unwrap_or_else(|| panic!("{what}: {got}")) * targets as f64;
        let below = |x: f64| errors.iter().flatten().filter(|e| err(e) < x).count() as f64;
        let eps = 1e-3 * th.max(1.0);
        assert!(below(th - eps) - 1e-9 <= got && got <= below(th + eps) + 1e-9, "{what}: eval found {got} of {targets}, the JSON lines give {}", below(th));
    };
    check(&all["add_recall"], |e| e.0, 0.1 * d, "ADD-0.1d");
    for (k, f) in metrics::mssd_thresholds().into_iter().enumerate() {
        check(&all["recall_mssd"][k], |e| e.1, f * d, &format!("MSSD < {f:.2} d"));
    }
    for (k, th) in metrics::mspd_thresholds(640).into_iter().enumerate() {
        check(&all["recall_mspd"][k], |e| e.2, th, &format!("MSPD < {th} px"));
    }
    // AR is the mean of the recalls above; the three intact frames are found, frame 4 is not.
    let ar = all["ar"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&ar), "{ar}");
    let mean = |key: &str| all[key].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).sum::<f64>() / 10.0;
    assert!((ar - 0.5 * (mean("recall_mssd") + mean("recall_mspd"))).abs() < 1e-12);
    assert!((0.6..=0.75).contains(&ar) && all["add_recall"].as_f64().unwrap() >= 0.6, "AR {ar}, ADD {}\n{out}", all["add_recall"]);
    assert!(out.contains("       2 "), "a row for object 2:\n{out}");
}
