//! The one pose-estimation pipeline that `infer` and `serve` both call.
//!
//! `Pipeline::estimate(&Frame, &ObjectModel)` → `Estimate`. Today the stages are an optional
//! Segment Anything segmenter (mask proposals that restrict where the pose search looks), then
//! the weights-free geometric ones (PPF voting → ICP → render-and-compare verification); the
//! neural SAM-6D stages plug in behind the same call.
pub mod geometric;
pub mod segment;
mod model;

pub use model::{load_models, CadUnit, ObjectModel};

use crate::device::Device;
use crate::geometry::Pose;
use crate::io::{Camera, DepthMm};
use image::RgbImage;
use segment::{Proposal, Segmenter};
use std::sync::Mutex;

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
}

impl Default for Options {
    fn default() -> Self {
        Options { det_score_thresh: 0.4, max_instances: 10, device: Device::Cpu }
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
    pub search: Search,
}

/// Where the pose search looked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Search {
    /// No segmenter, or no proposal of the object's size.
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

/// Holds whatever is loaded once (the segmenter's network) and runs frames through the stages.
pub struct Pipeline {
    pub options: Options,
    /// Behind a mutex: tch tensors are not `Sync`, and batch inference shares one pipeline
    /// between threads (libtorch parallelises each forward itself).
    segmenter: Option<Mutex<Segmented>>,
    /// `geometric`, or `sam-tiny+geometric` and the like; fixed at construction, so that naming
    /// the pipeline never waits for the segmenter's lock.
    name: String,
}

/// The segmenter and its last answer: clients often ask for several objects in the same frame,
/// one request each, and the proposals do not depend on the object.
struct Segmented {
    segmenter: Segmenter,
    last: Option<(u64, Vec<Proposal>)>,
}

impl Pipeline {
    pub fn new(options: Options) -> Pipeline {
        Pipeline { options, segmenter: None, name: "geometric".into() }
    }

    pub fn with_segmenter(options: Options, segmenter: Option<Segmenter>) -> Pipeline {
        let name = segmenter.as_ref().map_or("geometric".into(), |s| format!("{}+geometric", s.kind));
        Pipeline { options, segmenter: segmenter.map(|segmenter| Mutex::new(Segmented { segmenter, last: None })), name }
    }

    /// What results name as their pipeline.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn estimate(&self, frame: &Frame, model: &ObjectModel) -> anyhow::Result<Estimate> {
        self.estimate_with(frame, model, &self.options)
    }

    /// As [`Pipeline::estimate`] with per-request options (the server's `det_score_thresh`).
    pub fn estimate_with(&self, frame: &Frame, model: &ObjectModel, options: &Options) -> anyhow::Result<Estimate> {
        let Some(segmenter) = &self.segmenter else { return geometric::estimate(frame, model, options, None) };
        let started = std::time::Instant::now();
        let (proposals, mut timings) = propose(&mut segmenter.lock().unwrap_or_else(|e| e.into_inner()), &frame.rgb)?;
        let g = &model.geometric.params;
        let t0 = std::time::Instant::now();
        let selection = geometric::proposals::select(&proposals, &frame.depth, &frame.camera, model.diameter, (g.z_min, g.z_max));
        timings.push(("segment_select", t0.elapsed().as_secs_f64() * 1e3));
        // Nothing object-sized among the proposals: search everywhere rather than nowhere.
        let mut est = geometric::estimate(frame, model, options, selection.as_ref().map(|s| s.region.as_slice()))?;
        est.search = if selection.is_some() { Search::Proposals } else { Search::WholeImage };
        if selection.is_some() && est.poses.is_empty() {
            // Segmenters miss objects (thin, dark, occluded, or never proposed at SAM's strict
            // thresholds): a verified pose from the whole image beats none. Its stage times add up.
            let whole = geometric::estimate(frame, model, options, None)?;
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
        Ok(est)
    }
}

/// The segmenter's proposals for `rgb`, from the one-frame cache when it is the same image
/// (then the segmenter stages are timed as 0).
fn propose(s: &mut Segmented, rgb: &RgbImage) -> anyhow::Result<(Vec<Proposal>, Vec<(&'static str, f64)>)> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    rgb.dimensions().hash(&mut h);
    rgb.as_raw().hash(&mut h);
    let key = h.finish();
    let (proposals, t) = match &s.last {
        Some((k, p)) if *k == key => (p.clone(), Default::default()),
        _ => {
            let (p, t) = s.segmenter.propose(rgb)?;
            s.last = Some((key, p.clone()));
            (p, t)
        }
    };
    Ok((proposals, vec![("segment_encoder", t.encoder_ms), ("segment_decoder", t.decoder_ms), ("segment_postprocess", t.postprocess_ms)]))
}
