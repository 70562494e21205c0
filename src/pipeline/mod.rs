//! The one pose-estimation pipeline that `infer` and `serve` both call.
//!
//! `Pipeline::estimate(&Frame, &ObjectModel)` → `Estimate`. The stages: an optional Segment
//! Anything segmenter (class-agnostic mask proposals); with `--pipeline sam6d`, SAM-6D's ISM,
//! which scores the proposals against rendered templates of the object with DINOv2 and keeps
//! the object's; then the poses: SAM-6D's PEM (two-stage point matching) for each ISM
//! detection, or the weights-free geometric stage (PPF voting → ICP → render-and-compare
//! verification) searching inside the kept masks, or the whole image without a segmenter.
pub mod geometric;
pub mod ism;
pub mod pem;
pub mod segment;
mod model;

pub use model::{load_models, model_files, CadUnit, ObjectModel};

use crate::device::Device;
use crate::geometry::Pose;
use crate::io::{Camera, DepthMm};
use image::RgbImage;
use ism::score::IsmScores;
use ism::{Ism, ObjectTemplates};
use pem::model::Pem;
use pem::stage::{ObjectPemData, PemPose};
use segment::{Proposal, Segmenter};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One RGB-D observation with its intrinsics. Sizes are checked on construction.
#[derive(Clone, Debug)]
pub struct Frame {
    pub rgb: RgbImage,
    pub depth: DepthMm,
    pub camera: Camera,
}

impl Frame {
    pub fn new(rgb: RgbImage, depth: DepthMm, camera: Camera) -> Result<Frame, crate::io::InputError> {
        crate::io::image::check_same_size(&rgb, &depth)?;
        Ok(Frame { rgb, depth, camera })
    }

    pub fn width(&self) -> usize {
        self.depth.width
    }

    pub fn height(&self) -> usize {
        self.depth.height
    }
}

/// Knobs a user may turn per run or per request.
#[derive(Clone, Debug)]
pub struct Options {
    /// Poses whose verification score is below this are dropped (SAM-6D's `det_score_thresh`).
    pub det_score_thresh: f32,
    /// At most this many instances are returned, best first.
    pub max_instances: usize,
    pub device: Device,
    /// Polish the PEM's poses with the geometric stage's ICP against the depth (`--refine icp`).
    pub refine_icp: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { det_score_thresh: 0.4, max_instances: 10, device: Device::Cpu, refine_icp: false }
    }
}

/// One detected instance.
#[derive(Clone, Copy, Debug)]
pub struct PoseEstimate {
    /// Model → camera, millimetres.
    pub pose: Pose,
    /// Verification score in [0, 1]: how well the rendered model explains the measured depth.
    pub score: f32,
}

#[derive(Clone, Debug, Default)]
pub struct Estimate {
    /// Best first.
    pub poses: Vec<PoseEstimate>,
    /// (stage, milliseconds), in execution order.
    pub timings: Vec<(&'static str, f64)>,
    /// The segmenter's mask proposals, best predicted IoU first; `None` without a segmenter.
    pub proposals: Option<Vec<Proposal>>,
    /// Indices into `proposals` of those the object could be, whose pixels the pose search used.
    pub selected: Vec<usize>,
    /// The ISM's scores of the proposals it kept (semantic score above 0.2), in proposal order;
    /// `None` without the ISM.
    pub ism: Option<Vec<IsmScores>>,
    /// The PEM's pose of every detection it was given (ISM order; `poses` holds the best,
    /// duplicates removed); `None` without the PEM.
    pub pem: Option<Vec<PemPose>>,
    pub search: Search,
}

/// Where the pose search looked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Search {
    /// No segmenter, or no proposal could be the object (by size, or by the ISM's scores).
    #[default]
    WholeImage,
    /// Inside the selected proposals.
    Proposals,
    /// Inside the proposals found nothing, then the whole image.
    WholeImageFallback,
}

