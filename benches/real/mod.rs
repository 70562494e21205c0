//! `--real DIR`: the pipeline on real RGB-D frames of a BOP dataset (`DIR/models/`,
//! `DIR/test/SSSSSS/{rgb,depth}/`, `scene_camera.json`, `scene_gt.json`), scored by the BOP
//! evaluation. Each frame runs once per object of its ground truth that has a model; depth is
//! read with each image's own `depth_scale`. A scene without `scene_gt_info.json` gets one,
//! computed from its real depth by BOP's visibility rule (15 mm), so that instances under 10 %
//! visible are not targets. `scripts/fetch_lmo.py` builds the project's own such set (LM-O).
//! `--gt-region` votes only from each object's ground-truth pixels (a perfect segmentation).
use crate::common::string_arg;
use sam6d::eval::{self, dataset, predictions, visibility};
use sam6d::geometry::metrics::PoseErrors;
use sam6d::results::{bop_csv_rows, BOP_CSV_HEADER};
use sam6d::io;
use sam6d::pipeline::geometric::Params;
use sam6d::pipeline::{Estimate, Frame, ObjectModel, Pipeline};
use sam6d::synth::eval::{mean, median, StageTimes};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

struct Call {
    scene_id: u32,
    im_id: u32,
    obj_id: u32,
    ms: f64,
    result: Result<Estimate, String>,
}

