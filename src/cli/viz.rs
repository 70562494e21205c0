//! `sam6d viz`: the estimated poses in 3D, in a window or rendered offscreen to a PNG.
use anyhow::Context;
use sam6d::pipeline::CadUnit;
use sam6d::viz::{self, FrameRecord, Overrides, ViewKind, VizScene};
use std::path::PathBuf;

/// Show the model at the estimated poses in 3D, over the frame's point cloud.
///
/// Reads a result of `sam6d infer` (its JSON, or a batch's JSON-lines file: one frame per line)
/// and the inputs it recorded (rgb, depth, cam, cad; --rgb/--depth/--cam/--cad replace them).
/// The depth is back-projected to a point cloud coloured from the RGB image, and the CAD model
/// is drawn at each estimated pose, coloured by its score: red (0), yellow (0.5), green (1).
///
/// Without --png it opens an interactive window (a display is needed). With --png it renders
/// offscreen to an image: no display, and no GPU either with Mesa's software Vulkan driver
/// (Debian/Ubuntu package mesa-vulkan-drivers). --view camera renders from the original camera
/// with its intrinsics, so the picture lines up with the RGB image; --view orbit is a
/// three-quarter view of one instance.
///
/// Needs a build with the `viz` cargo feature (cargo build --release --features viz).
#[derive(clap::Args)]
#[command(after_long_help = after_help(), after_help = after_help())]
pub struct VizArgs {
    /// Result of `sam6d infer`: its JSON (compact or --pretty), or a batch JSON-lines file.
    #[arg(value_name = "RESULT")]
    result: PathBuf,

    /// Colour image (default: the one recorded in the result's "inputs").
    #[arg(long, value_name = "FILE")]
    rgb: Option<PathBuf>,

    /// Depth image, 16-bit PNG (default: the recorded one).
    #[arg(long, value_name = "FILE")]
    depth: Option<PathBuf>,

    /// Camera intrinsics, camera.json or BOP scene_camera.json (default: the recorded one).
    #[arg(long, value_name = "FILE")]
    cam: Option<PathBuf>,

    /// CAD model, PLY (default: the recorded one; a result of `infer --connect` records none).
    #[arg(long, value_name = "FILE")]
    cad: Option<PathBuf>,

    /// Unit of the CAD model's coordinates [default: what infer used, told from the recorded
    /// model diameter, else mm].
    #[arg(long, value_enum)]
    cad_unit: Option<CadUnit>,

    /// Render to this PNG file instead of opening a window (no display needed).
    #[arg(long, value_name = "FILE")]
    png: Option<PathBuf>,

    /// Size of the picture (or the window), WIDTHxHEIGHT [default: the frame's size].
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    size: Option<(u32, u32)>,

    /// Viewpoint of the --png picture (the window starts at the camera; keys C and O switch).
    #[arg(long, value_enum, default_value_t = ViewKind::Camera, requires = "png")]
    view: ViewKind,

    /// With --png: the frame of a batch file to render (1 = first line).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), requires = "png")]
    frame: u32,

    /// With --png --view orbit: the instance to look at (1 = best).
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), requires = "png")]
    instance: u32,

    /// Most cloud points to draw (a regular grid of pixels is kept).
    #[arg(long, value_name = "N", default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1000..))]
    max_points: u64,
}

fn after_help() -> String {
    format!(
        "Examples:\n  \
  sam6d infer --rgb rgb.png --depth depth.png --cam camera.json --cad obj_000005.ply --out pose.json\n  \
  sam6d viz pose.json                                        # interactive window\n  \
  sam6d viz pose.json --png pose.png --size 640x480          # offscreen, aligned with rgb.png\n  \
  sam6d viz pose.json --png side.png --view orbit            # 3/4 view of the best instance\n  \
  sam6d viz poses.jsonl --png f3.png --frame 3               # one frame of a batch\n\n\
Window keys:\n{}",
        viz::KEYS
    )
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let err = || format!("'{s}' is not a size: expected WIDTHxHEIGHT, e.g. 640x480");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(err)?;
    let (w, h): (u32, u32) = (w.trim().parse().map_err(|_| err())?, h.trim().parse().map_err(|_| err())?);
    if !(1..=8192).contains(&w) || !(1..=8192).contains(&h) {
        return Err(format!("{w}x{h}: width and height must be between 1 and 8192"));
    }
    Ok((w, h))
}

pub fn run(args: VizArgs) -> anyhow::Result<()> {
    if !cfg!(feature = "viz") {
        anyhow::bail!(NO_FEATURE);
    }
    let mut frames = viz::read_results(&args.result)?;
    let overrides = Overrides { rgb: args.rgb.clone(), depth: args.depth.clone(), cam: args.cam.clone(), cad: args.cad.clone() };
    frames.iter_mut().for_each(|f| f.apply(&overrides));
    let (unit, max_points) = (args.cad_unit, args.max_points as usize);
    let load = move |rec: &FrameRecord| VizScene::load(rec, unit, max_points);
    match &args.png {
        Some(png) => {
            let k = args.frame as usize;
            anyhow::ensure!(k <= frames.len(), "--frame {k}: {} holds {} frame(s)", args.result.display(), frames.len());
            let rec = &frames[k - 1];
            let scene = load(rec).with_context(|| format!("frame {} ({})", k, rec.label))?;
            let i = args.instance as usize;
            anyhow::ensure!(
                args.view != ViewKind::Orbit || i <= scene.instances.len().max(1),
                "--instance {i}: frame {} has {} instance(s)",
                rec.label,
                scene.instances.len()
            );
            let (w, h) = args.size.unwrap_or((scene.width, scene.height));
            render_png(&scene, args.view, i - 1, w, h, png)
        }
        None => window(&frames, &load, args.size),
    }
}

#[cfg(feature = "viz")]
fn render_png(scene: &VizScene, view: ViewKind, instance: usize, w: u32, h: u32, out: &std::path::Path) -> anyhow::Result<()> {
    let img = viz::kiss::render_image(scene, view, instance, w, h)?;
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)?;
    sam6d::results::write_atomic(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("{} instance(s) of {} -> {} ({w}x{h})", scene.instances.len(), scene.label, out.display());
    Ok(())
}

#[cfg(feature = "viz")]
fn window(frames: &[FrameRecord], load: &dyn Fn(&FrameRecord) -> anyhow::Result<VizScene>, size: Option<(u32, u32)>) -> anyhow::Result<()> {
    viz::kiss::run_window(frames, load, size)
}

const NO_FEATURE: &str = "this sam6d was built without the 3D viewer: rebuild it with the `viz` feature \
     (cargo build --release --features viz)";

#[cfg(not(feature = "viz"))]
fn render_png(_: &VizScene, _: ViewKind, _: usize, _: u32, _: u32, _: &std::path::Path) -> anyhow::Result<()> {
    anyhow::bail!(NO_FEATURE)
}

#[cfg(not(feature = "viz"))]
fn window(_: &[FrameRecord], _: &dyn Fn(&FrameRecord) -> anyhow::Result<VizScene>, _: Option<(u32, u32)>) -> anyhow::Result<()> {
    anyhow::bail!(NO_FEATURE)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("320x240"), Ok((320, 240)));
        assert_eq!(parse_size("64X48"), Ok((64, 48)));
        assert!(parse_size("320").unwrap_err().contains("WIDTHxHEIGHT"));
        assert!(parse_size("0x10").unwrap_err().contains("between 1 and 8192"));
        assert!(parse_size("axb").is_err());
    }
}