impl Search {
    pub fn name(self) -> &'static str {
        match self {
            Search::WholeImage => "whole_image",
            Search::Proposals => "proposals",
            Search::WholeImageFallback => "proposals_then_whole_image",
        }
    }
}

/// Frames whose points the pipeline keeps (each about 10 MB for 640×480).
const RECENT_SCENES: usize = 4;

/// Holds whatever is loaded once (the networks, the objects' template descriptors) and runs
/// frames through the stages.
pub struct Pipeline {
    pub options: Options,
    /// Behind a mutex: tch tensors are not `Sync`, and batch inference shares one pipeline
    /// between threads (libtorch parallelises each forward itself).
    neural: Option<Mutex<Neural>>,
    /// `geometric`, `sam-tiny+geometric`, `sam-tiny+ism+geometric`...; fixed at construction,
    /// so that naming the pipeline never waits for the lock.
    name: String,
    /// Where template descriptors are cached between runs (None: not cached).
    cache_dir: Option<PathBuf>,
    has_ism: bool,
    /// The latest frames' points, newest last: clients and `--cad` folders ask for several
    /// objects in one frame, and the points do not depend on the object. A few frames, not
    /// one, so that server workers or `infer --jobs` working on different frames at once do not
    /// evict each other's.
    recent_scenes: Mutex<VecDeque<Arc<geometric::FrameScene>>>,
}

/// The tch stages and what they remember between calls.
struct Neural {
    segmenter: Segmenter,
    /// The last frame's proposals: clients often ask for several objects in the same frame, one
    /// request each, and the proposals do not depend on the object.
    last: Option<(u64, Vec<Proposal>)>,
    ism: Option<Ism>,
    /// Template descriptors per object name, made on first use (or by [`Pipeline::prepare`]).
    templates: HashMap<String, ObjectTemplates>,
    /// SAM-6D's pose network with its weights file (part of cache keys), and its per-object
    /// template features (made like `templates`).
    pem: Option<(Pem, PathBuf)>,
    pem_data: HashMap<String, ObjectPemData>,
}

impl Pipeline {
    pub fn new(options: Options) -> Pipeline {
        Pipeline::with_segmenter(options, None)
    }

    pub fn with_segmenter(options: Options, segmenter: Option<Segmenter>) -> Pipeline {
        let name = segmenter.as_ref().map_or("geometric".into(), |s| format!("{}+geometric", s.kind));
        let neural = segmenter.map(|segmenter| Mutex::new(Neural { segmenter, last: None, ism: None, templates: HashMap::new(), pem: None, pem_data: HashMap::new() }));
        Pipeline { options, neural, name, cache_dir: None, has_ism: false, recent_scenes: Mutex::new(VecDeque::new()) }
    }

    /// SAM-6D: the segmenter's proposals scored by the ISM; the poses of its detections from
    /// the PEM, or, without it, from the geometric stage searching inside them. Template
    /// descriptors are cached in `cache_dir`.
    pub fn sam6d(options: Options, segmenter: Segmenter, ism: Ism, pem: Option<(Pem, PathBuf)>, cache_dir: Option<PathBuf>) -> Pipeline {
        let pose_stage = if pem.is_some() { "pem" } else { "geometric" };
        // DINOv2 and the PEM's backbone in reduced precision move scores and poses a little, so
        // SAM-6D's results say so (the segmenter's precision only changes which masks exist).
        let precision = match ism.config().precision {
            crate::device::Precision::F32 => String::new(),
            p => format!("+{p}"),
        };
        let name = format!("{}+ism-{}+{pose_stage}{precision}", segmenter.kind, ism.config().dino.model_name());
        let neural = Mutex::new(Neural { segmenter, last: None, ism: Some(ism), templates: HashMap::new(), pem, pem_data: HashMap::new() });
        Pipeline { options, neural: Some(neural), name, cache_dir, has_ism: true, recent_scenes: Mutex::new(VecDeque::new()) }
    }

    pub fn has_segmenter(&self) -> bool {
        self.neural.is_some()
    }

