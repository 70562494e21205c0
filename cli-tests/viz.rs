//! `sam6d viz`: offscreen PNGs of an `infer` result on the bundled synthetic scene, checked
//! against our own rasteriser; clear errors. Rendering needs the `viz` feature (kiss3d) and a
//! Vulkan/GL driver (Mesa's lavapipe works headless: scripts/setup.sh installs it).
use super::{expect_error, sam6d};

#[cfg(not(feature = "viz"))]
#[test]
fn viz_says_how_to_get_it_in_a_build_without_the_feature() {
    let o = sam6d(&["viz", "result.json", "--png", "out.png"]);
    expect_error(&o, 1, &["without the 3D viewer", "--features viz"]);
}

#[cfg(feature = "viz")]
mod with_feature {
    use super::*;
    use crate::{parse_pose, s, stderr};
    use sam6d::geometry::Pose;
    use sam6d::io::Camera;
    use serde_json::Value;
    use std::path::Path;

    fn bracket() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/synthetic-bracket")
    }

    /// `sam6d infer` on the bundled scene, written to DIR/result.json; returns its JSON.
    fn infer_result(dir: &Path) -> Value {
        let b = bracket();
        let out = dir.join("result.json");
        let o = sam6d(&[
            "infer",
            "--rgb",
            s(&b.join("rgb.png")),
            "--depth",
            s(&b.join("depth.png")),
            "--cam",
            s(&b.join("camera.json")),
            "--cad",
            s(&b.join("model.ply")),
            "--out",
            s(&out),
        ]);
        assert!(o.status.success(), "infer: {}", stderr(&o));
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
    }

    /// A pixel whose hue is the score colour's: lighting scales the channels together
    /// (white light, no tone mapping), so the ratios survive shading.
    fn model_like(p: &[u8; 3], want: [f32; 3]) -> bool {
        let m = f32::from(*p.iter().max().unwrap());
        let wm = want.iter().cloned().fold(0.0, f32::max);
        m > 30.0 && (0..3).all(|i| (f32::from(p[i]) / m - want[i] / wm).abs() < 0.15)
    }

    #[test]
    fn viz_png_from_the_camera_puts_the_model_where_the_pose_projects() {
        let dir = tempfile::tempdir().unwrap();
        let v = infer_result(dir.path());
        let png = dir.path().join("out.png");
        let o = sam6d(&["viz", s(&dir.path().join("result.json")), "--png", s(&png), "--size", "320x240"]);
        assert!(o.status.success(), "viz: {}", stderr(&o));
        let img = image::open(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (320, 240));
        let first = img.get_pixel(0, 0);
        assert!(img.pixels().any(|p| p != first), "a uniform picture");

        // Where the model must be: our rasteriser, same pose, the camera scaled to 320x240.
        let cam = Camera::from_json_file(&bracket().join("camera.json"), None).unwrap();
        let half = |c: f64| (c + 0.5) * 0.5 - 0.5;
        let cam = Camera::new(cam.fx * 0.5, cam.fy * 0.5, half(cam.cx), half(cam.cy), 1.0).unwrap();
        let mesh = sam6d::geometry::ply::read_ply(&bracket().join("model.ply")).unwrap();
        let pose: Pose = parse_pose(&v, 0);
        let depth = sam6d::render::raster::render_depth(&mesh, &cam, &pose, 320, 240);
        let want = sam6d::viz::score_color(v["pose_scores"][0].as_f64().unwrap());
        let near_mask = |x: u32, y: u32| {
            (x.saturating_sub(2)..=(x + 2).min(319)).any(|u| (y.saturating_sub(2)..=(y + 2).min(239)).any(|w| depth[(w * 320 + u) as usize] > 0.0))
        };
        let (mut mask, mut hit, mut like, mut like_in) = (0, 0, 0, 0);
        for (x, y, p) in img.enumerate_pixels() {
            let in_mask = depth[(y * 320 + x) as usize] > 0.0;
            let is_like = model_like(&p.0, want);
            mask += in_mask as usize;
            hit += (in_mask && is_like) as usize;
            like += is_like as usize;
            like_in += (is_like && near_mask(x, y)) as usize;
        }
        eprintln!("model pixels {mask}, of which model-coloured {hit}; model-coloured pixels {like}, near the model {like_in}");
        assert!(mask > 100, "the pose projects to only {mask} pixels");
        assert!(hit as f64 > 0.6 * mask as f64, "only {hit} of the {mask} pixels under the model have its colour {want:?}");
        assert!(like_in as f64 > 0.9 * like as f64, "{} model-coloured pixels lie away from where the pose projects", like - like_in);
        let _ = std::fs::copy(&png, std::env::temp_dir().join("sam6d_viz_camera.png"));
    }

    #[test]
    fn viz_png_orbit_view_differs_and_shows_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let v = infer_result(dir.path());
        let result = dir.path().join("result.json");
        let (cam_png, orbit_png) = (dir.path().join("cam.png"), dir.path().join("orbit.png"));
        for (png, view) in [(&cam_png, "camera"), (&orbit_png, "orbit")] {
            let o = sam6d(&["viz", s(&result), "--png", s(png), "--size", "160x120", "--view", view]);
            assert!(o.status.success(), "viz --view {view}: {}", stderr(&o));
        }
        let (a, b) = (image::open(&cam_png).unwrap().to_rgb8(), image::open(&orbit_png).unwrap().to_rgb8());
        let differ = a.pixels().zip(b.pixels()).filter(|(p, q)| p != q).count();
        assert!(differ > 160 * 120 / 10, "the orbit view is nearly the camera view ({differ} pixels differ)");
        let want = sam6d::viz::score_color(v["pose_scores"][0].as_f64().unwrap());
        let like = b.pixels().filter(|p| model_like(&p.0, want)).count();
        assert!(like > 50, "the orbit view shows only {like} model-coloured pixels");
        let _ = std::fs::copy(&orbit_png, std::env::temp_dir().join("sam6d_viz_orbit.png"));
    }

    #[test]
    fn viz_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.to_str().unwrap().to_string()
        };
        let png = dir.path().join("o.png");
        let png = s(&png);
        expect_error(&sam6d(&["viz", &dir.path().join("nope.json").to_string_lossy(), "--png", png]), 1, &["cannot read result file"]);
        expect_error(&sam6d(&["viz", &w("bad.json", "{not json"), "--png", png]), 1, &["not valid JSON"]);
        expect_error(&sam6d(&["viz", &w("nores.json", r#"{"object": "x"}"#), "--png", png]), 1, &["no \"rotation\" list"]);
        let pose = r#""rotation": [[[1,0,0],[0,1,0],[0,0,1]]], "translation": [[0,0,500]], "pose_scores": [0.5]"#;
        let b = bracket();
        // A result of `infer --connect` records no CAD model.
        let remote = format!(r#"{{{pose}, "inputs": {{"rgb": "{}", "depth": "{}", "cam": "{}"}}}}"#, s(&b.join("rgb.png")), s(&b.join("depth.png")), s(&b.join("camera.json")));
        expect_error(&sam6d(&["viz", &w("remote.json", &remote), "--png", png]), 1, &["no CAD model", "--cad"]);
        let missing = format!(r#"{{{pose}, "inputs": {{"rgb": "/nonexistent/rgb.png", "depth": "{}", "cam": "{}", "cad": "{}"}}}}"#, s(&b.join("depth.png")), s(&b.join("camera.json")), s(&b.join("model.ply")));
        expect_error(&sam6d(&["viz", &w("missing.json", &missing), "--png", png]), 1, &["/nonexistent/rgb.png"]);
        expect_error(&sam6d(&["viz", &w("remote2.json", &remote), "--png", png, "--frame", "2", "--cad", s(&b.join("model.ply"))]), 1, &["--frame 2", "1 frame"]);
        expect_error(&sam6d(&["viz", &w("r3.json", &remote), "--png", png, "--size", "big"]), 2, &["WIDTHxHEIGHT"]);
        assert!(!Path::new(png).exists(), "a failed run wrote {png}");
        // The window needs a display; the message points to --png.
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_sam6d"))
            .args(["viz", &dir.path().join("remote.json").to_string_lossy(), "--cad", s(&b.join("model.ply"))])
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .output()
            .unwrap();
        expect_error(&o, 1, &["no display", "--png"]);
    }
    /// The window path under a virtual X server, when Xvfb is installed (apt-get install xvfb
    /// xdotool); skipped otherwise. The viewer must come up and keep running, and quit on Q.
    #[test]
    fn viz_window_opens_under_xvfb_and_quits_on_q() {
        use std::process::{Command, Stdio};
        use std::time::{Duration, Instant};
        if Command::new("Xvfb").arg("-help").stderr(Stdio::null()).status().is_err() {
            eprintln!("skipped: Xvfb not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        infer_result(dir.path());
        let display = format!(":{}", 90 + std::process::id() % 400);
        let mut xvfb = Command::new("Xvfb").args([display.as_str(), "-screen", "0", "800x600x24", "-nolisten", "tcp"]).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let mut viewer = Command::new(env!("CARGO_BIN_EXE_sam6d"))
            .args(["viz", s(&dir.path().join("result.json")), "--size", "320x240"])
            .env("DISPLAY", &display)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(6));
        let early = viewer.try_wait().unwrap();
        // Q through xdotool when there is one; otherwise end it ourselves.
        let quit = Command::new("sh")
            .arg("-c")
            .arg("w=$(xdotool search --sync --name 'sam6d viz' | head -1) && xdotool windowfocus --sync \"$w\" && xdotool key q")
            .env("DISPLAY", &display)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let t0 = Instant::now();
        while quit && viewer.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = viewer.try_wait().unwrap();
        if status.is_none() {
            let _ = viewer.kill();
        }
        let out = viewer.wait_with_output().unwrap();
        let _ = xvfb.kill();
        let _ = xvfb.wait();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(early.is_none(), "the viewer stopped at once ({early:?}): {err}");
        assert!(!err.contains("panicked") && !err.contains("error:"), "{err}");
        if quit {
            assert_eq!(status.and_then(|s| s.code()), Some(0), "Q did not quit the viewer: {err}");
        } else {
            eprintln!("xdotool not installed: checked only that the window came up");
        }
    }
}
