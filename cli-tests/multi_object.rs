//! A `--cad` folder: every model of a BOP models/ folder looked for in each frame of a BOP
//! scene, the objects of each image taken from its scene_gt.json. One record per frame and
//! object, the same poses as one model at a time, one BOP CSV with the image's whole time on
//! every row of it, and `sam6d eval` scoring both objects.
use super::{s, sam6d, stderr};
use sam6d::synth::bop::{write_scene, BopFrame};
use sam6d::synth::{self, SceneSpec, SceneTarget, SyntheticFrame};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Three frames (320×240) holding the mug (object 2) and the bracket (object 7); the models
/// folder also holds the printed box (object 9), which no image shows.
fn fixture(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use rayon::prelude::*;
    let targets = synth::procedural_targets();
    let frames: Vec<SyntheticFrame> = (0..3u64)
        .into_par_iter()
        .map(|i| {
            let list = targets.iter().map(|t| SceneTarget { object: t.clone(), instances: 1 }).collect();
            let mut spec = SceneSpec::new(500 + i, list);
            let k = synth::KINECT;
            spec.camera = sam6d::io::Camera::new(k.fx / 2.0, k.fy / 2.0, k.cx / 2.0, k.cy / 2.0, 1.0).unwrap();
            (spec.width, spec.height, spec.distractors, spec.occlusion) = (320, 240, 1, 0.0);
            synth::generate(&spec)
        })
        .collect();
    let scene = dir.join("000003");
    let bop: Vec<BopFrame> = frames.iter().enumerate().map(|(i, f)| BopFrame { im_id: i as u32 + 1, frame: f }).collect();
    write_scene(&scene, &bop, 1.0, |n| match n {
        "mug" => Some(2),
        "bracket" => Some(7),
        _ => None,
    })
    .unwrap();
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    for (t, id) in targets.iter().zip([2, 7]).chain([(&synth::printed_box(), 9)]) {
        sam6d::geometry::ply::write_ascii_ply(&t.mesh, &models.join(format!("obj_{id:06}.ply"))).unwrap();
    }
    (scene, models)
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn frame_object(r: &Value) -> (i64, i64) {
    (r["frame"]["im_id"].as_i64().unwrap(), r["obj_id"].as_i64().unwrap())
}

#[test]
fn a_models_folder_looks_for_each_listed_object_in_each_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let (scene, models) = fixture(tmp.path());
    let (csv, jsonl, out) = (tmp.path().join("run.csv"), tmp.path().join("run.jsonl"), tmp.path().join("out"));
    let o = sam6d(&["infer", "--scene", s(&scene), "--cad", s(&models), "--bop-csv", s(&csv), "--jsonl", s(&jsonl), "--output-dir", s(&out)]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("[3/3] 000003: 2 objects,") && err.contains("of 3 objects (6 frame-object searches)"), "{err}");

    // Frame order, then the folder's order; object 9 is in no image's scene_gt.json.
    let records = read_jsonl(&jsonl);
    let order: Vec<(i64, i64)> = records.iter().map(frame_object).collect();
    assert_eq!(order, vec![(1, 2), (1, 7), (2, 2), (2, 7), (3, 2), (3, 7)]);
    for r in &records {
        assert!(r.get("error").is_none(), "{r}");
        let (im, obj) = frame_object(r);
        let file: Value = serde_json::from_str(&std::fs::read_to_string(out.join(format!("{im:06}_obj_{obj:06}.json"))).unwrap()).unwrap();
        assert_eq!(&file, r);
    }

    // The CSV: both objects, and one time per image (BOP requires it): the sum of its records'.
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut times: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for row in text.lines().skip(1) {
        let cols: Vec<&str> = row.split(',').collect();
        assert!(["2", "7"].contains(&cols[2]), "{row}");
        times.entry(cols[1].parse().unwrap()).or_default().push(cols[6].parse().unwrap());
    }
    assert_eq!(times.len(), 3, "{text}");
    for (im, t) in &times {
        assert!(t.iter().all(|x| x == &t[0]), "image {im}: times {t:?}");
        let sum: f64 = records.iter().filter(|r| frame_object(r).0 == *im).map(|r| r["time_s"].as_f64().unwrap()).sum();
        assert!((sum - t[0]).abs() < 0.01, "image {im}: CSV time {} vs records {sum}", t[0]);
    }

    // The same poses as the bracket's model alone: sharing a frame's points changes nothing.
    let alone = tmp.path().join("alone.jsonl");
    let o = sam6d(&["infer", "--scene", s(&scene), "--cad", s(&models.join("obj_000007.ply")), "--jsonl", s(&alone)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let alone = read_jsonl(&alone);
    for (a, b) in alone.iter().zip(records.iter().filter(|r| frame_object(r).1 == 7)) {
        assert_eq!(a["rotation"], b["rotation"]);
        assert_eq!(a["translation"], b["translation"]);
    }

    let report = tmp.path().join("eval.json");
    let e = sam6d(&["eval", "--scene", s(&scene), "--pred", s(&csv), "--models", s(&models), "--json", s(&report)]);
    assert!(e.status.success(), "{}", stderr(&e));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let ar = report["overall"]["ar"].as_f64().unwrap();
    eprintln!("AR over 3 frames × 2 objects: {ar:.3}");
    // Measured: 0.732 (the mug 0.667: one of its three missed; the bracket 0.8).
    assert!(ar >= 0.7, "AR {ar:.3} (measured 0.732)");
}

#[test]
fn every_model_with_all_objects_and_a_broken_frame_fails_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (scene, models) = fixture(tmp.path());
    std::fs::remove_file(scene.join("depth/000002.png")).unwrap();
    let jsonl = tmp.path().join("all.jsonl");
    let o = sam6d(&["infer", "--scene", s(&scene), "--cad", s(&models), "--all-objects", "--jsonl", s(&jsonl)]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("[2/3] 000002: 3 objects, 0 instance(s), 3 error(s)") && err.contains("3 frame(s): 2 ok, 1 failed"), "{err}");
    let records = read_jsonl(&jsonl);
    assert_eq!(records.len(), 9);
    for r in &records {
        let (im, obj) = frame_object(r);
        assert_eq!(r.get("error").is_some(), im == 2, "{r}");
        if im == 2 {
            assert!(r["error"].as_str().unwrap().contains("no depth image"), "{r}");
            assert_eq!(r["object"], format!("obj_{obj:06}"));
        }
    }

    // Flags that name one object or one file are refused for a folder, before any work.
    let o = sam6d(&["infer", "--scene", s(&scene), "--cad", s(&models), "--obj-id", "3", "--jsonl", s(&jsonl), "--overwrite"]);
    super::expect_error(&o, 2, &["--obj-id", "is a folder"]);
    let o = sam6d(&["infer", "--scene", s(&scene), "--cad", s(&models), "--jsonl", s(&jsonl)]);
    super::expect_error(&o, 1, &["refusing to overwrite"]);
}
