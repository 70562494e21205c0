use super::*;
use crate::geometry::{Mesh, Vec3};
use nalgebra::{Matrix3, Vector3};

const CAM: Camera = Camera { fx: 500.0, fy: 500.0, cx: 320.0, cy: 240.0, depth_scale: 1.0 };

/// The 8 corners of a box with half-extents (a, b, c), centred on the origin.
fn box_model(a: f64, b: f64, c: f64, syms: Vec<Pose>, symmetric: bool) -> EvalModel {
    let mut pts = vec![];
    for sx in [-1.0, 1.0] {
        for sy in [-1.0, 1.0] {
            for sz in [-1.0, 1.0] {
                pts.push(Vector3::new(sx * a, sy * b, sz * c));
            }
        }
    }
    let diameter = 2.0 * (a * a + b * b + c * c).sqrt();
    // No faces: these tests score without a depth image, so VSD never renders the box.
    EvalModel { obj_id: 1, pts, mesh: Mesh::default(), diameter, diameter_source: "mesh", syms, symmetric }
}

fn at(x: f64, y: f64, z: f64) -> Pose {
    Pose::new(Matrix3::identity(), Vector3::new(x, y, z))
}

fn pred(pose: Pose, score: f64) -> Prediction {
    Prediction { scene_id: 1, im_id: 1, obj_id: 1, score, pose }
}

fn task<'a>(gt: &[Pose], ests: &'a [Prediction]) -> Task<'a> {
    Task { camera: CAM, width: 640, gt: gt.iter().map(|g| (*g, true)).collect(), ests: ests.iter().collect() }
}