fn image_path(dir: &Path, sub: &str, im_id: u32, exts: &[&str]) -> Result<PathBuf> {
    for ext in exts {
        let p = dir.join(sub).join(format!("{im_id:06}.{ext}"));
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{}: no {sub} image for image {im_id}", dir.display())
}

/// Writes `scene_gt_info.json` (visib_fract only) from the real depth, BOP's rule. Instances of
/// objects without a model count as fully visible.
fn write_gt_info(scene: &dataset::Scene, models: &BTreeMap<u32, ObjectModel>) -> Result<()> {
    let mut out = serde_json::Map::new();
    for (&im_id, im) in &scene.images {
        let cam = &im.camera;
        let depth = io::image::read_depth(&dataset::depth_path(&scene.dir, im_id), cam.depth_scale)?;
        let list: Vec<serde_json::Value> = im
            .gt
            .iter()
            .map(|g| {
                let f = models.get(&g.obj_id).map_or(1.0, |m| {
                    visibility::visib_fract(&m.mesh, &g.pose, cam, &depth.mm, depth.width, depth.height, visibility::GT_INFO_DELTA_MM)
                });
                serde_json::json!({ "visib_fract": f })
            })
            .collect();
        out.insert(im_id.to_string(), serde_json::Value::Array(list));
    }
    let path = scene.dir.join("scene_gt_info.json");
    std::fs::write(&path, serde_json::to_string_pretty(&serde_json::Value::Object(out))? + "\n").with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {} (visible fractions from the real depth, BOP's 15 mm rule)", path.display());
    Ok(())
}

/// The pixels where the instances at `poses` are seen: rendered, and not behind the measured
/// depth by more than BOP's 15 mm.
fn gt_mask<'a>(frame: &Frame, model: &ObjectModel, poses: impl Iterator<Item = &'a sam6d::geometry::Pose>) -> Vec<bool> {
    let (w, h) = (frame.width(), frame.height());
    let mut mask = vec![false; w * h];
    for pose in poses {
        let rendered = sam6d::render::raster::render_depth(&model.mesh, &frame.camera, pose, w, h);
        for (i, (&r, &m)) in rendered.iter().zip(&frame.depth.mm).enumerate() {
            mask[i] |= r > 0.0 && m > 0.0 && r - m <= visibility::GT_INFO_DELTA_MM as f32;
        }
    }
    mask
}

pub fn run(root: &Path, pipeline: &Pipeline, params: &Params, verbose: bool) -> Result<()> {
    let models_dir = root.join("models");
    let models_eval = dataset::ModelsDir::open(&models_dir)?;
    let only: Vec<u32> = string_arg("--objects").map(|s| s.split(',').map(|x| x.trim().parse().expect("--objects: ids like 1,5")).collect()).unwrap_or_default();
    let mut scene_dirs: Vec<PathBuf> = std::fs::read_dir(root.join("test"))
        .with_context(|| format!("{}: expected a BOP dataset (models/, test/SSSSSS/)", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("scene_gt.json").is_file())
        .collect();
    scene_dirs.sort();
    if scene_dirs.is_empty() {
        bail!("{}: no scene with scene_gt.json under test/", root.display());
    }

    // Models: every object with ground truth (and a model), built once.
    let mut scenes: Vec<dataset::Scene> = scene_dirs.iter().map(|d| dataset::read_scene(d, None)).collect::<Result<_>>()?;
    let mut models = BTreeMap::new();
    for g in scenes.iter().flat_map(|s| s.images.values()).flat_map(|im| &im.gt) {
        if (only.is_empty() || only.contains(&g.obj_id)) && models_eval.has(g.obj_id) && !models.contains_key(&g.obj_id) {
            let t0 = Instant::now();
            let mesh = sam6d::geometry::ply::read_ply(&models_eval.ply_path(g.obj_id))?;
            let model = ObjectModel::from_mesh_with(&format!("obj_{:06}", g.obj_id), mesh, params.clone())?;
            println!("model obj_{:06}: diameter {:.1} mm, built in {:.0} ms", g.obj_id, model.diameter, t0.elapsed().as_secs_f64() * 1e3);
            models.insert(g.obj_id, model);
        }
    }
    for scene in scenes.iter_mut() {
        if !scene.has_gt_info {
            write_gt_info(scene, &models)?;
            *scene = dataset::read_scene(&scene.dir, None)?;
        }
    }

    // --gt-region: the voting cloud (references and partners) is only the ground truth's
    // visible pixels, as with a perfect segmentation: what is left is the pose search's own
    // failure. Verification still sees the whole frame.
    let gt_region = std::env::args().any(|a| a == "--gt-region");
    if gt_region {
        println!("voting only inside the ground truth's visible pixels (--gt-region)");
    }
    let mut calls = Vec::new();
    let mut stages = StageTimes::default();
    for scene in &scenes {
        for (&im_id, im) in &scene.images {
            // read_scene's camera carries the image's depth_scale.
            let rgb = io::image::read_rgb(&image_path(&scene.dir, "rgb", im_id, &["png", "jpg"])?)?;
            let depth = io::image::read_depth(&dataset::depth_path(&scene.dir, im_id), im.camera.depth_scale)?;
            let frame = Frame::new(rgb, depth, im.camera)?;
            let mut objs: Vec<u32> = im.gt.iter().map(|g| g.obj_id).filter(|o| models.contains_key(o)).collect();
            objs.sort();
            objs.dedup();
            for obj_id in objs {
                let t0 = Instant::now();
                let result = if gt_region {
                    let region = gt_mask(&frame, &models[&obj_id], im.gt.iter().filter(|g| g.obj_id == obj_id).map(|g| &g.pose));
                    sam6d::pipeline::geometric::estimate(&frame, &models[&obj_id], &pipeline.options, Some(&region))
                } else {
                    pipeline.estimate(&frame, &models[&obj_id])
                };
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                if let Ok(est) = &result {
                    for (stage, ms) in &est.timings {
                        stages.add(stage, *ms);
                    }
                }
                calls.push(Call { scene_id: scene.scene_id, im_id, obj_id, ms, result: result.map_err(|e| format!("{e:#}")) });
            }
        }
    }

    let mut frame_s: BTreeMap<(u32, u32), f64> = BTreeMap::new();
    for c in &calls {
        *frame_s.entry((c.scene_id, c.im_id)).or_default() += c.ms / 1e3;
    }
    let mut csv = format!("{BOP_CSV_HEADER}\n");
    for c in &calls {
        if let Ok(est) = &c.result {
            csv += &bop_csv_rows(c.scene_id as i64, c.im_id as i64, c.obj_id as i64, est, frame_s[&(c.scene_id, c.im_id)]);
        }
    }
    let csv_path = string_arg("--csv").map(PathBuf::from).unwrap_or_else(|| root.join("results.csv"));
    std::fs::write(&csv_path, csv)?;
    let preds = predictions::read_predictions(&csv_path, None)?;
    let report = eval::evaluate(&scenes, &preds, &models_eval, &only)?;

    if verbose {
        for c in &calls {
            let scene = scenes.iter().find(|s| s.scene_id == c.scene_id).unwrap();
            let im = &scene.images[&c.im_id];
            let model = &models[&c.obj_id];
            let d = model.diameter as f64;
            let poses: Vec<_> = c.result.as_ref().map(|e| e.poses.clone()).unwrap_or_default();
            for g in im.gt.iter().filter(|g| g.obj_id == c.obj_id) {
                let best = poses
                    .iter()
                    .enumerate()
                    .map(|(k, p)| (k, p.score, PoseErrors::compute(&p.pose, &g.pose, &model.mesh.vertices, &im.camera, d)))
                    .min_by(|a, b| a.2.mssd.total_cmp(&b.2.mssd));
                let top = poses.first().map(|p| PoseErrors::compute(&p.pose, &g.pose, &model.mesh.vertices, &im.camera, d));
                println!(
                    "scene {} image {} obj {:>2} target {:<5} top: score {:.3} MSSD/d {:.2} MSPD {:>6.1} | closest: rank {} score {:.3} MSSD/d {:.2}  {:.0} ms",
                    c.scene_id,
                    c.im_id,
                    c.obj_id,
                    g.valid,
                    poses.first().map_or(0.0, |p| p.score),
                    top.map_or(f64::NAN, |e| e.mssd / d),
                    top.map_or(f64::NAN, |e| e.mspd),
                    best.map_or(0, |b| b.0),
                    best.map_or(0.0, |b| b.1),
                    best.map_or(f64::NAN, |b| b.2.mssd / d),
                    c.ms
                );
            }
        }
    }

    println!();
    println!("{:<12} {:>5} {:>5} {:>9} {:>8} {:>8} {:>8} {:>6} {:>9}", "object", "inst", "est", "ADD-0.1d", "AR_VSD", "AR_MSSD", "AR_MSPD", "AR", "mean ms");
    for o in &report.objects {
        let ms: Vec<f64> = calls.iter().filter(|c| c.obj_id == o.obj_id).map(|c| c.ms).collect();
        let s = &o.scores;
        println!("obj_{:06}   {:>5} {:>5} {:>9.3} {:>8.3} {:>8.3} {:>8.3} {:>6.3} {:>9.1}", o.obj_id, s.targets, s.estimates, s.add_recall, s.ar_vsd, s.ar_mssd, s.ar_mspd, s.ar, mean(&ms));
    }
    let ms: Vec<f64> = calls.iter().map(|c| c.ms).collect();
    let s = &report.overall;
    println!("{:<12} {:>5} {:>5} {:>9.3} {:>8.3} {:>8.3} {:>8.3} {:>6.3} {:>9.1}", "overall", s.targets, s.estimates, s.add_recall, s.ar_vsd, s.ar_mssd, s.ar_mspd, s.ar, mean(&ms));
    println!("calls {}, median {:.1} ms per object, {} failed", calls.len(), median(&ms), calls.iter().filter(|c| c.result.is_err()).count());
    println!();
    println!("{:<24} {:>9} {:>9} {:>6}", "stage", "mean ms", "median ms", "calls");
    for (stage, m, med, n) in stages.summary() {
        println!("{stage:<24} {m:>9.1} {med:>9.1} {n:>6}");
    }
    println!();
    print!("{}", report.table());
    println!("rescore: sam6d eval --scene {} --pred {} --models {}", scene_dirs[0].display(), csv_path.display(), models_dir.display());
    Ok(())
}
