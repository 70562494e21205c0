//! Software rendering of meshes: depth / mask / model-coordinate images for verification,
//! templates and overlays.
pub mod font;
pub mod masks;
pub mod overlay;
pub mod raster;
pub mod roi;
pub mod templates;

pub use raster::{render, Render};
