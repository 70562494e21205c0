//! Reading what users give us: images, depth maps, camera intrinsics, CAD models, and writing results.
//! Every failure is an [`InputError`] that names the file or field and what was expected.
pub mod camera;
pub mod image;
pub mod pickle;

pub use camera::Camera;
pub use image::DepthMm;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{what}: {msg}")]
    Invalid { what: String, msg: String },
}

impl InputError {
    pub fn invalid(what: impl Into<String>, msg: impl Into<String>) -> InputError {
        InputError::Invalid { what: what.into(), msg: msg.into() }
    }
}

pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>, InputError> {
    std::fs::read(path).map_err(|source| InputError::Read { path: path.to_path_buf(), source })
}
