//! RGB and depth images. RGB: PNG/JPEG, 8-bit RGB, RGBA (alpha dropped) or grey.
//! Depth: single-channel 16-bit PNG; millimetres = raw × depth_scale; 0 = missing.
use super::InputError;
use std::path::Path;

pub use image::RgbImage;

/// Depth in millimetres, row-major, 0.0 where the sensor gave nothing.
#[derive(Clone, Debug)]
pub struct DepthMm {
    pub width: usize,
    pub height: usize,
    pub mm: Vec<f32>,
}

impl DepthMm {
    #[inline]
    pub fn at(&self, u: usize, v: usize) -> f32 {
        self.mm[v * self.width + u]
    }
}

/// Decodes encoded RGB bytes (PNG or JPEG). `what` names the source in errors.
pub fn decode_rgb(bytes: &[u8], what: &str) -> Result<RgbImage, InputError> {
    todo!("helper")
}

pub fn read_rgb(path: &Path) -> Result<RgbImage, InputError> {
    decode_rgb(&super::read_file(path)?, &path.display().to_string())
}

/// Decodes an encoded 16-bit single-channel PNG into millimetres.
pub fn decode_depth(bytes: &[u8], depth_scale: f64, what: &str) -> Result<DepthMm, InputError> {
    todo!("helper")
}

pub fn read_depth(path: &Path, depth_scale: f64) -> Result<DepthMm, InputError> {
    decode_depth(&super::read_file(path)?, depth_scale, &path.display().to_string())
}

/// Checks that colour and depth describe the same pixels.
pub fn check_same_size(rgb: &RgbImage, depth: &DepthMm) -> Result<(), InputError> {
    todo!("helper")
}
