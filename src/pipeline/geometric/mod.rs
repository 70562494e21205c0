//! The weights-free pose pipeline: PPF voting proposes poses, ICP refines them against the
//! measured depth, and render-and-compare verification decides which are real. Runs on the
//! CPU on any machine; it is also the fallback when no network weights are given.
pub mod color;
pub mod icp;
pub mod ppf;
pub mod proposals;
pub mod scene;
pub mod verify;

use super::{Estimate, Frame, ObjectModel, Options, PoseEstimate};
use crate::geometry::{cloud, Mesh, Pose, Vec3};
use icp::OrganizedCloud;
use ppf::{Hypothesis, PpfModel};
pub use scene::FrameScene;
use crate::render::roi::RoiDepth;
use rayon::prelude::*;
use std::time::Instant;

/// Tuning, relative to the object's diameter d where it scales with the object.
#[derive(Clone, Debug)]
pub struct Params {
    /// PPF sampling step / d (Drost: 0.05; finer helps on small, detailed parts).
    pub step_rel: f32,
    /// Lower bound of the sampling step, mm.
    pub step_min: f32,
    /// Every n-th scene point is a voting reference.
    pub ref_stride: usize,
    /// Big PPF buckets are sampled down to this multiple of the mean bucket size.
    pub bucket_cap_rel: f32,
    /// Fraction of a bin at each edge where the neighbouring bin also votes (Vidal et al.).
    pub edge_band: f32,
    /// Accumulator peaks kept per reference.
    pub peaks_per_ref: usize,
    /// Pose clusters refined and verified.
    pub candidates: usize,
    /// ICP iterations per candidate.
    pub icp_iterations: usize,
    /// Pose clustering: same cluster within this rotation (rad) and translation (× d).
    pub cluster_rot: f64,
    pub cluster_trans_rel: f64,
    /// Verification tolerance: clamp(tol_rel · d, tol_min, tol_max) mm.
    pub tol_rel: f32,
    pub tol_min: f32,
    pub tol_max: f32,
    /// Depth outside [z_min, z_max] mm is ignored.
    pub z_min: f32,
    pub z_max: f32,
    /// Remove the dominant support plane before voting.
    pub remove_plane: bool,
    /// Rivals of each leading candidate (other rotations of the same instance) compared with
    /// it where their renderings differ, and polished only if they win; 0 turns the duels off.
    pub rivals: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            step_rel: 0.05,
            step_min: 4.0,
            ref_stride: 10,
            bucket_cap_rel: 2.0,
            edge_band: 0.25,
            peaks_per_ref: 2,
            candidates: 48,
            icp_iterations: 8,
            cluster_rot: 30f64.to_radians(),
            cluster_trans_rel: 0.1,
            tol_rel: 0.025,
            tol_min: 4.0,
            tol_max: 12.0,
            z_min: 100.0,
            z_max: 6000.0,
            remove_plane: true,
            rivals: 1,
        }
    }
}

/// What the geometric stages derive from a CAD model once.
pub struct ModelData {
    pub params: Params,
    pub step: f32,
    pub ppf: PpfModel,
    /// Denser oriented samples for ICP.
    pub icp: cloud::Cloud,
    /// A light mesh for the many verification renders (≤ 8000 faces).
    pub render_mesh: Mesh,
    /// A lighter one that only decides which model points ICP may use (≤ 2500 faces).
    pub visibility_mesh: Mesh,
    /// Centre of the bounding box, model frame.
    pub center: Vec3,
    /// Vertex colours for colour verification, when the model has them.
    pub colors: Option<color::ColorModel>,
}