    pub fn has_ism(&self) -> bool {
        self.has_ism
    }

    /// What results name as their pipeline.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes the object's template descriptors now rather than at its first frame (a server
    /// calls this at start, so that no request pays for it). A no-op without the ISM.
    pub fn prepare(&self, model: &ObjectModel) -> anyhow::Result<()> {
        if let Some(neural) = &self.neural {
            let mut n = neural.lock().unwrap_or_else(|e| e.into_inner());
            n.templates_of(model, self.cache_dir.as_deref())?;
            n.pem_data_of(model, self.cache_dir.as_deref())?;
        }
        Ok(())
    }

    pub fn estimate(&self, frame: &Frame, model: &ObjectModel) -> anyhow::Result<Estimate> {
        self.estimate_with(frame, model, &self.options)
    }

    /// The frame's points for the geometric stages: a recent frame's when this is the same
    /// frame (its clouds are shared then), else made now and remembered.
    fn frame_scene(&self, frame: &Frame, model: &ObjectModel) -> Arc<geometric::FrameScene> {
        let p = &model.geometric.params;
        let is_this = |s: &Arc<geometric::FrameScene>| s.is_of(&frame.depth, &frame.camera, p.z_min, p.z_max);
        if let Some(scene) = self.recent_scenes.lock().unwrap_or_else(|e| e.into_inner()).iter().rev().find(|s| is_this(s)) {
            return scene.clone();
        }
        // Made outside the lock: another thread may be making another frame's meanwhile.
        let scene = Arc::new(geometric::FrameScene::new(&frame.depth, &frame.camera, p.z_min, p.z_max));
        let mut recent = self.recent_scenes.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_SCENES {
            recent.pop_front();
        }
        recent.push_back(scene.clone());
        scene
    }

    /// As [`Pipeline::estimate`] with per-request options (the server's `det_score_thresh`).
    pub fn estimate_with(&self, frame: &Frame, model: &ObjectModel, options: &Options) -> anyhow::Result<Estimate> {
        if let Some(hint) = crate::io::image::depth_hint(&frame.depth, frame.camera.depth_scale) {
            tracing::warn!("{hint}");
        }
        let t_scene = Instant::now();
        let Some(neural) = &self.neural else {
            let scene = self.frame_scene(frame, model);
            let scene_ms = t_scene.elapsed().as_secs_f64() * 1e3;
            let mut est = geometric::estimate_in(&scene, frame, model, options, None)?;
            add_scene_time(&mut est, scene_ms);
            return Ok(est);
        };
        let started = Instant::now();
        let (w, h) = (frame.width(), frame.height());
        let (proposals, timings, selection, ism) = {
            let mut n = neural.lock().unwrap_or_else(|e| e.into_inner());
            let (proposals, mut timings) = n.propose(&frame.rgb)?;
            let t0 = Instant::now();
            if n.ism.is_some() {
                n.templates_of(model, self.cache_dir.as_deref())?;
                let t_templates = t0.elapsed().as_secs_f64() * 1e3;
                let t1 = Instant::now();
                let (ism, templates) = (n.ism.as_ref().expect("checked above"), &n.templates[&model.name]);
                let scores = ism.detect(frame, &proposals, templates)?;
                timings.push(("ism_templates", t_templates));
                timings.push(("ism", t1.elapsed().as_secs_f64() * 1e3));
                if n.pem.is_some() {
                    let all = n.pem_poses(frame, model, options, &proposals, &scores, self.cache_dir.as_deref(), &mut timings)?;
                    let best = best_poses(&all, &proposals, options.max_instances);
                    timings.push(("total", started.elapsed().as_secs_f64() * 1e3));
                    return Ok(Estimate {
                        poses: best.iter().map(|p| PoseEstimate { pose: p.pose, score: p.score }).collect(),
                        timings,
                        selected: best.iter().map(|p| p.index).collect(),
                        proposals: Some(proposals),
                        ism: Some(scores),
                        pem: Some(all),
                        search: Search::Proposals,
                    });
                }
                let kept = ism::select(&scores, &proposals, options.max_instances);
                let selection = (!kept.is_empty()).then(|| geometric::proposals::region(&proposals, kept, w, h));
                (proposals, timings, selection, Some(scores))
            } else {
                let g = &model.geometric.params;
                let selection = geometric::proposals::select(&proposals, &frame.depth, &frame.camera, model.diameter, (g.z_min, g.z_max));
                timings.push(("segment_select", t0.elapsed().as_secs_f64() * 1e3));
                (proposals, timings, selection, None)
            }
        };
        // Nothing the object could be among the proposals: search everywhere rather than nowhere.
        let t_scene = Instant::now();
        let scene = self.frame_scene(frame, model);
        let scene_ms = t_scene.elapsed().as_secs_f64() * 1e3;
        let mut est = geometric::estimate_in(&scene, frame, model, options, selection.as_ref().map(|s| s.region.as_slice()))?;
        add_scene_time(&mut est, scene_ms);
        est.search = if selection.is_some() { Search::Proposals } else { Search::WholeImage };
        if selection.is_some() && est.poses.is_empty() {
            // Segmenters miss objects (thin, dark, occluded, or never proposed at SAM's strict
            // thresholds): a verified pose from the whole image beats none. Its stage times add up.
            let whole = geometric::estimate_in(&scene, frame, model, options, None)?;
            for (stage, ms) in whole.timings {
                match est.timings.iter_mut().find(|(k, _)| *k == stage) {
                    Some(t) => t.1 += ms,
                    None => est.timings.push((stage, ms)),
                }
            }
            est.poses = whole.poses;
            est.search = Search::WholeImageFallback;
        }
        est.timings.splice(0..0, timings);
        if let Some(total) = est.timings.iter_mut().find(|(k, _)| *k == "total") {
            total.1 = started.elapsed().as_secs_f64() * 1e3;
        }
        est.selected = selection.map(|s| s.kept).unwrap_or_default();
        est.proposals = Some(proposals);
        est.ism = ism;
        Ok(est)
    }
}

