//! `sam6d infer --overlay`: the picture is SAM-6D's vis_pem.png layout (input | drawing), and
//! what is drawn lands on the object: checked against the official reference picture and
//! against a ground-truth rendering.
use super::{convex_hull, example_dir, parse_pose, s, sam6d, stderr};
use image::RgbImage;
use sam6d::geometry::{Mesh, Pose};
use sam6d::io::Camera;
use sam6d::render::overlay::{box_corners, BOX_EDGES, PALETTE};
use serde_json::Value;
use std::path::Path;

/// Runs `infer --overlay` and returns (overlay, the answer's JSON).
fn infer_overlay(rgb: &Path, depth: &Path, cam: &Path, cad: &Path, extra: &[&str]) -> (RgbImage, Value) {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("out.png");
    let args = [&["infer", "--rgb", s(rgb), "--depth", s(depth), "--cam", s(cam), "--cad", s(cad), "--overlay", s(&png)], extra].concat();
    let o = sam6d(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["overlay"].as_str(), Some(s(&png)));
    (image::open(&png).unwrap().to_rgb8(), v)
}

/// The layout: twice as wide, the left half the input exactly, something drawn on the right.
fn check_layout(out: &RgbImage, rgb: &RgbImage) {
    let (w, h) = rgb.dimensions();
    assert_eq!(out.dimensions(), (2 * w, h), "overlay size");
    let left_diff = (0..h).flat_map(|y| (0..w).map(move |x| (x, y))).filter(|&(x, y)| out.get_pixel(x, y) != rgb.get_pixel(x, y)).count();
    assert_eq!(left_diff, 0, "the left half differs from the input RGB in {left_diff} pixels");
}

/// Right-half pixels that differ from the input, with their colours.
fn changed(img: &RgbImage, rgb: &RgbImage) -> Vec<(u32, u32, [u8; 3])> {
    let w = rgb.width();
    rgb.enumerate_pixels().filter(|&(x, y, p)| img.get_pixel(x + w, y) != p).map(|(x, y, _)| (x, y, img.get_pixel(x + w, y).0)).collect()
}

fn project(cam: &Camera, pose: &Pose, p: &nalgebra::Vector3<f64>) -> [f64; 2] {
    let q = pose.apply(p);
    cam.project([q.x, q.y, q.z])
}