impl ModelData {
    pub fn build(mesh: &Mesh, diameter: f32, params: Params) -> ModelData {
        // Below ~4 mm a depth sensor adds noise, not detail, while the cost keeps growing.
        let step = (params.step_rel * diameter).max(params.step_min);
        let (pts, nrm) = mesh.sample_surface(40_000, 0x5A56_D00D);
        let ppf_cloud = cloud::downsample_oriented(&pts, &nrm, step, 30f32.to_radians());
        let icp = cloud::downsample_oriented(&pts, &nrm, step * 0.5, 30f32.to_radians());
        let render_mesh = within_budget(mesh, diameter, 8000);
        let visibility_mesh = within_budget(mesh, diameter, 2500);
        let (lo, hi) = mesh.bounds();
        let ppf = PpfModel::build(ppf_cloud, step, diameter, params.bucket_cap_rel, params.edge_band);
        let colors = color::ColorModel::new(mesh, diameter);
        ModelData { params, step, ppf, icp, render_mesh, visibility_mesh, center: (lo + hi) * 0.5, colors }
    }
}

/// The mesh itself when small enough, else the finest vertex clustering with at most
/// `max_faces` faces: render cost grows with faces, and a scanned CAD model carries far more
/// detail than a depth sensor resolves.
fn within_budget(mesh: &Mesh, diameter: f32, max_faces: usize) -> Mesh {
    if mesh.faces.len() <= max_faces {
        return mesh.clone();
    }
    let mut cell = 0.005 * diameter;
    loop {
        let m = mesh.decimated(cell);
        if m.faces.len() <= max_faces || cell > 0.2 * diameter {
            return m;
        }
        cell *= 1.25;
    }
}

