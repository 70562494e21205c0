//! `sam6d eval`: BOP-style scores of pose estimates against the ground truth of BOP scenes.
//! The scoring lives in the library (`sam6d::eval`); this file reads the arguments, prints the
//! table and writes the JSON report.
use anyhow::Context;
use sam6d::eval::{self, dataset, predictions};
use std::path::PathBuf;

/// Score pose estimates against BOP ground truth (AR_VSD, AR_MSSD, AR_MSPD, ADD(-S), errors, times).
///
/// Reads the estimates (BOP19 CSV, or the JSON lines of a batch `sam6d infer` run), the ground
/// truth of one or more BOP scene folders and the object models, and scores them as the BOP
/// toolkit does (BOP19 settings): per image and object, the ground-truth instances with
/// visib_fract >= 0.1 are the targets (all instances without scene_gt_info.json); the
/// estimates are sorted by score and only the top n are kept, n = the number of targets;
/// each threshold greedily matches estimates (best score first) to the unmatched instance with
/// the smallest error below it. Recall = matched targets / targets, pooled over instances.
///
/// Figures, per object and over all: recall at the MSSD thresholds 0.05 ... 0.50 x diameter,
/// at the MSPD thresholds 5 ... 50 px x (image width / 640) and at the 100 VSD pairs
/// (tau, theta), each 0.05 ... 0.50 (tau x diameter, visibility tolerance 15 mm); their means
/// AR_MSSD, AR_MSPD and AR_VSD, AR = (AR_VSD + AR_MSSD + AR_MSPD) / 3 as BOP19. VSD reads the
/// scene's depth/NNNNNN.png (scaled by scene_camera.json's depth_scale); targets of images
/// without one count (AR_MSSD + AR_MSPD) / 2 towards AR, and a note says so.
/// ADD and ADI (ADD-S) recall at 0.1 x diameter, and ADD(-S) (ADI for symmetric objects);
/// median rotation (deg) and translation (mm) errors of the targets matched with MSSD < 0.5 d;
/// time per frame (mean, median) from the CSV `time` column or the JSON `time_s`.
///
/// MSSD and MSPD take the minimum over the object's symmetries from models_info.json
/// (symmetries_discrete, and symmetries_continuous sampled so that points move at most 1 % of
/// the diameter between samples); the diameter comes from models_info.json too. Without
/// models_info.json the diameter is computed from the mesh and no object is symmetric.
/// Errors are measured over the model vertices: point MODELS_DIR at BOP's models_eval/.
/// Exit status: 0 scored, 1 unreadable or malformed input (the message names the file and,
/// for the estimates, the line), 2 usage error. Estimates for images that are not in the scenes
/// are counted and reported, not fatal.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
  sam6d eval --scene lmo/test/000002 --pred sam6d_lmo-test.csv --models lmo/models_eval\n  \
  sam6d eval --scene tless/test/000001 --scene tless/test/000002 --pred run.jsonl --models tless/models_eval --json scores.json\n  \
  sam6d infer --scene lmo/test/000002 --cad lmo/models/obj_000005.ply --bop-csv run.csv && sam6d eval --scene lmo/test/000002 --pred run.csv --models lmo/models_eval --obj-id 5")]
pub struct EvalArgs {
    /// BOP scene folder (scene_gt.json, scene_camera.json, optional scene_gt_info.json,
    /// rgb/ or gray/, depth/ for VSD); repeat for several scenes. The scene id is the folder name (000002).
    #[arg(long = "scene", value_name = "BOP_SCENE_DIR", required = true)]
    scenes: Vec<PathBuf>,

    /// Estimates: BOP19 CSV (scene_id,im_id,obj_id,score,R,t,time; R row-major, t in mm,
    /// time in s or -1) or JSON lines from a batch run (.jsonl; failed frames are skipped and
    /// counted).
    #[arg(long, value_name = "FILE")]
    pred: PathBuf,

    /// Models folder with obj_XXXXXX.ply (mm) and optional models_info.json.
    #[arg(long, value_name = "MODELS_DIR")]
    models: PathBuf,

    /// Also write every figure (per object, per threshold, counts) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Evaluate only these objects (repeat or comma-separate); default: every object with a
    /// target in the scenes.
    #[arg(long = "obj-id", value_name = "ID", value_delimiter = ',')]
    obj_ids: Vec<u32>,

    /// Image width in pixels for the MSPD thresholds, instead of reading it from the first
    /// image of each scene.
    #[arg(long, value_name = "PX", value_parser = clap::value_parser!(u32).range(1..))]
    image_width: Option<u32>,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let scenes = args
        .scenes
        .iter()
        .map(|d| dataset::read_scene(d, args.image_width.map(|w| w as usize)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let default_scene = (scenes.len() == 1).then(|| scenes[0].scene_id);
    let preds = predictions::read_predictions(&args.pred, default_scene)?;
    let models = dataset::ModelsDir::open(&args.models)?;
    let report = eval::evaluate(&scenes, &preds, &models, &args.obj_ids)?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
