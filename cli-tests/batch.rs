//! Batch `infer`: folders, `*` patterns and BOP scenes of synthetic frames (small, 320×240), one
//! of them corrupt; every output (per-frame JSON, JSON lines, BOP CSV, stdout) checked against
//! the others and against single-frame `infer`.
use super::{expect_error, s, sam6d, stderr};
use sam6d::geometry::Pose;
use sam6d::synth::{self, bop::BopFrame, SceneSpec, SceneTarget, SyntheticFrame};
use serde_json::Value;
use std::path::Path;

const N: usize = 5;
/// The frame whose colour image is junk.
const CORRUPT: &str = "000006";

/// `N` small frames of the bracket (object id 7), one instance each, no occluders.
fn frames() -> Vec<SyntheticFrame> {
    use rayon::prelude::*;
    let target = synth::procedural_targets().into_iter().find(|t| t.name == "bracket").unwrap();
    (0..N as u64)
        .into_par_iter()
        .map(|seed| {
            let mut spec = SceneSpec::new(100 + seed, vec![SceneTarget { object: target.clone(), instances: 1 }]);
            let k = synth::KINECT;
            spec.camera = sam6d::io::Camera::new(k.fx / 2.0, k.fy / 2.0, k.cx / 2.0, k.cy / 2.0, 1.0).unwrap();
            (spec.width, spec.height, spec.distractors, spec.occlusion) = (320, 240, 1, 0.0);
            synth::generate(&spec)
        })
        .collect()
}

/// Writes the frames as a BOP scene `dir/000012` (depth in 0.1 mm, as T-LESS) with a corrupt
/// frame 6, plus the model `dir/obj_000007.ply`. Returns the scene folder.
fn write_bop_fixture(dir: &Path, frames: &[SyntheticFrame]) -> std::path::PathBuf {
    let scene = dir.join("000012");
    let list: Vec<BopFrame> = frames.iter().enumerate().map(|(i, f)| BopFrame { im_id: i as u32 + 1, frame: f }).collect();
    synth::bop::write_scene(&scene, &list, 0.1, |name| (name == "bracket").then_some(7)).unwrap();
    std::fs::write(scene.join(format!("rgb/{CORRUPT}.png")), b"\x89PNG truncated").unwrap();
    std::fs::copy(scene.join("depth/000001.png"), scene.join(format!("depth/{CORRUPT}.png"))).unwrap();
    let cameras = scene.join("scene_camera.json");
    let mut entries: Value = serde_json::from_str(&std::fs::read_to_string(&cameras).unwrap()).unwrap();
    entries["6"] = entries["1"].clone();
    std::fs::write(&cameras, entries.to_string()).unwrap();
    let bracket = synth::procedural_targets().into_iter().find(|t| t.name == "bracket").unwrap();
    sam6d::geometry::ply::write_ascii_ply(&bracket.mesh, &dir.join("obj_000007.ply")).unwrap();
    scene
}