struct Timer(Instant, Vec<(&'static str, f64)>);
impl Timer {
    fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.1.push((name, (now - self.0).as_secs_f64() * 1e3));
        self.0 = now;
    }
}

/// A refined, verified candidate.
#[derive(Clone, Copy)]
struct Scored {
    pose: Pose,
    score: f32,
    /// Votes of the candidate's cluster relative to the best cluster's.
    support: f32,
    /// Colour agreement from verification, when the model has colours.
    color: Option<f32>,
}

/// The final confidence: verification, nudged by voting support. Rendering cannot tell a
/// mug with its handle hidden behind the body from the right one if the handle is in view
/// elsewhere; the votes of the handle's points can. A small exponent keeps a weakly voted
/// but well verified second instance.
fn confidence(verified: f32, support: f32) -> f32 {
    verified * support.clamp(1e-3, 1.0).powf(0.1)
}

/// Poses of `model` in `frame`. With a `region` (row-major pixel mask, from the segmenter's
/// proposals), voting starts only from scene points seen inside it; the support plane is still
/// found on the whole image and verification still compares against all of the depth.
pub fn estimate(frame: &Frame, model: &ObjectModel, opts: &Options, region: Option<&[bool]>) -> anyhow::Result<Estimate> {
    let p = &model.geometric.params;
    let scene = FrameScene::new(&frame.depth, &frame.camera, p.z_min, p.z_max);
    estimate_in(&scene, frame, model, opts, region)
}

/// As [`estimate`], with the frame's points made already (`scene`, of this frame and the
/// model's depth range): every object asked for in one frame shares them.
pub fn estimate_in(shared: &FrameScene, frame: &Frame, model: &ObjectModel, opts: &Options, region: Option<&[bool]>) -> anyhow::Result<Estimate> {
    let started = Instant::now();
    let mut timer = Timer(started, Vec::new());
    let md = &model.geometric;
    let p = &md.params;
    let d = model.diameter;
    let cam = &frame.camera;
    let (w, h) = (frame.width(), frame.height());
    debug_assert!(shared.is_of(&frame.depth, cam, p.z_min, p.z_max), "the scene of another frame");

    // 1. Scene points: organised (for ICP) and down-sampled with normals (for voting).
    let organized = &shared.organized;
    let voting = shared.voting_cloud(md.step, p.remove_plane);
    let plane = voting.plane;
    let mut scene = voting.cloud.clone();
    if let Some(region) = region {
        let inside: Vec<usize> = (0..scene.len()).filter(|&i| pixel_of(&scene.points[i], cam, w, h).is_some_and(|px| region[px])).collect();
        tracing::debug!("{} of {} points inside the proposals", inside.len(), scene.len());
        scene = scene.select(&inside);
    }
    tracing::debug!("scene: {} valid pixels, {} points after down-sampling to {:.1} mm", shared.valid_points(), scene.len(), md.step);
    timer.lap("preprocess");
    if scene.len() < 10 {
        timer.1.push(("total", started.elapsed().as_secs_f64() * 1e3));
        return Ok(Estimate { timings: timer.1, ..Default::default() });
    }

    // 2. Voting from every ref_stride-th scene point, in parallel.
    let grid = crate::geometry::grid::Grid::new(&scene.points, md.ppf.max_dist);
    let refs: Vec<usize> = (0..scene.len()).step_by(p.ref_stride).collect();
    let mut hyps: Vec<Hypothesis> = refs
        .par_chunks(16)
        .map_init(
            || md.ppf.scratch(),
            |scratch, chunk| chunk.iter().flat_map(|&r| md.ppf.vote(&scene, &grid, r, scratch, p.peaks_per_ref)).collect::<Vec<_>>(),
        )
        .flatten()
        .collect();
    tracing::debug!("voting: {} references, model {} points / {} pairs, {} hypotheses", refs.len(), md.ppf.len(), md.ppf.pairs(), hyps.len());
    timer.lap("ppf_voting");

    // 3. Pose clustering: neighbours in pose space pool their votes.
    hyps.sort_by(|a, b| b.votes.total_cmp(&a.votes));
    let clusters = cluster(&hyps, p.cluster_rot, p.cluster_trans_rel * d as f64, &md.center);
    let best_votes = clusters.first().map_or(1.0, |c| c.1);
    let support: Vec<f32> = clusters.iter().take(p.candidates).map(|c| c.1 / best_votes).collect();
    let candidates: Vec<Pose> = clusters.into_iter().take(p.candidates).map(|c| c.0).collect();
    timer.lap("clustering");

    // 4. ICP then verification of each candidate.
    let org = OrganizedCloud { width: w, height: h, points: organized, camera: cam };
    let tol = (p.tol_rel * d).clamp(p.tol_min, p.tol_max);
    let coarse_stride = (md.icp.len() / 600).max(1);
    let (cp, cn): (Vec<Vec3>, Vec<Vec3>) =
        md.icp.points.iter().zip(&md.icp.normals).step_by(coarse_stride).map(|(a, b)| (*a, *b)).unzip();
    let refined: Vec<Pose> = candidates
        .par_iter()
        .map(|pose| icp::refine(&org, &md.visibility_mesh, &cp, &cn, pose, p.icp_iterations, 3.0 * md.step, 1.5 * tol).pose)
        .collect();
    timer.lap("icp");
    let obs = verify::Observation { camera: cam, depth: &frame.depth, rgb: &frame.rgb, support: plane, tolerance: tol };
    let check = |pose: &Pose| verify::verify(&md.render_mesh, md.colors.as_ref(), pose, &obs);
    // Each candidate keeps its rendering: the final stage needs it for NMS when polishing
    // does not improve the pose.
    let mut scored: Vec<(Scored, RoiDepth)> = refined
        .par_iter()
        .zip(&support)
        .map(|(pose, &support)| {
            let (v, rendered) = check(pose);
            (Scored { pose: *pose, score: confidence(v.score, support), support, color: v.color_score }, rendered)
        })
        .collect();
    scored.sort_by(|a, b| b.0.score.total_cmp(&a.0.score));
    timer.lap("verify");

    // 5. Final polish of the best few with all ICP points, re-verified, then NMS.
    // Only candidates that can still make it are polished: a handful beyond what is returned.
    // (Polishing rarely lifts a score by more than half, so lower ones cannot make the cut.)
    let keep = scored.iter().take(opts.max_instances + 3).filter(|s| s.0.score >= 0.5 * opts.det_score_thresh).count();
    // The best few rivals of each leading candidate join them: another pose of the same
    // instance (a flip of a near-symmetric shape, a mug turned), for the duels below.
    let mut rival_at: Vec<usize> = Vec::new();
    for i in 0..keep.min(opts.max_instances) {
        let (lead, lead_mask) = (&scored[i].0, &scored[i].1);
        let found = (keep..scored.len()).filter(|j| !rival_at.contains(j) && rivals((lead, lead_mask), (&scored[*j].0, &scored[*j].1)));
        rival_at.extend(found.take(p.rivals).collect::<Vec<_>>());
    }
    // (candidate, whether it is a rival, left unpolished until it wins its duel)
    let chosen: Vec<((Scored, RoiDepth), bool)> =
        scored.into_iter().enumerate().filter(|(j, _)| *j < keep || rival_at.contains(j)).map(|(j, c)| (c, j >= keep)).collect();
    let polish = |(s, before): (Scored, RoiDepth)| {
        let r = icp::refine(&org, &md.visibility_mesh, &md.icp.points, &md.icp.normals, &s.pose, 10, tol * 1.5, tol * 0.75);
        let (v, rendered) = check(&r.pose);
        tracing::debug!("candidate t={:?} {:?}", r.pose.t.map(|x| x.round()).as_slice(), v);
        let score = confidence(v.score, s.support);
        if score >= s.score {
            (Scored { pose: r.pose, score, support: s.support, color: v.color_score }, rendered)
        } else {
            (s, before)
        }
    };
    // Rivals are polished only when they win their duel.
    let mut finals: Vec<(Scored, RoiDepth, bool)> = chosen
        .into_par_iter()
        .map(|(c, rival)| if rival { (c.0, c.1, true) } else { let (s, r) = polish(c); (s, r, false) })
        .collect();
    finals.sort_by(|a, b| b.0.score.total_cmp(&a.0.score));
    if p.rivals > 0 {
        duels(&mut finals, &obs, &polish);
    }
    // Rivals that lost stay out: their instance has its pose.
    let finals: Vec<(Scored, RoiDepth)> = finals.into_iter().filter(|f| !f.2).map(|(s, r, _)| (s, r)).collect();
    let mut poses: Vec<PoseEstimate> = Vec::new();
    let mut kept_masks: Vec<&RoiDepth> = Vec::new();
    for (s, mask) in &finals {
        if s.score < opts.det_score_thresh || poses.len() >= opts.max_instances {
            continue;
        }
        if kept_masks.iter().any(|m| m.overlap(mask) > 0.3) {
            continue;
        }
        poses.push(PoseEstimate { pose: s.pose, score: s.score });
        kept_masks.push(mask);
    }
    timer.lap("refine_nms");
    timer.1.push(("total", started.elapsed().as_secs_f64() * 1e3));
    Ok(Estimate { poses, timings: timer.1, ..Default::default() })
}

/// Duels: a candidate that a later rival of the same instance beats where their renderings
/// differ gives the rival its place (and its score); a rival that wins is polished then.
/// `finals` is sorted best first; its flag marks rivals not polished yet.
fn duels(finals: &mut [(Scored, RoiDepth, bool)], obs: &verify::Observation, polish: impl Fn((Scored, RoiDepth)) -> (Scored, RoiDepth)) {
    for i in 0..finals.len() {
        for j in i + 1..finals.len() {
            let (lead, other) = (&finals[i], &finals[j]);
            if !rivals((&lead.0, &lead.1), (&other.0, &other.1)) {
                continue;
            }
            let (a, b, n) = verify::duel(&lead.1, &other.1, obs);
            tracing::debug!("duel {i} vs {j}: {a} vs {b} over {n} px, colour {:?} vs {:?}", lead.0.color, other.0.color);
            // Depth decides where the shapes differ, but not against the print: a box turned
            // over has the same shape and other colours, and a pose off by a little against
            // an occluder can lose a duel it should win.
            let worse_colour = matches!((lead.0.color, other.0.color), (Some(l), Some(o)) if o < l - DUEL_COLOUR_MARGIN);
            if b > a + (DUEL_MARGIN * n as f32).max(10.0) as i64 && !worse_colour {
                let champion = lead.0.score;
                finals.swap(i, j);
                if finals[i].2 {
                    let (s, r) = polish((finals[i].0, finals[i].1.clone()));
                    finals[i] = (s, r, false);
                }
                let won = finals[i].0.score;
                (finals[i].0.score, finals[j].0.score) = (won.max(champion), won.min(champion));
            }
        }
    }
}

/// Fraction of the compared pixels by which a rival must win a duel.
const DUEL_MARGIN: f32 = 0.1;
/// A rival whose colour agreement is lower than the leader's by more than this cannot take
/// its place.
const DUEL_COLOUR_MARGIN: f32 = 0.1;

/// Two candidates for one instance that disagree on its rotation: their silhouettes overlap by
/// half, their rotations differ by more than 20°, and the second scored at least half the first.
fn rivals(a: (&Scored, &RoiDepth), b: (&Scored, &RoiDepth)) -> bool {
    b.0.score >= 0.5 * a.0.score && a.0.pose.rotation_angle_to(&b.0.pose) > 20f64.to_radians() && a.1.overlap(b.1) > 0.5
}

/// Polishes poses found by another stage (SAM-6D's PEM) with this stage's ICP against the
/// measured depth, keeping a polished pose only when render-and-compare verification scores it
/// at least as high as the original. Returns each pose and its verification score in [0, 1].
pub fn refine_poses(frame: &Frame, model: &ObjectModel, poses: &[Pose]) -> Vec<(Pose, f32)> {
    let md = &model.geometric;
    let p = &md.params;
    let cam = &frame.camera;
    let (w, h) = (frame.width(), frame.height());
    let organized = cloud::organized(&frame.depth, cam, p.z_min, p.z_max);
    let org = OrganizedCloud { width: w, height: h, points: &organized, camera: cam };
    let tol = (p.tol_rel * model.diameter).clamp(p.tol_min, p.tol_max);
    let obs = verify::Observation { camera: cam, depth: &frame.depth, rgb: &frame.rgb, support: None, tolerance: tol };
    poses
        .par_iter()
        .map(|pose| {
            let before = verify::verify(&md.render_mesh, md.colors.as_ref(), pose, &obs).0.score;
            // A network's pose is close already: start with the final polish's gates.
            let r = icp::refine(&org, &md.visibility_mesh, &md.icp.points, &md.icp.normals, pose, 10, tol * 1.5, tol * 0.75);
            let after = verify::verify(&md.render_mesh, md.colors.as_ref(), &r.pose, &obs).0.score;
            if after >= before { (r.pose, after) } else { (*pose, before) }
        })
        .collect()
}

/// The row-major index of the pixel a camera-frame point projects to, if inside the image.
fn pixel_of(p: &Vec3, cam: &crate::io::Camera, w: usize, h: usize) -> Option<usize> {
    let u = (cam.fx as f32 * p.x / p.z + cam.cx as f32).round();
    let v = (cam.fy as f32 * p.y / p.z + cam.cy as f32).round();
    (p.z > 0.0 && u >= 0.0 && v >= 0.0 && (u as usize) < w && (v as usize) < h).then(|| v as usize * w + u as usize)
}

/// Greedy clustering of vote-sorted hypotheses; returns (pose, summed votes), best first.
/// Distances use the model centre so that rotation does not swing translation. The pose is
/// the vote-weighted mean of the members close to the representative: PPF poses are
/// quantised (12° in α), the mean of many is finer than any one and gives ICP a better start.
fn cluster(hyps: &[Hypothesis], max_rot: f64, max_trans: f64, center: &Vec3) -> Vec<(Pose, f32)> {
    use nalgebra::{Quaternion, UnitQuaternion, Vector3, Vector4};
    struct Cluster {
        rep_center: Vector3<f64>,
        rep_q: Vector4<f64>,
        votes: f32,
        q_sum: Vector4<f64>,
        c_sum: Vector3<f64>,
        w_sum: f64,
    }
    let c = center.cast::<f64>();
    // Rotation angle below θ ⇔ |q₁·q₂| > cos(θ/2): four products instead of a matrix product
    // and an acos, for each of hypotheses × clusters.
    let (cos_full, cos_half) = ((0.5 * max_rot).cos(), (0.25 * max_rot).cos());
    let mut clusters: Vec<Cluster> = Vec::new();
    for h in hyps {
        let hc = h.pose.apply(&c);
        let q = UnitQuaternion::from_matrix(&h.pose.r).into_inner().coords;
        match clusters.iter_mut().find(|k| (k.rep_center - hc).norm_squared() < max_trans * max_trans && k.rep_q.dot(&q).abs() > cos_full) {
            Some(k) => {
                k.votes += h.votes;
                if (k.rep_center - hc).norm() < 0.5 * max_trans && k.rep_q.dot(&q).abs() > cos_half {
                    let w = h.votes as f64;
                    // q and −q are the same rotation: align signs before summing.
                    let q = if q.dot(&k.rep_q) < 0.0 { -q } else { q };
                    k.q_sum += q * w;
                    k.c_sum += hc * w;
                    k.w_sum += w;
                }
            }
            None => {
                let w = h.votes as f64;
                clusters.push(Cluster { rep_center: hc, rep_q: q, votes: h.votes, q_sum: q * w, c_sum: hc * w, w_sum: w });
            }
        }
    }
    let mut out: Vec<(Pose, f32)> = clusters
        .into_iter()
        .map(|k| {
            let q = UnitQuaternion::from_quaternion(Quaternion::from(k.q_sum / k.w_sum.max(1e-12)));
            let r = *q.to_rotation_matrix().matrix();
            let centre = k.c_sum / k.w_sum.max(1e-12);
            (Pose::new(r, centre - r * c), k.votes)
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{self, SceneSpec, SceneTarget};

    /// The whole geometric pipeline on a generated scene with a known pose: the top estimate
    /// is the instance (ADD < 10 % of the diameter).
    #[test]
    fn finds_known_pose_in_synthetic_scene() {
        let bracket = synth::procedural_targets().into_iter().find(|t| t.name == "bracket").unwrap();
        let model = ObjectModel::from_mesh("bracket", (*bracket.mesh).clone()).unwrap();
        let mut spec = SceneSpec::new(11, vec![SceneTarget { object: bracket.clone(), instances: 1 }]);
        spec.occlusion = 0.0;
        let s = synth::generate(&spec);
        let frame = Frame { rgb: s.rgb.clone(), depth: s.depth.clone(), camera: s.camera };
        let est = estimate(&frame, &model, &Options::default(), None).unwrap();
        let top = est.poses.first().expect("a pose");
        let add = crate::geometry::metrics::add(&top.pose, &s.gt[0].pose, &model.mesh.vertices);
        assert!(add < 0.1 * model.diameter as f64, "ADD {add:.1} mm");
        assert!(top.score > 0.5, "score {}", top.score);
        let stages: Vec<&str> = est.timings.iter().map(|t| t.0).collect();
        assert_eq!(stages, ["preprocess", "ppf_voting", "clustering", "icp", "verify", "refine_nms", "total"]);
    }

    /// The synthetic benchmark at a fixed seed (procedural mug, bracket and printed box, clutter,
    /// occluders, Kinect-like noise): the top estimate of each call is an instance (ADD < 0.1 d)
    /// as often as measured, less a margin of one call, so that a change that costs accuracy
    /// fails here rather than only in a bench nobody ran. Measured: 28 of 34 calls; 25 with the
    /// models' colours dropped (the box's turned-over twins win), 27 without the duels' colour
    /// guard.
    #[test]
    fn synthetic_benchmark_does_not_regress() {
        let mut targets = synth::procedural_targets();
        targets.push(synth::printed_box());
        let frames = synth::benchmark_set(2024, 24, &targets);
        let models: Vec<ObjectModel> = targets.iter().map(|t| ObjectModel::from_mesh(&t.name, (*t.mesh).clone()).unwrap()).collect();
        let (mut calls, mut right) = (0, 0);
        for f in &frames {
            let frame = Frame { rgb: f.rgb.clone(), depth: f.depth.clone(), camera: f.camera };
            for name in f.target_names() {
                let model = models.iter().find(|m| m.name == name).unwrap();
                let est = estimate(&frame, model, &Options::default(), None).unwrap();
                calls += 1;
                let d = model.diameter as f64;
                right += est.poses.first().is_some_and(|p| {
                    f.gt.iter().filter(|g| g.object == name).any(|g| crate::geometry::metrics::add(&p.pose, &g.pose, &model.mesh.vertices) < 0.1 * d)
                }) as usize;
            }
        }
        eprintln!("synthetic benchmark, seed 2024, 24 scenes: top estimate right in {right} of {calls} calls");
        assert!(right + 1 >= MEASURED_RIGHT, "top estimate right in {right} of {calls} calls (measured {MEASURED_RIGHT})");
    }
    const MEASURED_RIGHT: usize = 28;

    /// Objects estimated in one frame through one shared scene get exactly the poses they get
    /// alone, and the pipeline shares the scene between calls on the same frame.
    #[test]
    fn a_shared_scene_changes_no_pose() {
        let targets = synth::procedural_targets();
        let spec = SceneSpec::new(5, targets.iter().map(|t| SceneTarget { object: t.clone(), instances: 1 }).collect());
        let s = synth::generate(&spec);
        let frame = Frame { rgb: s.rgb.clone(), depth: s.depth.clone(), camera: s.camera };
        let models: Vec<ObjectModel> = targets.iter().map(|t| ObjectModel::from_mesh(&t.name, (*t.mesh).clone()).unwrap()).collect();
        let p = &models[0].geometric.params;
        let shared = FrameScene::new(&frame.depth, &frame.camera, p.z_min, p.z_max);
        let pipeline = crate::pipeline::Pipeline::new(Options::default());
        let poses = |e: Estimate| e.poses.iter().map(|p| (p.pose.r, p.pose.t, p.score)).collect::<Vec<_>>();
        for model in &models {
            let alone = poses(estimate(&frame, model, &Options::default(), None).unwrap());
            assert!(!alone.is_empty(), "{}: no pose", model.name);
            assert_eq!(poses(estimate_in(&shared, &frame, model, &Options::default(), None).unwrap()), alone, "{}", model.name);
            assert_eq!(poses(pipeline.estimate(&frame, model).unwrap()), alone, "{}", model.name);
        }
    }

    #[test]
    fn empty_depth_gives_no_pose() {
        let bracket = synth::procedural_targets().into_iter().find(|t| t.name == "bracket").unwrap();
        let model = ObjectModel::from_mesh("bracket", (*bracket.mesh).clone()).unwrap();
        let camera = synth::KINECT;
        let frame = Frame {
            rgb: image::RgbImage::new(64, 48),
            depth: crate::io::DepthMm { width: 64, height: 48, mm: vec![0.0; 64 * 48] },
            camera,
        };
        assert!(estimate(&frame, &model, &Options::default(), None).unwrap().poses.is_empty());
    }
}
