//! `sam6d eval`: scores pose estimates against BOP ground truth the way the BOP toolkit does
//! (`eval_calc_errors` + `eval_calc_scores`, BOP19 settings).
//!
//! - Targets: per image and object, the ground-truth instances with visib_fract ≥ 0.1
//!   (`scene_gt_info.json`; every instance when the file is missing).
//! - Estimates: per image and object, sorted by score; only the top n are evaluated, n = the
//!   number of targets (BOP's n_top = −1 with `inst_count`); estimates for an object with no
//!   target in the image are ignored.
//! - Errors of each estimate against every instance of its object (targets or not): MSSD and
//!   MSPD minimised over the object's symmetries, ADD, ADI, and VSD at 10 tolerances τ
//!   ([`vsd`]: the model rendered at both poses against the scene's `depth/` image).
//! - Per threshold, greedy matching ([`matching`]); a target counts as found when an estimate is
//!   matched to it; an estimate matched to a non-target counts for nothing.
//! - Recall = found / targets, pooled over all instances (per object, and over all objects);
//!   AR_MSSD and AR_MSPD average it over the 10 thresholds, AR_VSD over the 100 (τ, θ) pairs;
//!   AR = (AR_VSD + AR_MSSD + AR_MSPD) / 3. Targets in an image without a depth image (or of an
//!   object whose model has no faces) have no VSD: they count (AR_MSSD + AR_MSPD) / 2 towards
//!   AR, and AR_VSD is over the other targets only (NaN when there are none).
pub mod dataset;
pub mod matching;
pub mod predictions;
pub mod symmetry;
pub mod visibility;
pub mod vsd;

use crate::geometry::metrics::{self, mssd_thresholds};
use crate::geometry::Pose;
use crate::io::Camera;
use anyhow::{bail, Context, Result};
use dataset::{EvalModel, ModelsDir, Scene};
use predictions::{Prediction, Predictions};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::fmt::Write;

/// ADD / ADI correctness threshold, fraction of the diameter.
pub const ADD_THRESHOLD: f64 = 0.1;

/// Rotation / translation error medians are over the targets matched with MSSD below this
/// fraction of the diameter (the loosest MSSD threshold).
pub const MEDIAN_MATCH_MSSD: f64 = 0.5;

/// MSPD thresholds (px) for an image `width` wide: 5r … 50r, r = width / 640.
fn mspd_thresholds(width: usize) -> Vec<f64> {
    metrics::mspd_thresholds(width)
}

/// Counts of found targets for one object (or all), summed over images.
#[derive(Clone, Debug, Default)]
struct Tally {
    targets: usize,
    estimates: usize,
    mssd_hits: [usize; 10],
    mspd_hits: [usize; 10],
    /// Targets of the tasks where VSD was computed, and its hits by [τ][θ].
    vsd_targets: usize,
    vsd_hits: [[usize; 10]; 10],
    /// Σ over tasks of AR × targets (three terms with VSD, two without): AR pooled over
    /// targets even when only some of them have VSD.
    ar_sum: f64,
    add_hits: usize,
    adi_hits: usize,
    /// ADD(-S): ADI hits for symmetric objects, ADD hits for the others.
    adds_hits: usize,
    /// Over targets matched with MSSD < 0.5 d: rotation error (deg) and translation error (mm)
    /// against the ground truth composed with the best symmetry.
    rot_err: Vec<f64>,
    trans_err: Vec<f64>,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.targets += o.targets;
        self.estimates += o.estimates;
        for k in 0..10 {
            self.mssd_hits[k] += o.mssd_hits[k];
            self.mspd_hits[k] += o.mspd_hits[k];
            for j in 0..10 {
                self.vsd_hits[k][j] += o.vsd_hits[k][j];
            }
        }
        self.vsd_targets += o.vsd_targets;
        self.ar_sum += o.ar_sum;
        self.add_hits += o.add_hits;
        self.adi_hits += o.adi_hits;
        self.adds_hits += o.adds_hits;
        self.rot_err.extend(&o.rot_err);
        self.trans_err.extend(&o.trans_err);
    }

    fn scores(&self) -> Scores {
        // BOP: recall 0 when there is no target.
        let recall = |hits: usize| if self.targets == 0 { 0.0 } else { hits as f64 / self.targets as f64 };
        let recall_mssd: Vec<f64> = self.mssd_hits.iter().map(|&h| recall(h)).collect();
        let recall_mspd: Vec<f64> = self.mspd_hits.iter().map(|&h| recall(h)).collect();
        let ar_mssd = recall_mssd.iter().sum::<f64>() / 10.0;
        let ar_mspd = recall_mspd.iter().sum::<f64>() / 10.0;
        let vsd_recall = |h: usize| if self.vsd_targets == 0 { f64::NAN } else { h as f64 / self.vsd_targets as f64 };
        let recall_vsd: Vec<Vec<f64>> = self.vsd_hits.iter().map(|row| row.iter().map(|&h| vsd_recall(h)).collect()).collect();
        Scores {
            targets: self.targets,
            estimates: self.estimates,
            ar: if self.targets == 0 { 0.0 } else { self.ar_sum / self.targets as f64 },
            ar_vsd: recall_vsd.iter().flatten().sum::<f64>() / 100.0,
            ar_mssd,
            ar_mspd,
            recall_mssd,
            recall_mspd,
            hits_mssd: self.mssd_hits.to_vec(),
            hits_mspd: self.mspd_hits.to_vec(),
            vsd_targets: self.vsd_targets,
            recall_vsd,
            hits_vsd: self.vsd_hits.iter().map(|r| r.to_vec()).collect(),
            add_recall: recall(self.add_hits),
            adi_recall: recall(self.adi_hits),
            add_s_recall: recall(self.adds_hits),
            matched: self.rot_err.len(),
            median_rotation_error_deg: crate::synth::eval::median(&self.rot_err),
            median_translation_error_mm: crate::synth::eval::median(&self.trans_err),
        }
    }
}