/// The frame's points (made or found) count as preprocessing.
fn add_scene_time(est: &mut Estimate, ms: f64) {
    for (stage, t) in est.timings.iter_mut() {
        if *stage == "preprocess" || *stage == "total" {
            *t += ms;
        }
    }
}

/// The PEM's poses to answer with: best score first, one per object (a detection whose box
/// overlaps a better one's by IoU > 0.25 is the same object: SAM-6D keeps such duplicates, Q20),
/// at most `max`.
fn best_poses(all: &[PemPose], proposals: &[Proposal], max: usize) -> Vec<PemPose> {
    let candidates: Vec<(usize, f32)> = all.iter().map(|p| (p.index, p.score)).collect();
    ism::distinct_best(&candidates, proposals, max).into_iter().map(|k| all[k]).collect()
}

impl Neural {
    /// The segmenter's proposals for `rgb`, from the one-frame cache when it is the same image
    /// (then the segmenter stages are timed as 0).
    fn propose(&mut self, rgb: &RgbImage) -> anyhow::Result<(Vec<Proposal>, Vec<(&'static str, f64)>)> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        rgb.dimensions().hash(&mut h);
        rgb.as_raw().hash(&mut h);
        let key = h.finish();
        let (proposals, t) = match &self.last {
            Some((k, p)) if *k == key => (p.clone(), Default::default()),
            _ => {
                let (p, t) = self.segmenter.propose(rgb)?;
                self.last = Some((key, p.clone()));
                (p, t)
            }
        };
        Ok((proposals, vec![("segment_encoder", t.encoder_ms), ("segment_decoder", t.decoder_ms), ("segment_postprocess", t.postprocess_ms)]))
    }

    /// The PEM's pose of every ISM detection scoring above `det_score_thresh` (SAM-6D's rule),
    /// polished by ICP with `refine_icp`; the stages' times go to `timings`.
    #[allow(clippy::too_many_arguments)]
    fn pem_poses(&mut self, frame: &Frame, model: &ObjectModel, options: &Options, proposals: &[Proposal], scores: &[IsmScores], cache_dir: Option<&std::path::Path>, timings: &mut Vec<(&'static str, f64)>) -> anyhow::Result<Vec<PemPose>> {
        let t0 = Instant::now();
        self.pem_data_of(model, cache_dir)?;
        timings.push(("pem_templates", t0.elapsed().as_secs_f64() * 1e3));
        let Some((pem, _)) = &self.pem else { anyhow::bail!("no PEM in this pipeline") };
        let t1 = Instant::now();
        let detections: Vec<(usize, f32)> = scores.iter().filter(|s| s.score > options.det_score_thresh).map(|s| (s.index, s.score)).collect();
        let mut all = pem::stage::estimate(pem, &self.pem_data[&model.name], frame, proposals, &detections);
        timings.push(("pem", t1.elapsed().as_secs_f64() * 1e3));
        if options.refine_icp {
            let t2 = Instant::now();
            let poses: Vec<_> = all.iter().map(|p| p.pose).collect();
            for (p, (refined, _)) in all.iter_mut().zip(geometric::refine_poses(frame, model, &poses)) {
                p.pose = refined;
            }
            timings.push(("refine_icp", t2.elapsed().as_secs_f64() * 1e3));
        }
        Ok(all)
    }

    /// Makes the object's PEM template features unless made already; a no-op without the PEM.
    fn pem_data_of(&mut self, model: &ObjectModel, cache_dir: Option<&std::path::Path>) -> anyhow::Result<()> {
        if let Some((pem, weights)) = &self.pem {
            if !self.pem_data.contains_key(&model.name) {
                let t0 = Instant::now();
                let data = pem::stage::object_data_cached(pem, weights, model, cache_dir)?;
                tracing::info!("PEM templates of {} ready in {:.0} ms", model.name, t0.elapsed().as_secs_f64() * 1e3);
                self.pem_data.insert(model.name.clone(), data);
            }
        }
        Ok(())
    }

    /// Makes the object's template descriptors unless made already; a no-op without the ISM.
    fn templates_of(&mut self, model: &ObjectModel, cache_dir: Option<&std::path::Path>) -> anyhow::Result<()> {
        if let Some(ism) = &self.ism {
            if !self.templates.contains_key(&model.name) {
                let t = ism.templates(model, cache_dir)?;
                self.templates.insert(model.name.clone(), t);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(offset: f32) -> Frame {
        let (w, h) = (32, 24);
        let depth = DepthMm { width: w, height: h, mm: (0..w * h).map(|i| 800.0 + offset + (i % w) as f32).collect() };
        let cam = Camera { fx: 500.0, fy: 500.0, cx: 16.0, cy: 12.0, depth_scale: 1.0 };
        Frame::new(RgbImage::new(w as u32, h as u32), depth, cam).unwrap()
    }

    /// Two frames asked for in turn (two workers) keep their points; a fifth frame evicts the
    /// oldest.
    #[test]
    fn recent_frames_keep_their_points() {
        let pipeline = Pipeline::new(Options::default());
        let model = ObjectModel::from_mesh("cube", crate::geometry::shapes::cuboid(50.0, 50.0, 50.0)).unwrap();
        let (a, b) = (frame(0.0), frame(1.0));
        let sa = pipeline.frame_scene(&a, &model);
        let sb = pipeline.frame_scene(&b, &model);
        assert!(!Arc::ptr_eq(&sa, &sb));
        assert!(Arc::ptr_eq(&sa, &pipeline.frame_scene(&a, &model)));
        assert!(Arc::ptr_eq(&sb, &pipeline.frame_scene(&b, &model)));
        for k in 2..=RECENT_SCENES {
            pipeline.frame_scene(&frame(k as f32), &model);
        }
        assert!(!Arc::ptr_eq(&sa, &pipeline.frame_scene(&a, &model)), "the oldest frame stayed");
    }
}