fn read_jsonl(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

fn numbers(text: &str) -> Vec<f64> {
    text.split(' ').map(|x| x.parse().unwrap()).collect()
}

fn pose_of(v: &Value, i: usize) -> Pose {
    super::parse_pose(v, i)
}

fn assert_same_poses(a: &Value, b: &Value, what: &str) {
    let n = a["pose_scores"].as_array().unwrap().len();
    assert_eq!(n, b["pose_scores"].as_array().unwrap().len(), "{what}: instance counts differ");
    for i in 0..n {
        let (p, q) = (pose_of(a, i), pose_of(b, i));
        assert!((p.r - q.r).abs().max() < 1e-9 && (p.t - q.t).abs().max() < 1e-6, "{what}: pose {i} differs: {p:?} vs {q:?}");
    }
}

#[test]
fn batch_over_folders_writes_every_output_and_records_the_corrupt_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let scene = write_bop_fixture(tmp.path(), &frames());
    // The folder-pair form reads the scene's rgb/ and depth/ with one camera.json (depth in 0.1 mm),
    // plus two files without a partner.
    let k = synth::KINECT;
    let cam = tmp.path().join("camera.json");
    std::fs::write(&cam, format!(r#"{{"cam_K": [{}, 0, {}, 0, {}, {}, 0, 0, 1], "depth_scale": 0.1}}"#, k.fx / 2.0, k.cx / 2.0, k.fy / 2.0, k.cy / 2.0)).unwrap();
    std::fs::copy(scene.join("rgb/000001.png"), scene.join("rgb/extra.png")).unwrap();
    std::fs::copy(scene.join("depth/000001.png"), scene.join("depth/orphan.png")).unwrap();
    let (out, jsonl, csv) = (tmp.path().join("out"), tmp.path().join("poses.jsonl"), tmp.path().join("poses.csv"));
    let cad = tmp.path().join("obj_000007.ply");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["infer", "--rgb-dir", s(&scene.join("rgb")), "--depth-dir", s(&scene.join("depth")), "--cam", s(&cam), "--cad", s(&cad)]
            .iter()
            .map(|x| x.to_string())
            .collect();
        a.extend(["--output-dir", s(&out), "--jsonl", s(&jsonl), "--bop-csv", s(&csv)].iter().map(|x| x.to_string()));
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let run = |extra: &[&str]| sam6d(&args(extra).iter().map(String::as_str).collect::<Vec<_>>());

    let o = run(&[]);
    let err = stderr(&o);
    // Exit 1: one frame failed; the others were still estimated and written.
    expect_error(&o, 1, &["1 of 6 frame(s) failed", CORRUPT]);
    assert!(o.stdout.is_empty(), "stdout must stay clean without --format json");
    // Unmatched files are listed; non-TTY progress is one line per frame, in order.
    for needle in ["2 file(s) have no colour/depth partner", "extra.png", "orphan.png", "[1/6] 000001: 1 instance(s)", "[6/6] 000006: error:", "6 frame(s): 5 ok, 1 failed"] {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }

    let records = read_jsonl(&std::fs::read_to_string(&jsonl).unwrap());
    assert_eq!(records.len(), N + 1);
    let mut expected_rows = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let name = format!("{:06}", i + 1);
        assert_eq!(r["frame"]["name"], name.as_str());
        assert_eq!(r["frame"]["im_id"], i as i64 + 1);
        assert_eq!(r["frame"]["scene_id"], Value::Null);
        assert_eq!(r["obj_id"], 7);
        // The per-frame file holds the same record.
        let file: Value = serde_json::from_str(&std::fs::read_to_string(out.join(format!("{name}.json"))).unwrap()).unwrap();
        assert_eq!(&file, r);
        if name == CORRUPT {
            let msg = r["error"].as_str().expect("an error record");
            assert!(msg.contains("000006.png") && msg.contains("PNG"), "{msg}");
            assert!(r["inputs"]["rgb"].as_str().unwrap().ends_with("000006.png"));
            assert!(r.get("rotation").is_none());
            continue;
        }
        assert!(r.get("error").is_none(), "{r}");
        assert_eq!(r["object"], "obj_000007");
        assert_eq!(r["image_size"]["width"], 320);
        assert!(r["time_s"].as_f64().unwrap() > 0.0);
        let n = r["pose_scores"].as_array().unwrap().len();
        assert!(n >= 1, "frame {name}: no instance");
        for k in 0..n {
            expected_rows.push((i as i64 + 1, k, r.clone()));
        }
    }

    // The BOP CSV parses back to the same poses, ids and times.
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("scene_id,im_id,obj_id,score,R,t,time"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), expected_rows.len(), "{text}");
    for (row, (im_id, k, rec)) in rows.iter().zip(&expected_rows) {
        assert_eq!(row.len(), 7, "{row:?}");
        assert_eq!((row[0], row[1].parse::<i64>().unwrap(), row[2]), ("0", *im_id, "7"));
        assert!((row[3].parse::<f64>().unwrap() - rec["pose_scores"][*k].as_f64().unwrap()).abs() < 1e-6);
        let (r, t) = (numbers(row[4]), numbers(row[5]));
        let want = pose_of(rec, *k);
        assert_eq!(r.len(), 9);
        assert!(r.iter().zip(want.r.transpose().iter()).all(|(a, b)| (a - b).abs() < 1e-9), "R {r:?} vs {want:?}");
        assert!(t.iter().zip(want.t.iter()).all(|(a, b)| (a - b).abs() < 1e-9), "t {t:?} vs {want:?}");
        assert!((row[6].parse::<f64>().unwrap() - rec["time_s"].as_f64().unwrap()).abs() < 1e-3);
    }

    // A second run refuses to replace anything, before running a frame.
    let before = std::fs::read(&jsonl).unwrap();
    let o = run(&[]);
    expect_error(&o, 1, &["refusing to overwrite", "--overwrite", "poses.jsonl"]);
    assert!(!stderr(&o).contains("[1/6]"), "frames ran before the refusal");
    assert_eq!(std::fs::read(&jsonl).unwrap(), before);
    // --overwrite with two frames in flight: the same results, in the same order; no temp files left.
    let o = run(&["--overwrite", "--jobs", "2"]);
    expect_error(&o, 1, &["1 of 6 frame(s) failed"]);
    let again = read_jsonl(&std::fs::read_to_string(&jsonl).unwrap());
    assert_eq!(again.len(), records.len());
    for (a, b) in again.iter().zip(&records) {
        assert_eq!(a["frame"], b["frame"]);
        if b.get("error").is_none() {
            assert_same_poses(a, b, &format!("--jobs 2, frame {}", b["frame"]["name"]));
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n.to_string_lossy().contains("tmp")).collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    assert!(!tmp.path().join("poses.jsonl.tmp").exists());
}

#[test]
fn batch_over_a_bop_scene_equals_single_frame_infer() {
    let tmp = tempfile::tempdir().unwrap();
    let frames = frames();
    let scene = write_bop_fixture(tmp.path(), &frames);
    let cad = tmp.path().join("obj_000007.ply");
    let vis = tmp.path().join("vis");
    let o = sam6d(&["infer", "--scene", s(&scene), "--cad", s(&cad), "--format", "json", "--quiet", "--vis", s(&vis)]);
    expect_error(&o, 1, &["1 of 6 frame(s) failed"]);
    let err = stderr(&o);
    assert!(!err.contains("[1/6]") && !err.contains("frames/s"), "--quiet printed progress:\n{err}");
    let records = read_jsonl(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(records.len(), N + 1);

    let gt: Value = serde_json::from_str(&std::fs::read_to_string(scene.join("scene_gt.json")).unwrap()).unwrap();
    let mesh = sam6d::geometry::ply::read_ply(&cad).unwrap();
    let mut right = 0;
    for (i, r) in records.iter().take(N).enumerate() {
        let im_id = i + 1;
        assert_eq!(r["frame"], serde_json::json!({"name": format!("{im_id:06}"), "scene_id": 12, "im_id": im_id}));
        assert!(vis.join(format!("{im_id:06}.png")).exists());
        // The pose recovers the ground truth written to scene_gt.json.
        let g = &gt[im_id.to_string()][0];
        let rot: Vec<f64> = g["cam_R_m2c"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let t: Vec<f64> = g["cam_t_m2c"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let truth = Pose::new(nalgebra::Matrix3::from_row_slice(&rot), nalgebra::Vector3::from_row_slice(&t));
        let top = pose_of(r, 0);
        right += usize::from(sam6d::geometry::metrics::adi(&top, &truth, &mesh.vertices) < 0.1 * mesh.diameter() as f64);
    }
    assert!(right >= N - 1, "only {right} of {N} frames within 10 % of the diameter");
    let msg = records[N]["error"].as_str().unwrap_or_default();
    assert!(msg.contains("rgb/000006.png") && msg.contains("not a readable PNG"), "{}", records[N]);
    assert!(!vis.join(format!("{CORRUPT}.png")).exists());

    // Single-frame infer on frames 2 and 5, with the scene's camera entry: the same poses.
    for im_id in [2, 5] {
        let name = format!("{im_id:06}");
        let (rgb, depth) = (scene.join(format!("rgb/{name}.png")), scene.join(format!("depth/{name}.png")));
        let cam = scene.join("scene_camera.json");
        let id = im_id.to_string();
        let o = sam6d(&["infer", "--rgb", s(&rgb), "--depth", s(&depth), "--cam", s(&cam), "--cam-frame", &id, "--cad", s(&cad)]);
        assert!(o.status.success(), "{}", stderr(&o));
        let single: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_same_poses(&single, &records[im_id - 1], &format!("frame {name}"));
        assert_eq!(single["pose_scores"], records[im_id - 1]["pose_scores"]);
    }
}

#[test]
fn batch_from_patterns_and_its_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let scene = write_bop_fixture(tmp.path(), &frames()[..2]);
    // caps/<id>_rgb.png and caps/<id>_depth.png, plus an rgb without depth.
    let caps = tmp.path().join("caps");
    std::fs::create_dir(&caps).unwrap();
    for (id, stem) in [("a", "000001"), ("b", "000002")] {
        std::fs::copy(scene.join(format!("rgb/{stem}.png")), caps.join(format!("{id}_rgb.png"))).unwrap();
        std::fs::copy(scene.join(format!("depth/{stem}.png")), caps.join(format!("{id}_depth.png"))).unwrap();
    }
    std::fs::copy(scene.join("rgb/000001.png"), caps.join("c_rgb.png")).unwrap();
    let (rgb, depth) = (caps.join("*_rgb.png"), caps.join("*_depth.png"));
    let cam = scene.join("scene_camera.json");
    let cad = tmp.path().join("obj_000007.ply");
    let base = ["infer", "--rgb", s(&rgb), "--depth", s(&depth), "--cad", s(&cad)];
    let with = |extra: &[&str]| -> Vec<String> { base.iter().chain(extra).map(|x| x.to_string()).collect() };
    let run = |extra: &[&str]| sam6d(&with(extra).iter().map(String::as_str).collect::<Vec<_>>());

    // A scene_camera.json given as --cam needs numeric names: a and b are not image ids.
    let o = run(&["--cam", s(&cam), "--format", "json"]);
    expect_error(&o, 1, &["2 of 2 frame(s) failed", "c_rgb.png"]);
    let records = read_jsonl(&String::from_utf8_lossy(&o.stdout));
    assert!(records[0]["error"].as_str().unwrap().contains("not an image id"), "{}", records[0]);

    // With a camera.json (taken from entry 1: same intrinsics) both frames work: exit 0.
    let one = tmp.path().join("camera.json");
    let entry: Value = serde_json::from_str(&std::fs::read_to_string(&cam).unwrap()).unwrap();
    std::fs::write(&one, entry["1"].to_string()).unwrap();
    let o = run(&["--cam", s(&one), "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let records = read_jsonl(&String::from_utf8_lossy(&o.stdout));
    let names: Vec<&str> = records.iter().map(|r| r["frame"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(records[0]["frame"]["im_id"], Value::Null);

    // The single-frame form with --format json prints the same record for one frame.
    let o = sam6d(&["infer", "--rgb", s(&caps.join("a_rgb.png")), "--depth", s(&caps.join("a_depth.png")), "--cam", s(&one), "--cad", s(&cad), "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let single = read_jsonl(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(single.len(), 1);
    assert_eq!(single[0]["frame"]["name"], "a_rgb");
    assert_eq!(single[0]["obj_id"], 7);
    assert_same_poses(&single[0], &records[0], "single-frame --format json");

    // Usage errors (exit 2) before any work.
    let model = tmp.path().join("model.ply");
    std::fs::copy(&cad, &model).unwrap();
    let csv = tmp.path().join("x.csv");
    expect_error(&sam6d(&["infer", "--scene", s(&scene), "--cad", s(&model), "--bop-csv", s(&csv)]), 2, &["--obj-id"]);
    expect_error(&sam6d(&["infer", "--rgb", s(&rgb), "--depth", s(&caps.join("a_depth.png")), "--cam", s(&one), "--cad", s(&cad), "--format", "json"]), 2, &["both be patterns"]);
    expect_error(&run(&["--cam", s(&one)]), 2, &["somewhere to put results"]);
    expect_error(&run(&["--cam", s(&one), "--format", "json", "--out", "x.json"]), 2, &["--output-dir"]);
    expect_error(&sam6d(&["infer", "--rgb", s(&caps.join("a_rgb.png")), "--depth", s(&caps.join("a_depth.png")), "--cam", s(&one), "--cad", s(&cad), "--jsonl", "x.jsonl"]), 2, &["--jsonl is for batches"]);
    expect_error(&sam6d(&["infer", "--rgb-dir", s(&caps), "--cam", s(&one), "--cad", s(&cad)]), 2, &["--depth-dir"]);
    // Nothing pairs up: an input error (exit 1) that says so.
    let o = sam6d(&["infer", "--rgb", s(&caps.join("*_rgb.png")), "--depth", s(&caps.join("*.jpg")), "--cam", s(&one), "--cad", s(&cad), "--format", "json"]);
    expect_error(&o, 1, &["no colour/depth pairs", "3 file(s) have no colour/depth partner"]);
    // Not a BOP scene.
    expect_error(&sam6d(&["infer", "--scene", s(&caps), "--cad", s(&cad), "--format", "json"]), 1, &["not a BOP scene folder"]);
}

