//! `sam6d templates`: renders a CAD model's 42 SAM-6D templates to a folder, for inspection
//! (and in SAM-6D's `templates/` layout, so the reference ISM/PEM could read them).
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use sam6d::pipeline::CadUnit;
use sam6d::render::templates::{self, TemplateView, SIZE, VIEWS};
use serde_json::json;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Render the 42 SAM-6D object templates of a CAD model into a folder.
///
/// The views are SAM-6D's level-0 viewpoints, in its order: the same 42 poses its Blender
/// render script (Render/render_custom_templates.py) uses, the camera 4r mm from the model origin
/// (r: SAM-6D's normalisation radius of the model), 512×512 pixels, fx = fy ≈ 711.1,
/// cx = cy = 255.5. They are rendered with this program's rasteriser, not Blender: masks and
/// model coordinates follow the geometry exactly; colours are the mesh's vertex colours under
/// a point light behind the camera, close to but not the same as SAM-6D's Cycles renders.
/// Everything written is in millimetres.
#[derive(clap::Args)]
#[command(after_help = "Files written into DIR, for i = 0..41 (SAM-6D's templates/ layout):\n  \
  rgb_{i}.png     colour view, black background\n  \
  mask_{i}.png    object mask, 0 or 255\n  \
  xyz_{i}.npy     512×512×3 float16: model coordinates (mm) of the visible surface, 0 off the object\n  \
  templates.json  camera K, r, and per view the rotation obj_R (model → camera, OpenCV axes),\n                  \
  translation t_mm and the mask's pixel count\n  \
  overview.png    the 42 colour views on one 7 × 6 contact sheet, labelled with i\n\n\
Examples:\n  \
  sam6d templates --cad obj_000005.ply --out templates/\n  \
  sam6d templates --cad model_in_metres.ply --cad-unit m --out templates/ --force")]
pub struct TemplatesArgs {
    /// CAD model: PLY (ASCII or binary) with faces, in millimetres unless --cad-unit m.
    /// Vertex colours are used when present (grey otherwise).
    #[arg(long, value_name = "FILE")]
    cad: PathBuf,

    /// Unit of the CAD model's coordinates (everything written is in mm).
    #[arg(long, value_enum, default_value_t = CadUnit::Mm)]
    cad_unit: CadUnit,

    /// Folder to write the templates into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Replace templates already in DIR.
    #[arg(long)]
    force: bool,
}

pub fn run(args: TemplatesArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    if args.out.exists() && !args.out.is_dir() {
        anyhow::bail!("--out {} exists and is not a folder", args.out.display());
    }
    let existing = args.out.join("rgb_0.png");
    if existing.exists() && !args.force {
        anyhow::bail!("{} already holds templates ({} exists); pass --force to replace them", args.out.display(), existing.display());
    }

    let mut mesh = sam6d::geometry::ply::read_ply(&args.cad).with_context(|| format!("loading CAD model {}", args.cad.display()))?;
    if args.cad_unit == CadUnit::M {
        for v in &mut mesh.vertices {
            *v *= 1000.0;
        }
    }
    anyhow::ensure!(!mesh.faces.is_empty(), "CAD model {} has no faces: templates need a triangle mesh", args.cad.display());
    let r = templates::normalisation_radius(&mesh);
    anyhow::ensure!(r > 0.0 && r.is_finite(), "CAD model {} has no surface area (degenerate triangles)", args.cad.display());
    if args.cad_unit == CadUnit::Mm && r < 0.5 {
        tracing::warn!("CAD model {} is only {r:.3} units in radius: it looks like metres; pass --cad-unit m", args.cad.display());
    }

    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(VIEWS as u64);
        bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} views  {msg}").expect("valid template"));
        bar.set_message("rendering");
        bar
    } else {
        ProgressBar::hidden()
    };
    let t_render = Instant::now();
    let views = templates::render_templates_with(&mesh, &|_| bar.inc(1));
    let render_s = t_render.elapsed().as_secs_f64();
    bar.set_message("writing");
    templates::write_templates(&args.out, &views)?;
    write_json(&args.out.join("templates.json"), &args.cad, r, &views)?;
    let overview = args.out.join("overview.png");
    templates::contact_sheet(&views).save(&overview).with_context(|| format!("writing {}", overview.display()))?;
    bar.finish_and_clear();

    let cam = templates::camera();
    eprintln!(
        "wrote {VIEWS} templates of {} ({SIZE}×{SIZE}, fx {:.2}, r = {r:.1} mm, camera at {:.1} mm) to {} in {:.2} s (rendering {:.2} s)",
        args.cad.display(),
        cam.fx,
        4.0 * r,
        args.out.display(),
        start.elapsed().as_secs_f64(),
        render_s
    );
    Ok(())
}

fn write_json(path: &Path, cad: &Path, r: f64, views: &[TemplateView]) -> anyhow::Result<()> {
    let cam = templates::camera();
    let k = cam.k();
    let per_view: Vec<_> = views
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({
                "index": i,
                // + 0.0 turns −0.0 into 0.0 for readers of the JSON.
                "obj_R": v.pose.rotation_rows().map(|row| row.map(|x| x + 0.0)),
                "t_mm": v.pose.translation_array(),
                "mask_pixels": v.mask.iter().filter(|&&m| m).count(),
            })
        })
        .collect();
    let doc = json!({
        "cad": cad,
        "units": "mm",
        "width": SIZE,
        "height": SIZE,
        "cam_K": [[k[0], k[1], k[2]], [k[3], k[4], k[5]], [k[6], k[7], k[8]]],
        "radius_mm": r,
        "distance_mm": 4.0 * r,
        "pose_convention": "x_cam = obj_R · x_model + t (mm, OpenCV camera axes)",
        "views": per_view,
    });
    let text = serde_json::to_string_pretty(&doc).context("encoding templates.json")?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}