fn seg_dist(p: [f64; 2], a: [f64; 2], b: [f64; 2]) -> f64 {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let l2 = dx * dx + dy * dy;
    let t = if l2 > 0.0 { (((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / l2).clamp(0.0, 1.0) } else { 0.0 };
    ((p[0] - a[0] - t * dx).powi(2) + (p[1] - a[1] - t * dy).powi(2)).sqrt()
}

/// Our model-point pixels: the best instance's exact colour, away from its box edges (the
/// front edges share the colour). The pose must be in front of the camera.
fn point_pixels(changed: &[(u32, u32, [u8; 3])], mesh: &Mesh, cam: &Camera, pose: &Pose) -> Vec<[f64; 2]> {
    let corners: Vec<[f64; 2]> = box_corners(mesh).iter().map(|c| project(cam, pose, c)).collect();
    changed
        .iter()
        .filter(|c| c.2 == PALETTE[0])
        .map(|&(x, y, _)| [x as f64, y as f64])
        .filter(|&p| BOX_EDGES.iter().all(|&(i, j)| seg_dist(p, corners[i], corners[j]) > 3.0))
        .collect()
}

/// Inside the hull, or within `margin` px of it.
fn near_hull(hull: &[[f64; 2]], p: [f64; 2], margin: f64) -> bool {
    let n = hull.len();
    let inside = n >= 3 && (0..n).all(|i| {
        let (a, b) = (hull[i], hull[(i + 1) % n]);
        (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]) >= 0.0
    });
    inside || (0..n).any(|i| seg_dist(p, hull[i], hull[(i + 1) % n]) <= margin)
}

#[test]
fn overlay_of_the_official_example_matches_sam6d_vis_pem() {
    let Some(e) = example_dir() else {
        eprintln!("skipped: ../shared/testdata/sam6d-example not present");
        return;
    };
    let (rgb_path, cam_path, cad_path) = (e.join("rgb.png"), e.join("camera.json"), e.join("obj_000005.ply"));
    let (out, v) = infer_overlay(&rgb_path, &e.join("depth.png"), &cam_path, &cad_path, &[]);
    let rgb = image::open(&rgb_path).unwrap().to_rgb8();
    check_layout(&out, &rgb);

    let mesh = sam6d::geometry::ply::read_ply(&cad_path).unwrap();
    let cam = Camera::from_json_file(&cam_path, None).unwrap();
    let pose = parse_pose(&v, 0);
    let ours = changed(&out, &rgb);
    let points = point_pixels(&ours, &mesh, &cam, &pose);
    assert!(points.len() > 500, "only {} model-point pixels drawn", points.len());

    // The reference draws points and the box's top face in pure red, the pillars and the
    // bottom face in darker reds (SAM-6D's draw_3d_bbox: 1.0, 0.6, 0.3 × the colour).
    let reference = image::open(e.join("reference-output/vis_pem.png")).unwrap().to_rgb8();
    assert_eq!(reference.dimensions(), (1280, 480));
    let theirs = changed(&reference, &rgb);
    let red = |c: &[u8; 3], min_r: u8| c[0] >= min_r && c[1] <= 40 && c[2] <= 40;
    let ref_red: Vec<[f64; 2]> = theirs.iter().filter(|c| red(&c.2, 200)).map(|&(x, y, _)| [x as f64, y as f64]).collect();
    let ref_box: Vec<[f64; 2]> = theirs.iter().filter(|c| red(&c.2, 60)).map(|&(x, y, _)| [x as f64, y as f64]).collect();
    assert!(ref_red.len() > 500, "the reference has {} red pixels: is it the right picture?", ref_red.len());

    // Our points fall where the reference's do (dilated by 5 px for sampling and dot size).
    let hull = convex_hull(ref_red);
    let inside = points.iter().filter(|&&p| near_hull(&hull, p, 5.0)).count();
    let frac = inside as f64 / points.len() as f64;
    assert!(frac >= 0.9, "only {:.1} % of our {} model-point pixels lie on the reference's can", 100.0 * frac, points.len());

    // Our box is the reference's box: every projected corner lies on the reference's box
    // drawing, and the two boxes span the same image rectangle.
    let box_hull = convex_hull(ref_box.clone());
    let corners: Vec<[f64; 2]> = box_corners(&mesh).iter().map(|c| project(&cam, &pose, c)).collect();
    for (i, c) in corners.iter().enumerate() {
        assert!(near_hull(&box_hull, *c, 6.0), "box corner {i} at {c:?} is off the reference's box");
    }
    let span = |pts: &[[f64; 2]]| {
        pts.iter().fold([f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY], |r, p| [r[0].min(p[0]), r[1].min(p[1]), r[2].max(p[0]), r[3].max(p[1])])
    };
    let (a, b) = (span(&corners), span(&ref_box));
    for k in 0..4 {
        assert!((a[k] - b[k]).abs() <= 10.0, "box extents differ: ours {a:?}, reference {b:?}");
    }
    // And our box is drawn: changed pixels in box shades run along every projected edge.
    for &(i, j) in &BOX_EDGES {
        let along = (1..10).filter(|k| {
            let t = *k as f64 / 10.0;
            let p = [corners[i][0] + (corners[j][0] - corners[i][0]) * t, corners[i][1] + (corners[j][1] - corners[i][1]) * t];
            ours.iter().any(|&(x, y, c)| red(&c, 60) && (x as f64 - p[0]).abs() <= 1.5 && (y as f64 - p[1]).abs() <= 1.5)
        });
        assert!(along.count() >= 8, "box edge {i}-{j} is not drawn");
    }
}

#[test]
fn overlay_points_of_the_bundled_scene_fall_on_the_ground_truth_silhouette() {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/synthetic-bracket");
    let (rgb_path, cam_path, cad_path) = (d.join("rgb.png"), d.join("camera.json"), d.join("model.ply"));
    let (out, v) = infer_overlay(&rgb_path, &d.join("depth.png"), &cam_path, &cad_path, &["--max-instances", "1"]);
    let rgb = image::open(&rgb_path).unwrap().to_rgb8();
    check_layout(&out, &rgb);

    let gt: Value = serde_json::from_str(&std::fs::read_to_string(d.join("gt.json")).unwrap()).unwrap();
    let r: [[f64; 3]; 3] = serde_json::from_value(gt[0]["R"].clone()).unwrap();
    let t: [f64; 3] = serde_json::from_value(gt[0]["t_mm"].clone()).unwrap();
    let gt_pose = Pose::from_rows(&r, &t);
    let mesh = sam6d::geometry::ply::read_ply(&cad_path).unwrap();
    let cam = Camera::from_json_file(&cam_path, None).unwrap();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let silhouette = sam6d::render::raster::render_depth(&mesh, &cam, &gt_pose, w, h);
    // Dots are plus shapes around the pixel nearest a surface point: 2 px of slack.
    let on_object = |p: [f64; 2]| {
        (-2i64..=2).any(|dy| {
            (-2i64..=2).any(|dx| {
                let (x, y) = (p[0] as i64 + dx, p[1] as i64 + dy);
                x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h && silhouette[y as usize * w + x as usize] > 0.0
            })
        })
    };
    let points = point_pixels(&changed(&out, &rgb), &mesh, &cam, &parse_pose(&v, 0));
    assert!(points.len() > 200, "only {} model-point pixels drawn", points.len());
    let inside = points.iter().filter(|&&p| on_object(p)).count();
    let frac = inside as f64 / points.len() as f64;
    assert!(frac >= 0.95, "only {:.1} % of {} model-point pixels on the ground-truth silhouette", 100.0 * frac, points.len());
    // And they cover it: the points spread over most of the silhouette's extent.
    let sil: Vec<[f64; 2]> = (0..w * h).filter(|&i| silhouette[i] > 0.0).map(|i| [(i % w) as f64, (i / w) as f64]).collect();
    let extent = |pts: &[[f64; 2]]| {
        let (x0, x1) = (pts.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min), pts.iter().map(|p| p[0]).fold(f64::NEG_INFINITY, f64::max));
        let (y0, y1) = (pts.iter().map(|p| p[1]).fold(f64::INFINITY, f64::min), pts.iter().map(|p| p[1]).fold(f64::NEG_INFINITY, f64::max));
        (x1 - x0, y1 - y0)
    };
    let (ours, theirs) = (extent(&points), extent(&sil));
    assert!(ours.0 >= 0.8 * theirs.0 && ours.1 >= 0.8 * theirs.1, "points span {ours:?}, silhouette {theirs:?}");
}
