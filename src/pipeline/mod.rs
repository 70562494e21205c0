//! The one pose-estimation pipeline that `infer` and `serve` both call.
//!
//! `Pipeline::estimate(&Frame, &ObjectModel)` → `Estimate`. Today the stages are the
//! weights-free geometric ones (PPF voting → ICP → render-and-compare verification); the neural
//! SAM-6D stages plug in behind the same call.
pub mod geometric;
pub mod segment;
mod model;

pub use model::{load_models, CadUnit, ObjectModel};

use crate::device::Device;
use crate::geometry::Pose;
use crate::io::{Camera, DepthMm};
use image::RgbImage;

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
    /// The segmenter's mask proposals (empty without one), best predicted IoU first.
    pub proposals: Vec<segment::Proposal>,
    /// Indices into `proposals` of those the object could be, whose pixels the pose search used.
    pub selected: Vec<usize>,
}

/// Holds whatever is loaded once (networks, later) and runs frames through the stages.
pub struct Pipeline {
    pub options: Options,
}

impl Pipeline {
    pub fn new(options: Options) -> Pipeline {
        Pipeline { options }
    }

    pub fn estimate(&self, frame: &Frame, model: &ObjectModel) -> anyhow::Result<Estimate> {
        self.estimate_with(frame, model, &self.options)
    }

    /// As [`Pipeline::estimate`] with per-request options (the server's `det_score_thresh`).
    pub fn estimate_with(&self, frame: &Frame, model: &ObjectModel, options: &Options) -> anyhow::Result<Estimate> {
        geometric::estimate(frame, model, options, None)
    }
}