#[test]
fn cube_translated_by_0_07_diameters() {
    // Cube of side 100: d = 100·√3. The estimate is shifted by 0.07 d along x, so every
    // vertex moves 0.07 d: MSSD = ADD = 0.07 d. MSSD recall: 0 at 0.05 d, 1 at 0.10 … 0.50
    // → AR_MSSD = 9/10. MSPD: a shift dx at depth z moves the projection by fx·dx/z; the
    // nearest vertices (z = 1000 − 50) move most: 500 · 0.07 d / 950 = 6.38 px → misses
    // 5 px only → AR_MSPD = 9/10.
    let m = box_model(50.0, 50.0, 50.0, vec![Pose::identity()], false);
    let d = 100.0 * 3f64.sqrt();
    assert!((m.diameter - d).abs() < 1e-9);
    let gt = at(0.0, 0.0, 1000.0);
    let ests = [pred(at(0.07 * d, 0.0, 1000.0), 0.9)];
    let s = score_task(&task(&[gt], &ests), &m, None).scores();
    assert_eq!(s.hits_mssd, vec![0, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    assert!((s.ar_mssd - 0.9).abs() < 1e-12);
    let mspd = 500.0 * 0.07 * d / 950.0;
    assert!((mspd - 6.3818).abs() < 1e-3);
    assert_eq!(s.hits_mspd, vec![0, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    assert!((s.ar - 0.9).abs() < 1e-12);
    // ADD = 0.07 d < 0.1 d; ADI ≤ ADD.
    assert_eq!((s.add_recall, s.adi_recall, s.add_s_recall), (1.0, 1.0, 1.0));
    assert!((s.median_translation_error_mm - 0.07 * d).abs() < 1e-9);
    assert!(s.median_rotation_error_deg.abs() < 1e-6);
}

#[test]
fn mspd_of_a_small_offset_by_hand() {
    // Shift 2 mm along x: 500·2/950 = 1.0526 px at the near face. A shift of 10 mm along z
    // (1000 → 1010): the corner (50, 50, −50) projects at 320 + 500·50/950 = 346.316 →
    // 320 + 500·50/960 = 346.042 in u (same in v): |Δ| = √2 · 0.27412 = 0.38766 px; the far
    // corners move less (500·50·(1/1050 − 1/1060) · √2 = 0.3177).
    let m = box_model(50.0, 50.0, 50.0, vec![Pose::identity()], false);
    let gt = at(0.0, 0.0, 1000.0);
    let e = metrics::mspd_sym(&at(2.0, 0.0, 1000.0), &gt, &m.pts, &m.syms, &CAM);
    assert!((e - 1000.0 / 950.0).abs() < 1e-9, "{e}");
    let e = metrics::mspd_sym(&at(0.0, 0.0, 1010.0), &gt, &m.pts, &m.syms, &CAM);
    let want = 2f64.sqrt() * 25000.0 * (1.0 / 950.0 - 1.0 / 960.0);
    assert!((e - want).abs() < 1e-9 && (want - 0.38766).abs() < 1e-4, "{e} {want}");
    // Scored: correct at all 10 MSPD thresholds.
    let s = score_task(&task(&[gt], &[pred(at(2.0, 0.0, 1000.0), 1.0)]), &m, None).scores();
    assert_eq!(s.ar_mspd, 1.0);
}

#[test]
fn flipped_symmetric_box_counts_for_mssd_not_for_add() {
    // Box 100 × 60 × 20 with a discrete 180° symmetry about z. The estimate is the ground
    // truth turned by 180° about z: under the symmetry it is exact (MSSD = MSPD = 0), but
    // each vertex (x, y, z) lands on (−x, −y, z): ADD = 2·√(50² + 30²) = 116.62 mm,
    // d = 2·√(50² + 30² + 10²) = 118.32 mm, so ADD fails 0.1 d; ADI = 0 (the vertex set
    // maps onto itself) passes, and ADD(-S) takes ADI for a symmetric object.
    let flip = [-1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
    let syms = symmetry::symmetry_transformations(&[flip], &[], symmetry::MAX_SYM_DISC_STEP);
    let m = box_model(50.0, 30.0, 10.0, syms, true);
    let gt = at(0.0, 0.0, 800.0);
    let turned = Pose::new(Matrix3::new(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0), gt.t);
    let ests = [pred(turned, 0.5)];
    let s = score_task(&task(&[gt], &ests), &m, None).scores();
    assert_eq!((s.ar_mssd, s.ar_mspd, s.ar), (1.0, 1.0, 1.0));
    assert_eq!((s.add_recall, s.adi_recall, s.add_s_recall), (0.0, 1.0, 1.0));
    assert!((metrics::add_f64(&turned, &gt, &m.pts) - 2.0 * 3400f64.sqrt()).abs() < 1e-9);
    // Measured against the flipped ground truth: no rotation error.
    assert!(s.median_rotation_error_deg.abs() < 1e-6, "{s:?}");
    // The same object without its symmetry: MSSD = 116.62 = 0.986 d, wrong everywhere;
    // ADD(-S) is then plain ADD.
    let plain = box_model(50.0, 30.0, 10.0, vec![Pose::identity()], false);
    let s = score_task(&task(&[gt], &ests), &plain, None).scores();
    assert_eq!((s.ar_mssd, s.add_s_recall), (0.0, 0.0));
    // Too far off (MSSD ≥ 0.5 d) to be matched for the error medians.
    assert_eq!(s.matched, 0);
    assert!(s.median_rotation_error_deg.is_nan());
}

#[test]
fn greedy_matching_two_instances_three_estimates() {
    // Cube (d = 173.2) at x = −200 (A) and x = +200 (B). Estimates by score:
    //   e1 (0.9) 0.12 d from A; e2 (0.8) exactly on A; e3 (0.7) exactly on B.
    // Top n = 2 keeps e1 and e2 (e3 is dropped before matching, as BOP does).
    // MSSD thresholds 0.05 and 0.10 d: e1 matches nothing, e2 takes A → 1 of 2.
    // 0.15 … 0.50 d: e1 takes A first; e2 fits A better but A is taken, B is 400 mm away
    // → 1 of 2. Recall 0.5 at every threshold.
    let m = box_model(50.0, 50.0, 50.0, vec![Pose::identity()], false);
    let d = m.diameter;
    let (a, b) = (at(-200.0, 0.0, 1000.0), at(200.0, 0.0, 1000.0));
    let mut ests = vec![pred(at(-200.0, 0.12 * d, 1000.0), 0.9), pred(a, 0.8), pred(b, 0.7)];
    ests.truncate(2);
    let s = score_task(&task(&[a, b], &ests), &m, None).scores();
    assert_eq!(s.targets, 2);
    assert_eq!(s.hits_mssd, vec![1; 10]);
    assert_eq!(s.ar_mssd, 0.5);
    // ADD at 0.1 d: e1 (0.12 d) fails, e2 takes A → 1 of 2.
    assert_eq!(s.add_recall, 0.5);
    // Matching for the medians (MSSD < 0.5 d): e1 → A (0.12 d); e2 is 400 mm from B → none.
    assert_eq!(s.matched, 1);
    assert!((s.median_translation_error_mm - 0.12 * d).abs() < 1e-9);
    // All three kept (as if there were 3 targets): e3 takes B → 2 hits everywhere.
    let ests = [pred(at(-200.0, 0.12 * d, 1000.0), 0.9), pred(a, 0.8), pred(b, 0.7)];
    let s = score_task(&task(&[a, b], &ests), &m, None).scores();
    assert_eq!(s.hits_mssd, vec![2; 10]);
}

#[test]
fn non_targets_take_part_in_matching_but_do_not_count() {
    // A is a target, B is not (visib_fract < 0.1). One estimate, on B: it matches B, which
    // counts for nothing, and A is missed.
    let m = box_model(50.0, 50.0, 50.0, vec![Pose::identity()], false);
    let (a, b) = (at(-200.0, 0.0, 1000.0), at(200.0, 0.0, 1000.0));
    let ests = [pred(b, 0.9)];
    let t = Task { camera: CAM, width: 640, gt: vec![(a, true), (b, false)], ests: ests.iter().collect() };
    let s = score_task(&t, &m, None).scores();
    assert_eq!((s.targets, s.ar, s.matched), (1, 0.0, 0));
    // MSPD thresholds scale with the width: 1280 px wide → 10 … 100 px.
    assert_eq!(mspd_thresholds(1280)[0], 10.0);
}

/// A 40 mm square facing the camera (d = 40·√2), as in the VSD tests (vsd.rs).
fn square_model() -> EvalModel {
    let v = |x: f32, y: f32| Vec3::new(x, y, 0.0);
    let mesh = Mesh { vertices: vec![v(-20.0, -20.0), v(20.0, -20.0), v(20.0, 20.0), v(-20.0, 20.0)], faces: vec![[0, 1, 2], [0, 2, 3]], ..Default::default() };
    let pts = mesh.vertices.iter().map(|v| v.cast()).collect();
    EvalModel { obj_id: 1, pts, mesh, diameter: 40.0 * 2f64.sqrt(), diameter_source: "mesh", syms: vec![Pose::identity()], symmetric: false }
}

/// 100 × 100 px, fx = 500: the ground-truth square at z = 480 covers columns and rows
/// 30..=70 (see vsd.rs for the pixel counts).
const SQ_CAM: Camera = Camera { fx: 500.0, fy: 500.0, cx: 50.0, cy: 50.0, depth_scale: 1.0 };
const SQ_GT_Z: f64 = 480.0;

/// Measured depth (mm): the ground-truth square on an empty background; with `occluded`,
/// an occluder at z = 400 over the columns x < 50.
fn square_depth(occluded: bool) -> Vec<f32> {
    let mut depth = crate::render::raster::render_depth(&square_model().mesh, &SQ_CAM, &at(0.0, 0.0, SQ_GT_Z), 100, 100);
    for (i, z) in depth.iter_mut().enumerate() {
        if occluded && i % 100 < 50 {
            *z = 400.0;
        }
    }
    depth
}

fn square_task<'a>(ests: &'a [Prediction]) -> Task<'a> {
    Task { camera: SQ_CAM, width: 100, gt: vec![(at(0.0, 0.0, SQ_GT_Z), true)], ests: ests.iter().collect() }
}

#[test]
fn vsd_exact_estimate_is_correct_everywhere_and_a_far_one_nowhere() {
    let m = square_model();
    let test = vsd::TestDist::new(&square_depth(false), &SQ_CAM, 100, 100);
    // On the ground truth: VSD error 0 < every θ, at every τ → 100 hits; AR of three 1s.
    let ests = [pred(at(0.0, 0.0, SQ_GT_Z), 1.0)];
    let s = score_task(&square_task(&ests), &m, Some(&test)).scores();
    assert_eq!(s.hits_vsd, vec![vec![1; 10]; 10]);
    assert_eq!((s.vsd_targets, s.ar_vsd, s.ar_mssd, s.ar_mspd), (1, 1.0, 1.0, 1.0));
    assert!((s.ar - 1.0).abs() < 1e-12);
    // 200 mm to the side (3.5 d): the silhouettes do not overlap, error 1 ≥ every θ.
    let ests = [pred(at(200.0, 0.0, SQ_GT_Z), 1.0)];
    let s = score_task(&square_task(&ests), &m, Some(&test)).scores();
    assert_eq!((s.ar_vsd, s.ar), (0.0, 0.0));
    // Without a depth image the same target has no VSD figure.
    let s = score_task(&square_task(&ests), &m, None).scores();
    assert_eq!(s.vsd_targets, 0);
    assert!(s.ar_vsd.is_nan() && s.recall_vsd[0][0].is_nan());
}

/// The estimate of the half-occluded case: the square 25 mm deeper than the ground truth.
fn deeper() -> Prediction {
    pred(at(0.0, 0.0, SQ_GT_Z + 25.0), 1.0)
}

/// AR_VSD, AR_MSSD, AR_MSPD of [`deeper`] against the half-occluded ground truth, by hand:
/// - VSD (vsd.rs `half_occluded_ground_truth_by_hand`): error 1 at τ ≤ 0.40 (8 τ), and
///   81/861 = 0.094 at τ = 0.45, 0.50, correct for θ = 0.10 … 0.50 (9 θ): 18 of 100 → 0.18.
/// - MSSD: every vertex moves 25 mm = 0.442 d: correct at 0.45, 0.50 d → 0.2.
/// - MSPD: the corners move 500·20·(1/480 − 1/505)·√2 = 1.459 px; the thresholds at width
///   100 are 0.781 k px: correct for k ≥ 2 → 0.9.
const HALF_OCCLUDED: (f64, f64, f64) = (0.18, 0.2, 0.9);

#[test]
fn vsd_half_occluded_recall_by_hand() {
    let test = vsd::TestDist::new(&square_depth(true), &SQ_CAM, 100, 100);
    let ests = [deeper()];
    let s = score_task(&square_task(&ests), &square_model(), Some(&test)).scores();
    let mut want = vec![vec![0; 10]; 10];
    for row in &mut want[8..] {
        row[1..].fill(1);
    }
    assert_eq!(s.hits_vsd, want);
    let (v, ms, mp) = HALF_OCCLUDED;
    assert!((s.ar_vsd - v).abs() < 1e-12 && (s.ar_mssd - ms).abs() < 1e-12 && (s.ar_mspd - mp).abs() < 1e-12, "{s:?}");
    // AR averages the three (0.4267), not just MSSD and MSPD (0.55).
    assert!((s.ar - (v + ms + mp) / 3.0).abs() < 1e-12, "{}", s.ar);
}

#[test]
fn evaluate_reads_depth_for_vsd_and_falls_back_without_it() {
    // A BOP scene with two identical images of the half-occluded square, depth stored in
    // 0.5 mm units (read with scene_camera.json's depth_scale; read as 1 mm the occluder
    // would be 800 mm away, behind the square, and VSD would change).
    let root = tempfile::tempdir().unwrap();
    let (scene_dir, models_dir) = (root.path().join("000001"), root.path().join("models"));
    std::fs::create_dir_all(scene_dir.join("depth")).unwrap();
    std::fs::create_dir_all(&models_dir).unwrap();
    let depth = crate::io::image::DepthMm { width: 100, height: 100, mm: square_depth(true) };
    let gt = serde_json::json!([{"cam_R_m2c": [1, 0, 0, 0, 1, 0, 0, 0, 1], "cam_t_m2c": [0, 0, SQ_GT_Z], "obj_id": 1}]);
    let cam = serde_json::json!({"cam_K": SQ_CAM.k(), "depth_scale": 0.5});
    for im in [1u32, 2] {
        crate::io::image::write_depth_png(&depth, 0.5, &dataset::depth_path(&scene_dir, im)).unwrap();
    }
    std::fs::write(scene_dir.join("scene_gt.json"), serde_json::json!({"1": gt, "2": gt}).to_string()).unwrap();
    std::fs::write(scene_dir.join("scene_camera.json"), serde_json::json!({"1": cam, "2": cam}).to_string()).unwrap();
    let m = square_model();
    crate::geometry::ply::write_ascii_ply(&m.mesh, &models_dir.join("obj_000001.ply")).unwrap();
    std::fs::write(models_dir.join("models_info.json"), serde_json::json!({"1": {"diameter": m.diameter}}).to_string()).unwrap();
    let z = SQ_GT_Z + 25.0;
    let csv = format!("scene_id,im_id,obj_id,score,R,t,time\n1,1,1,1,1 0 0 0 1 0 0 0 1,0 0 {z},-1\n1,2,1,1,1 0 0 0 1 0 0 0 1,0 0 {z},-1\n");
    let preds = predictions::parse_csv(&csv, "test.csv").unwrap();
    let scene = dataset::read_scene(&scene_dir, Some(100)).unwrap();
    assert_eq!(scene.images[&1].camera.depth_scale, 0.5);
    let models = ModelsDir::open(&models_dir).unwrap();

    let (v, ms, mp) = HALF_OCCLUDED;
    let r = evaluate(std::slice::from_ref(&scene), &preds, &models, &[]).unwrap();
    let s = &r.overall;
    assert_eq!((s.targets, s.vsd_targets), (2, 2));
    assert!((s.ar_vsd - v).abs() < 1e-12 && (s.ar - (v + ms + mp) / 3.0).abs() < 1e-12, "{s:?}");
    assert!(!r.notes.iter().any(|n| n.contains("VSD")), "{:?}", r.notes);
    assert!(r.table().contains("AR_VSD"));

    // Image 2 loses its depth image: its target counts (AR_MSSD + AR_MSPD) / 2, AR_VSD is
    // image 1's alone, and a note says so.
    std::fs::remove_file(dataset::depth_path(&scene_dir, 2)).unwrap();
    let r = evaluate(std::slice::from_ref(&scene), &preds, &models, &[]).unwrap();
    let s = &r.overall;
    assert_eq!((s.targets, s.vsd_targets), (2, 1));
    assert!((s.ar_vsd - v).abs() < 1e-12 && (s.ar_mssd - ms).abs() < 1e-12, "{s:?}");
    assert!((s.ar - ((v + ms + mp) / 3.0 + (ms + mp) / 2.0) / 2.0).abs() < 1e-12, "{}", s.ar);
    assert!(r.notes.iter().any(|n| n.starts_with("scene 1: 1 of 2 image(s)")), "{:?}", r.notes);
}
