//! `sam6d viz`: shows estimated poses in 3D. The scene is the frame's depth back-projected to a
//! coloured point cloud, plus the CAD model placed at each estimated pose and coloured by its
//! score.
//!
//! [`results`] reads result files (single-frame JSON or batch JSON-lines) and [`scene`] turns
//! one frame into render-ready data and viewpoints; both are plain Rust and always built, so
//! they are tested without a GPU. [`kiss`] draws them with kiss3d (a window, or offscreen into
//! a PNG) and exists only with the `viz` cargo feature, because wgpu is a long build.
#[cfg(feature = "viz")]
pub mod kiss;
pub mod results;
pub mod scene;

pub use results::{read_results, FrameRecord, Overrides};
pub use scene::{score_color, View, ViewKind, VizScene};

/// Keys of the interactive viewer (shown by `sam6d viz --help`; handled in `kiss`).
pub const KEYS: &str = concat!(
    "  Right / Left         next / previous instance (the view turns to it)\n",
    "  Space / Backspace    next / previous frame of a batch file (also PageDown / PageUp)\n",
    "  C                    view from the original camera's position\n",
    "  O                    three-quarter view of the selected instance\n",
    "  A                    all instances, or only the selected one\n",
    "  M                    hide / show the models (to see the cloud beneath)\n",
    "  mouse                left-drag turns, right-drag pans, wheel zooms\n",
    "  Esc / Q              quit",
);