/// Figures for one object or for all (serialised into the `--json` report; NaN → null).
#[derive(Clone, Debug, Serialize)]
pub struct Scores {
    /// Ground-truth instances that count (visib_fract ≥ 0.1).
    pub targets: usize,
    /// Estimates evaluated (top n per image and object).
    pub estimates: usize,
    /// (AR_VSD + AR_MSSD + AR_MSPD) / 3 per target, (AR_MSSD + AR_MSPD) / 2 for the targets
    /// without VSD, averaged over the targets.
    pub ar: f64,
    /// Over the `vsd_targets`; NaN (null) when there are none.
    pub ar_vsd: f64,
    pub ar_mssd: f64,
    pub ar_mspd: f64,
    /// Recall at each MSSD threshold (0.05 … 0.50 × diameter).
    pub recall_mssd: Vec<f64>,
    /// Recall at each MSPD threshold (5 … 50 px × width / 640).
    pub recall_mspd: Vec<f64>,
    pub hits_mssd: Vec<usize>,
    pub hits_mspd: Vec<usize>,
    /// Targets in images with a depth image (and a model with faces): the ones VSD scores.
    pub vsd_targets: usize,
    /// VSD recall by `[τ][θ]`, τ and θ 0.05 … 0.50 (τ × diameter); NaN when no VSD target.
    pub recall_vsd: Vec<Vec<f64>>,
    pub hits_vsd: Vec<Vec<usize>>,
    /// ADD < 0.1 d.
    pub add_recall: f64,
    /// ADI (ADD-S) < 0.1 d.
    pub adi_recall: f64,
    /// ADI for symmetric objects, ADD for the others (the usual "ADD(-S)").
    pub add_s_recall: f64,
    /// Targets matched with MSSD < 0.5 d (the medians are over these).
    pub matched: usize,
    pub median_rotation_error_deg: f64,
    pub median_translation_error_mm: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ObjectReport {
    pub obj_id: u32,
    pub diameter_mm: f64,
    pub diameter_source: &'static str,
    pub symmetric: bool,
    /// Symmetry transformations MSSD/MSPD minimise over (identity included).
    pub symmetry_transforms: usize,
    pub model_vertices: usize,
    #[serde(flatten)]
    pub scores: Scores,
}

#[derive(Clone, Debug, Serialize)]
pub struct SceneReport {
    pub scene_id: u32,
    pub dir: String,
    pub images: usize,
    pub image_width: usize,
    /// false: no scene_gt_info.json, every instance is a target.
    pub visib_fract_filter: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct PredictionCounts {
    pub format: &'static str,
    /// Estimated instances read.
    pub rows: usize,
    /// JSON-lines frames that failed, skipped.
    pub error_lines: usize,
    /// Rows for images that are not in the given scenes' scene_gt.json (ignored).
    pub rows_for_unknown_images: usize,
    /// Rows beyond the top n (n = targets of that object in that image), ignored as BOP does.
    pub rows_beyond_top_n: usize,
    /// Rows for an object with no target in that image, ignored.
    pub rows_without_target: usize,
    /// Rows for objects left out by --obj-id.
    pub rows_for_other_objects: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct TimeStats {
    /// Frames of the given scenes with a known time.
    pub frames: usize,
    pub mean_s: f64,
    pub median_s: f64,
    /// CSV frames whose rows disagree on the time (the largest was kept).
    pub inconsistent: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenes: Vec<SceneReport>,
    pub predictions: PredictionCounts,
    pub objects: Vec<ObjectReport>,
    pub overall: Scores,
    pub time: TimeStats,
    pub settings: serde_json::Value,
    /// Objects with targets in the scenes but no model in the models folder (not evaluated).
    pub objects_without_model: Vec<u32>,
    pub notes: Vec<String>,
}

/// One image and object: its targets and estimates.
struct Task<'a> {
    camera: Camera,
    width: usize,
    /// All instances of the object in the image, with their target flag.
    gt: Vec<(Pose, bool)>,
    /// Top-n estimates, best first.
    ests: Vec<&'a Prediction>,
}

/// The tasks of one image, and its depth image if it has one.
struct ImageTasks<'a> {
    camera: Camera,
    depth: Option<PathBuf>,
    tasks: Vec<(u32, Task<'a>)>,
}

/// `test`: the image's measured distances when VSD can be computed (None: no VSD for this task).
fn score_task(t: &Task, m: &EvalModel, test: Option<&vsd::TestDist>) -> Tally {
    let d = m.diameter;
    let targets = t.gt.iter().filter(|g| g.1).count();
    let mut tally = Tally { targets, estimates: t.ests.len(), vsd_targets: if test.is_some() { targets } else { 0 }, ..Default::default() };
    if t.ests.is_empty() {
        return tally;
    }
    // Errors of every evaluated estimate against every instance.
    let (mut mssd, mut mspd, mut add, mut adi) = (vec![], vec![], vec![], vec![]);
    let mut best_sym = vec![];
    for e in &t.ests {
        let (mut r_mssd, mut r_mspd, mut r_add, mut r_adi, mut r_sym) = (vec![], vec![], vec![], vec![], vec![]);
        for (g, _) in &t.gt {
            let (err, k) = metrics::mssd_sym(&e.pose, g, &m.pts, &m.syms);
            r_mssd.push(err);
            r_sym.push(k);
            r_mspd.push(metrics::mspd_sym(&e.pose, g, &m.pts, &m.syms, &t.camera));
            r_add.push(metrics::add_f64(&e.pose, g, &m.pts));
            // As BOP: ADI is infinite when the bounding spheres do not overlap (centres a
            // diameter apart); it could not pass 0.1 d, and the search would be wasted.
            r_adi.push(if (e.pose.t - g.t).norm() < d { metrics::adi_exact(&e.pose, g, &m.pts) } else { f64::INFINITY });
        }
        mssd.push(r_mssd);
        mspd.push(r_mspd);
        add.push(r_add);
        adi.push(r_adi);
        best_sym.push(r_sym);
    }
    let count = |matches: Vec<Option<usize>>| matches.into_iter().flatten().filter(|&g| t.gt[g].1).count();
    for (k, f) in mssd_thresholds().into_iter().enumerate() {
        tally.mssd_hits[k] = count(matching::greedy_match(&mssd, f * d));
    }
    for (k, th) in mspd_thresholds(t.width).into_iter().enumerate() {
        tally.mspd_hits[k] = count(matching::greedy_match(&mspd, th));
    }
    tally.add_hits = count(matching::greedy_match(&add, ADD_THRESHOLD * d));
    tally.adi_hits = count(matching::greedy_match(&adi, ADD_THRESHOLD * d));
    tally.adds_hits = if m.symmetric { tally.adi_hits } else { tally.add_hits };
    if let Some(test) = test {
        tally.vsd_hits = vsd_hits(t, m, test);
    }
    let mean = |h: &[usize]| h.iter().sum::<usize>() as f64 / h.len() as f64;
    // Mean hits over the thresholds = AR × targets for this task.
    let (ar_mssd, ar_mspd) = (mean(&tally.mssd_hits), mean(&tally.mspd_hits));
    tally.ar_sum = match test {
        Some(_) => (mean(tally.vsd_hits.as_flattened()) + ar_mssd + ar_mspd) / 3.0,
        None => (ar_mssd + ar_mspd) / 2.0,
    };
    // The medians are over the targets matched at the loosest MSSD threshold (0.5 d): a pose
    // farther off is no match for that instance, and its error would say nothing about it.
    for (e, g) in matching::greedy_match(&mssd, MEDIAN_MATCH_MSSD * d).into_iter().enumerate() {
        if let Some(g) = g.filter(|&g| t.gt[g].1) {
            let truth = t.gt[g].0.compose(&m.syms[best_sym[e][g]]);
            let est = &t.ests[e].pose;
            tally.rot_err.push(metrics::rotation_error_deg(est, &truth));
            tally.trans_err.push((est.t - truth.t).norm());
        }
    }
    tally
}

/// Found targets by [τ][θ] for VSD: each estimate and each instance is rendered once, then
/// every (τ, θ) pair runs the greedy matching on the errors at τ with threshold θ.
fn vsd_hits(t: &Task, m: &EvalModel, test: &vsd::TestDist) -> [[usize; 10]; 10] {
    // As BOP (`overlapping_sphere_projections`): a pair whose bounding-sphere silhouettes
    // cannot overlap has error 1 at every τ, without rendering.
    let r = 0.5 * m.diameter;
    let overlap = |a: &Pose, b: &Pose| (a.t.xy() / a.t.z - b.t.xy() / b.t.z).norm() < r * (1.0 / a.t.z + 1.0 / b.t.z);
    let render = |p: &Pose| vsd::Rendered::new(&m.mesh, &t.camera, p, test);
    let ests: Vec<Option<vsd::Rendered>> = t.ests.par_iter().map(|e| t.gt.iter().any(|g| overlap(&e.pose, &g.0)).then(|| render(&e.pose))).collect();
    let gts: Vec<Option<vsd::Rendered>> = t.gt.par_iter().map(|g| t.ests.iter().any(|e| overlap(&e.pose, &g.0)).then(|| render(&g.0))).collect();
    let errors: Vec<Vec<[f64; 10]>> = t
        .ests
        .iter()
        .zip(&ests)
        .map(|(e, re)| {
            t.gt.iter()
                .zip(&gts)
                .map(|(g, rg)| match (re, rg) {
                    (Some(re), Some(rg)) if overlap(&e.pose, &g.0) => vsd::errors(re, rg, test.width, m.diameter),
                    _ => [1.0; 10],
                })
                .collect()
        })
        .collect();
    let mut hits = [[0; 10]; 10];
    for (k, row) in hits.iter_mut().enumerate() {
        let at_tau: Vec<Vec<f64>> = errors.iter().map(|es| es.iter().map(|e| e[k]).collect()).collect();
        for (h, th) in row.iter_mut().zip(vsd::thresholds()) {
            *h = matching::greedy_match(&at_tau, th).into_iter().flatten().filter(|&g| t.gt[g].1).count();
        }
    }
    hits
}

/// Scores `preds` against `scenes`. `only`: evaluate these objects only (empty = every object
/// with a target).
pub fn evaluate(scenes: &[Scene], preds: &Predictions, models: &ModelsDir, only: &[u32]) -> Result<Report> {
    let mut seen = BTreeSet::new();
    for s in scenes {
        if !seen.insert(s.scene_id) {
            bail!("scene {} is given twice ({})", s.scene_id, s.dir.display());
        }
    }
    let wanted = |o: u32| only.is_empty() || only.contains(&o);

    // Objects with a model are required for every estimate that could be scored.
    let mut missing: BTreeMap<u32, (usize, &Prediction)> = BTreeMap::new();
    for p in preds.rows.iter().filter(|p| wanted(p.obj_id)) {
        if !models.has(p.obj_id) {
            missing.entry(p.obj_id).or_insert((0, p)).0 += 1;
        }
    }
    if let Some((obj, (n, p))) = missing.iter().next() {
        bail!(
            "{n} prediction row(s) are for object {obj} (first: scene {}, image {}), but there is no model {}; objects without a model: {:?}",
            p.scene_id,
            p.im_id,
            models.ply_path(*obj).display(),
            missing.keys().collect::<Vec<_>>()
        );
    }

    // Objects to evaluate: those with a target somewhere.
    let mut target_objs = BTreeSet::new();
    for s in scenes {
        for im in s.images.values() {
            target_objs.extend(im.gt.iter().filter(|g| g.valid && wanted(g.obj_id)).map(|g| g.obj_id));
        }
    }
    let objects_without_model: Vec<u32> = target_objs.iter().copied().filter(|&o| !models.has(o)).collect();
    let objs: Vec<u32> = target_objs.iter().copied().filter(|&o| models.has(o)).collect();
    let loaded: Vec<EvalModel> = objs.par_iter().map(|&o| models.load(o)).collect::<Result<_>>()?;
    let model_of: BTreeMap<u32, &EvalModel> = loaded.iter().map(|m| (m.obj_id, m)).collect();

    // Group the estimates by image and object.
    let mut counts = PredictionCounts {
        format: preds.format,
        rows: preds.rows.len(),
        error_lines: preds.error_lines,
        rows_for_unknown_images: 0,
        rows_beyond_top_n: 0,
        rows_without_target: 0,
        rows_for_other_objects: 0,
    };
    let scene_of: BTreeMap<u32, &Scene> = scenes.iter().map(|s| (s.scene_id, s)).collect();
    let mut grouped: BTreeMap<(u32, u32, u32), Vec<&Prediction>> = BTreeMap::new();
    for p in &preds.rows {
        if !scene_of.get(&p.scene_id).is_some_and(|s| s.images.contains_key(&p.im_id)) {
            counts.rows_for_unknown_images += 1;
        } else if !wanted(p.obj_id) {
            counts.rows_for_other_objects += 1;
        } else {
            grouped.entry((p.scene_id, p.im_id, p.obj_id)).or_default().push(p);
        }
    }

    // Tasks grouped by image: VSD reads each test depth image once for all its objects.
    let mut images: Vec<ImageTasks> = Vec::new();
    // Per scene: images with tasks but no depth image, and images with tasks.
    let mut no_depth: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for s in scenes {
        for (&im_id, im) in &s.images {
            let mut tasks = Vec::new();
            for &obj in &objs {
                let gt: Vec<(Pose, bool)> = im.gt.iter().filter(|g| g.obj_id == obj).map(|g| (g.pose, g.valid)).collect();
                let n = gt.iter().filter(|g| g.1).count();
                if n == 0 {
                    continue;
                }
                let mut ests = grouped.remove(&(s.scene_id, im_id, obj)).unwrap_or_default();
                // Stable sort: equal scores keep the file order.
                ests.sort_by(|a, b| b.score.total_cmp(&a.score));
                counts.rows_beyond_top_n += ests.len().saturating_sub(n);
                ests.truncate(n);
                tasks.push((obj, Task { camera: im.camera, width: s.image_width, gt, ests }));
            }
            if tasks.is_empty() {
                continue;
            }
            let depth = Some(dataset::depth_path(&s.dir, im_id)).filter(|p| p.is_file());
            let n = no_depth.entry(s.scene_id).or_default();
            n.0 += depth.is_none() as usize;
            n.1 += 1;
            images.push(ImageTasks { camera: im.camera, depth, tasks });
        }
    }
    counts.rows_without_target = grouped.values().map(Vec::len).sum();

    // A model without faces renders nothing: VSD would call every estimate wrong.
    let has_faces = |obj: &u32| !model_of[obj].mesh.faces.is_empty();
    let per_image: Vec<Vec<(u32, Tally)>> = images
        .par_iter()
        .map(|im| {
            let test = match &im.depth {
                Some(p) if im.tasks.iter().any(|(o, _)| has_faces(o)) => Some(vsd::TestDist::read(p, &im.camera).with_context(|| format!("VSD: test depth {}", p.display()))?),
                _ => None,
            };
            Ok(im.tasks.par_iter().map(|(obj, t)| (*obj, score_task(t, model_of[obj], test.as_ref().filter(|_| has_faces(obj))))).collect())
        })
        .collect::<Result<_>>()?;
    let tallies: Vec<(u32, Tally)> = per_image.into_iter().flatten().collect();
    let mut per_obj: BTreeMap<u32, Tally> = BTreeMap::new();
    let mut all = Tally::default();
    for (obj, t) in &tallies {
        per_obj.entry(*obj).or_default().add(t);
        all.add(t);
    }
    let objects = loaded
        .iter()
        .map(|m| ObjectReport {
            obj_id: m.obj_id,
            diameter_mm: m.diameter,
            diameter_source: m.diameter_source,
            symmetric: m.symmetric,
            symmetry_transforms: m.syms.len(),
            model_vertices: m.pts.len(),
            scores: per_obj.get(&m.obj_id).cloned().unwrap_or_default().scores(),
        })
        .collect();

    // Times of the frames in the given scenes.
    let times: Vec<f64> = preds.frame_times.iter().filter(|((s, i), _)| scene_of.get(s).is_some_and(|sc| sc.images.contains_key(i))).map(|(_, &t)| t).collect();
    let time = TimeStats {
        frames: times.len(),
        mean_s: crate::synth::eval::mean(&times),
        median_s: crate::synth::eval::median(&times),
        inconsistent: preds.inconsistent_times,
    };

    let mut notes = Vec::new();
    for (scene, (missing, n)) in no_depth.iter().filter(|(_, (m, _))| *m > 0) {
        notes.push(format!(
            "scene {scene}: {missing} of {n} image(s) with targets have no depth image (depth/NNNNNN.png): no VSD for their targets, which count (AR_MSSD + AR_MSPD) / 2 towards AR (BOP's AR needs VSD)."
        ));
    }
    let faceless: Vec<u32> = loaded.iter().filter(|m| m.mesh.faces.is_empty()).map(|m| m.obj_id).collect();
    if !faceless.is_empty() {
        notes.push(format!("the models of objects {faceless:?} have no faces: no VSD for them (nothing to render), their targets count (AR_MSSD + AR_MSPD) / 2 towards AR."));
    }
    if models.info.is_none() {
        notes.push(format!("{} has no models_info.json: diameters come from the meshes and no object is treated as symmetric.", models.dir.display()));
    }
    for s in scenes.iter().filter(|s| !s.has_gt_info) {
        notes.push(format!("scene {} has no scene_gt_info.json: every ground-truth instance counts, whatever its visibility.", s.scene_id));
    }
    if !objects_without_model.is_empty() {
        notes.push(format!("objects {objects_without_model:?} have targets but no model in {}: not evaluated.", models.dir.display()));
    }
    let settings = serde_json::json!({
        "mssd_thresholds_diameter_fraction": mssd_thresholds(),
        "mspd_thresholds_px_at_width_640": mspd_thresholds(640),
        "add_threshold_diameter_fraction": ADD_THRESHOLD,
        "visib_gt_min": dataset::VISIB_GT_MIN,
        "max_sym_disc_step": symmetry::MAX_SYM_DISC_STEP,
        "n_top": "number of targets per image and object",
        "median_errors_over_matches_with_mssd_below_diameter_fraction": MEDIAN_MATCH_MSSD,
        "vsd": "BOP19: bop19 visibility, errors normalised by the diameter, AR_VSD = mean recall over the (tau, theta) pairs; AR = (AR_VSD + AR_MSSD + AR_MSPD) / 3, (AR_MSSD + AR_MSPD) / 2 for targets without a depth image",
        "vsd_delta_mm": vsd::DELTA_MM,
        "vsd_delta_note": "15 mm for every dataset; BOP19 uses 15 mm except for ITODD (5 mm)",
        "vsd_taus_diameter_fraction": vsd::taus(),
        "vsd_thresholds": vsd::thresholds(),
    });
    Ok(Report {
        scenes: scenes
            .iter()
            .map(|s| SceneReport { scene_id: s.scene_id, dir: s.dir.display().to_string(), images: s.images.len(), image_width: s.image_width, visib_fract_filter: s.has_gt_info })
            .collect(),
        predictions: counts,
        objects,
        overall: all.scores(),
        time,
        settings,
        objects_without_model,
        notes,
    })
}

impl Report {
    /// The human-readable summary printed on stdout.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let images: usize = self.scenes.iter().map(|s| s.images).sum();
        let _ = writeln!(
            o,
            "{} image(s) in {} scene(s), {} target instance(s), {} estimate(s) evaluated of {} read ({})",
            images,
            self.scenes.len(),
            self.overall.targets,
            self.overall.estimates,
            self.predictions.rows,
            self.predictions.format
        );
        let f = |v: f64| if v.is_finite() { format!("{v:.2}") } else { "-".to_string() };
        let _ = writeln!(o, "\n{:>8} {:>9} {:>4} {:>6} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8}", "obj_id", "diam(mm)", "sym", "targets", "est", "AR", "AR_VSD", "AR_MSSD", "AR_MSPD", "ADD", "ADI", "ADD(-S)", "re°(med)", "te(med)");
        let f3 = |v: f64| if v.is_finite() { format!("{v:.3}") } else { "-".to_string() };
        let row = |o: &mut String, name: &str, diam: String, sym: &str, s: &Scores| {
            let _ = writeln!(
                o,
                "{:>8} {:>9} {:>4} {:>7} {:>5} {:>7.3} {:>7} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>8} {:>8}",
                name,
                diam,
                sym,
                s.targets,
                s.estimates,
                s.ar,
                f3(s.ar_vsd),
                s.ar_mssd,
                s.ar_mspd,
                s.add_recall,
                s.adi_recall,
                s.add_s_recall,
                f(s.median_rotation_error_deg),
                f(s.median_translation_error_mm)
            );
        };
        for ob in &self.objects {
            row(&mut o, &ob.obj_id.to_string(), format!("{:.1}", ob.diameter_mm), if ob.symmetric { "yes" } else { "no" }, &ob.scores);
        }
        row(&mut o, "all", String::new(), "", &self.overall);
        let _ = writeln!(o, "\nrecall by threshold (all objects):");
        let list = |v: &[f64]| v.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>().join(" ");
        let _ = writeln!(o, "  MSSD < 0.05 … 0.50 d:          {}", list(&self.overall.recall_mssd));
        let _ = writeln!(o, "  MSPD < 5 … 50 px (× width/640): {}", list(&self.overall.recall_mspd));
        let s = &self.overall;
        if s.vsd_targets > 0 {
            // 100 (τ, θ) recalls are too many for a line: by θ, averaged over τ (all in the JSON).
            let by_theta: Vec<f64> = (0..10).map(|j| s.recall_vsd.iter().map(|r| r[j]).sum::<f64>() / 10.0).collect();
            let _ = writeln!(o, "  VSD < 0.05 … 0.50 (mean over τ 0.05 … 0.50 d, δ {} mm): {}", vsd::DELTA_MM, list(&by_theta));
        }
        if s.vsd_targets < s.targets {
            let _ = writeln!(o, "VSD: {} of {} target(s) scored (the others have no depth image or a model without faces; see the notes)", s.vsd_targets, s.targets);
        }
        let _ = writeln!(o, "ADD / ADI / ADD(-S): error < {ADD_THRESHOLD} d; re / te: median rotation (deg) and translation (mm) errors of the {} target(s) matched with MSSD < {MEDIAN_MATCH_MSSD} d", self.overall.matched);
        if self.time.frames > 0 {
            let _ = writeln!(o, "time per frame: mean {:.3} s, median {:.3} s over {} frame(s)", self.time.mean_s, self.time.median_s, self.time.frames);
        } else {
            let _ = writeln!(o, "time per frame: unknown (no time in the predictions)");
        }
        let p = &self.predictions;
        let ignored = [
            (p.error_lines, "failed frame(s) in the JSON-lines file, skipped"),
            (p.rows_for_unknown_images, "row(s) for images not in the given scenes, ignored"),
            (p.rows_beyond_top_n, "row(s) beyond the top n per image and object (n = targets), ignored"),
            (p.rows_without_target, "row(s) for an object with no target in that image, ignored"),
            (p.rows_for_other_objects, "row(s) for objects left out by --obj-id"),
            (self.time.inconsistent, "frame(s) whose rows disagree on the time (the largest kept)"),
        ];
        for (n, what) in ignored.iter().filter(|(n, _)| *n > 0) {
            let _ = writeln!(o, "{n} {what}");
        }
        for n in &self.notes {
            let _ = writeln!(o, "note: {n}");
        }
        o
    }
}

#[cfg(test)]
mod tests;
