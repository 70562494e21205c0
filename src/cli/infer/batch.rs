//! Batch `infer`: many frames through one pipeline, the model prepared once. Results go to
//! per-frame JSON files, a JSON-lines file, a BOP19 CSV and/or stdout, always in frame order;
//! a frame that fails is recorded as an error and the batch goes on.
use super::frames::{Cameras, FrameInput, Listing};
use super::{usage_error, InferArgs};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use sam6d::io;
use sam6d::results::{self, round3};
use sam6d::pipeline::{Estimate, Frame, ObjectModel, Options, Pipeline};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// What one frame gave: its record (the JSON-lines schema) and, when it worked, the estimate.
struct Outcome {
    record: Map<String, Value>,
    est: Option<Estimate>,
    time_s: f64,
}

/// Everything a worker needs, shared read-only.
struct Ctx<'a> {
    cameras: Cameras,
    model: ObjectModel,
    pipeline: Pipeline,
    device: String,
    obj_id: Option<i64>,
    cam: &'a Path,
    cad: &'a Path,
    vis: Option<&'a Path>,
    /// --output-dir: with the ISM, each frame's detection_ism.json goes there too.
    output_dir: Option<&'a Path>,
    model_ms: f64,
}

pub fn run(args: &InferArgs, listing: Listing) -> anyhow::Result<()> {
    check_flags(args);
    let Listing { frames, unmatched } = listing;
    if !unmatched.is_empty() {
        let shown: Vec<String> = unmatched.iter().take(10).map(|p| format!("  {}", p.display())).collect();
        let more = if unmatched.len() > 10 { format!("\n  ... and {} more", unmatched.len() - 10) } else { String::new() };
        eprintln!("warning: {} file(s) have no colour/depth partner and are skipped:\n{}{more}", unmatched.len(), shown.join("\n"));
    }
    anyhow::ensure!(!frames.is_empty(), "no colour/depth pairs found (pairs are matched by file name; see the warning above)");

    let cad = args.cad.as_deref().expect("clap requires --cad");
    let obj_id = args.obj_id.or_else(|| cad.file_stem().and_then(|s| results::obj_id_from_stem(&s.to_string_lossy())));
    if args.bop_csv.is_some() {
        if obj_id.is_none() {
            usage_error(format!("--bop-csv needs an object id: the CAD file name {} has no digits (like obj_000005.ply); pass --obj-id N", cad.display()));
        }
        if let Some(f) = frames.iter().find(|f| f.im_id.is_none()) {
            usage_error(format!("--bop-csv needs numeric image ids, but the frame {:?} ({}) has none: name files like 000001.png", f.name, f.rgb.display()));
        }
    }
    check_overwrite(args, &frames)?;

    // Loaded once for the whole batch.
    let cam = match &args.scene {
        Some(scene) => scene.join("scene_camera.json"),
        None => args.cam.clone().expect("clap requires --cam"),
    };
    let cameras = Cameras::load(&cam, args.depth_scale)?;
    let device = args.device.resolve().map_err(anyhow::Error::msg)?;
    let t0 = Instant::now();
    let model = ObjectModel::load(cad, args.cad_unit)?;
    let model_ms = t0.elapsed().as_secs_f64() * 1e3;
    let options = Options {
        det_score_thresh: args.det_score_thresh.unwrap_or(args.stages.default_det_score_thresh()),
        max_instances: args.max_instances as usize,
        device,
        refine_icp: args.stages.refine_icp(),
    };
    let pipeline = args.stages.build(options)?;
    let ctx = Ctx {
        cameras,
        model,
        pipeline,
        device: device.to_string(),
        obj_id,
        cam: &cam,
        cad,
        vis: args.vis.as_deref(),
        output_dir: args.output_dir.as_deref(),
        model_ms,
    };
    for dir in [args.output_dir.as_deref(), args.vis.as_deref()].into_iter().flatten() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut sinks = Sinks::open(args)?;
    let progress = Progress::new(frames.len(), args.quiet);

    let t_batch = Instant::now();
    let (mut failed, mut instances) = (Vec::new(), 0);
    let jobs = (args.jobs as usize).min(frames.len());
    let next = AtomicUsize::new(0);
    let result: anyhow::Result<()> = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel();
        // Each worker takes the next frame, decodes and estimates it; this thread writes the
        // results in frame order, whatever order they finish in.
        for _ in 0..jobs {
            let (tx, next, frames, ctx) = (tx.clone(), &next, &frames, &ctx);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= frames.len() || tx.send((i, process(&frames[i], ctx))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        let mut done = 0;
        for (i, outcome) in rx {
            pending.insert(i, outcome);
            while let Some(o) = pending.remove(&done) {
                let f = &frames[done];
                match &o.est {
                    Some(est) => instances += est.poses.len(),
                    None => failed.push(f.name.clone()),
                }
                progress.frame(done, f, &o);
                if let Err(e) = sinks.write(args, f, &o, ctx.obj_id.unwrap_or(0)) {
                    // A result we cannot write is fatal: stop the workers and report.
                    next.store(frames.len(), Ordering::Relaxed);
                    return Err(e);
                }
                done += 1;
            }
        }
        Ok(())
    });
    progress.finish();
    result?;
    let written = sinks.finish()?;

    let secs = t_batch.elapsed().as_secs_f64();
    if !args.quiet {
        let n = frames.len();
        eprintln!(
            "{n} frame(s): {} ok, {} failed; {instances} instance(s) of {}; {secs:.1} s ({:.2} frames/s){}",
            n - failed.len(),
            failed.len(),
            ctx.model.name,
            n as f64 / secs.max(1e-9),
            if written.is_empty() { String::new() } else { format!("; wrote {}", written.join(", ")) }
        );
    }
    if !failed.is_empty() {
        let names = failed.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        let more = if failed.len() > 5 { ", ..." } else { "" };
        anyhow::bail!("{} of {} frame(s) failed ({names}{more}); their records hold the error", failed.len(), frames.len());
    }
    Ok(())
}

/// Options that make no sense for a batch are usage errors, caught before any work.
fn check_flags(args: &InferArgs) {
    let bad = [
        (args.connect.is_some(), "--connect runs one frame on a server; batches run here"),
        (args.out.is_some(), "--out names one result file; for a batch use --output-dir DIR, --jsonl FILE or --format json"),
        (args.overlay.is_some(), "--overlay names one PNG; for a batch use --vis DIR (one overlay per frame)"),
        (args.cam_frame.is_some(), "--cam-frame picks one image; a batch looks up each image's camera in scene_camera.json by its id"),
        (args.pretty, "--pretty is for one frame; batch records are one JSON object per line"),
    ];
    if let Some((_, msg)) = bad.iter().find(|(b, _)| *b) {
        usage_error(msg);
    }
    if args.output_dir.is_none() && args.jsonl.is_none() && args.bop_csv.is_none() && args.format.is_none() && args.vis.is_none() {
        usage_error("a batch needs somewhere to put results: --output-dir DIR, --jsonl FILE, --bop-csv FILE and/or --format json");
    }
}

fn json_path(dir: &Path, f: &FrameInput) -> PathBuf {
    dir.join(format!("{}.json", f.name))
}

fn vis_path(dir: &Path, f: &FrameInput) -> PathBuf {
    dir.join(format!("{}.png", f.name))
}

/// Refuses, before anything runs, to replace results from an earlier run unless --overwrite.
fn check_overwrite(args: &InferArgs, frames: &[FrameInput]) -> anyhow::Result<()> {
    if args.overwrite {
        return Ok(());
    }
    let mut targets: Vec<PathBuf> = [args.jsonl.clone(), args.bop_csv.clone()].into_iter().flatten().collect();
    for f in frames {
        targets.extend(args.output_dir.as_deref().map(|d| json_path(d, f)));
        targets.extend(args.vis.as_deref().map(|d| vis_path(d, f)));
    }
    let existing: Vec<&PathBuf> = targets.iter().filter(|p| p.exists()).collect();
    if existing.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = existing.iter().take(5).map(|p| p.display().to_string()).collect();
    let more = if existing.len() > 5 { format!(" and {} more", existing.len() - 5) } else { String::new() };
    anyhow::bail!(
        "refusing to overwrite {} existing result file(s): {}{more}; pass --overwrite to replace them, or write elsewhere",
        existing.len(),
        shown.join(", ")
    )
}

/// Decodes and estimates one frame; any failure becomes an error record.
fn process(f: &FrameInput, ctx: &Ctx) -> Outcome {
    let t0 = Instant::now();
    let mut record = Map::new();
    let mut inputs = json!({"rgb": f.rgb, "depth": f.depth, "cam": ctx.cam, "cad": ctx.cad});
    let result = (|| -> anyhow::Result<(Map<String, Value>, Estimate)> {
        let depth_path = f.depth.as_deref().with_context(|| format!("no depth image for {} (expected depth/{}.png)", f.rgb.display(), f.name))?;
        let camera = ctx.cameras.for_image(f)?;
        let rgb = io::image::read_rgb(&f.rgb)?;
        let depth = io::image::read_depth(depth_path, camera.depth_scale)?;
        let frame = Frame::new(rgb, depth, camera).with_context(|| format!("{} and {}", f.rgb.display(), depth_path.display()))?;
        let load_ms = t0.elapsed().as_secs_f64() * 1e3;
        let est = ctx.pipeline.estimate(&frame, &ctx.model)?;
        let mut out = results::estimate_json(&est, &ctx.model.name, &frame, &ctx.pipeline.name(), &ctx.device);
        out.insert("load_ms".into(), json!({"inputs": round3(load_ms), "model": round3(ctx.model_ms)}));
        if let (Some(dir), Some(_)) = (ctx.output_dir, &est.ism) {
            // SAM-6D's detection_ism.json of this frame, with the BOP ids when the frame has them.
            let path = dir.join(format!("{}_detection_ism.json", f.name));
            super::write_ism_json(&path, &est, f.scene_id, f.im_id, ctx.obj_id)?;
            out.insert("detection_ism".into(), json!(path));
        }
        if let Some(dir) = ctx.vis {
            let path = vis_path(dir, f);
            // The overlay helper writes by extension: draw to a .tmp.png, then rename.
            let tmp = dir.join(format!(".{}.tmp.png", f.name));
            let poses: Vec<_> = est.poses.iter().map(|p| (p.pose, p.score)).collect();
            super::write_overlay(&tmp, &frame, &ctx.model, &poses)?;
            std::fs::rename(&tmp, &path).with_context(|| format!("writing overlay {}", path.display()))?;
            out.insert("overlay".into(), json!(path));
            if est.proposals.is_some() {
                let path = dir.join(format!("{}_ism.png", f.name));
                let tmp = dir.join(format!(".{}_ism.tmp.png", f.name));
                super::write_ism_overlay(&tmp, &frame, &est)?;
                std::fs::rename(&tmp, &path).with_context(|| format!("writing overlay {}", path.display()))?;
                out.insert("ism_overlay".into(), json!(path));
            }
        }
        Ok((out, est))
    })();
    let time_s = t0.elapsed().as_secs_f64();
    let est = match result {
        Ok((out, est)) => {
            record = out;
            inputs["diameter_mm"] = json!(ctx.model.diameter);
            record.insert("time_s".into(), json!(round3(time_s * 1e3) / 1e3));
            Some(est)
        }
        Err(e) => {
            record.insert("error".into(), json!(format!("{e:#}")));
            None
        }
    };
    record.insert("inputs".into(), inputs);
    record.insert("frame".into(), json!({"name": f.name, "scene_id": f.scene_id, "im_id": f.im_id}));
    record.insert("obj_id".into(), json!(ctx.obj_id));
    Outcome { record, est, time_s }
}

/// The result files being written: JSON-lines and CSV go to `<file>.tmp` and are renamed into
/// place at the end, per-frame JSON files are written whole and renamed one by one.
struct Sinks {
    jsonl: Option<(std::io::BufWriter<std::fs::File>, PathBuf)>,
    csv: Option<(std::io::BufWriter<std::fs::File>, PathBuf)>,
    json_files: usize,
}

impl Sinks {
    fn open(args: &InferArgs) -> anyhow::Result<Sinks> {
        let create = |path: &Path| -> anyhow::Result<(std::io::BufWriter<std::fs::File>, PathBuf)> {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            let tmp = results::tmp_path(path);
            let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            Ok((std::io::BufWriter::new(file), path.to_path_buf()))
        };
        let jsonl = args.jsonl.as_deref().map(create).transpose()?;
        let mut csv = args.bop_csv.as_deref().map(create).transpose()?;
        if let Some((w, _)) = &mut csv {
            writeln!(w, "{}", results::BOP_CSV_HEADER)?;
        }
        Ok(Sinks { jsonl, csv, json_files: 0 })
    }

    fn write(&mut self, args: &InferArgs, f: &FrameInput, o: &Outcome, obj_id: i64) -> anyhow::Result<()> {
        let line = serde_json::to_string(&o.record)?;
        if let Some(dir) = &args.output_dir {
            let path = json_path(dir, f);
            results::write_atomic(&path, (line.clone() + "\n").as_bytes()).with_context(|| format!("writing {}", path.display()))?;
            self.json_files += 1;
        }
        if let Some((w, path)) = &mut self.jsonl {
            writeln!(w, "{line}").with_context(|| format!("writing {}", path.display()))?;
        }
        if let (Some((w, path)), Some(est)) = (&mut self.csv, &o.est) {
            let rows = results::bop_csv_rows(f.scene_id.unwrap_or(0), f.im_id.unwrap_or(0), obj_id, est, o.time_s);
            w.write_all(rows.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
        }
        if args.format.is_some() {
            // One line per frame, flushed at once so that a pipe sees it as soon as it is done.
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        Ok(())
    }

    /// Moves the streamed files into place; returns what was written, for the summary.
    fn finish(self) -> anyhow::Result<Vec<String>> {
        let mut written = Vec::new();
        if self.json_files > 0 {
            written.push(format!("{} JSON file(s)", self.json_files));
        }
        for (w, path) in [self.jsonl, self.csv].into_iter().flatten() {
            let tmp = results::tmp_path(&path);
            w.into_inner().map_err(|e| e.into_error()).and_then(|f| f.sync_all()).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("moving {} to {}", tmp.display(), path.display()))?;
            written.push(path.display().to_string());
        }
        Ok(written)
    }
}

/// A progress bar at a terminal, one plain line per frame otherwise, nothing with --quiet.
enum Progress {
    Quiet,
    Lines(usize),
    Bar(ProgressBar),
}

impl Progress {
    fn new(n: usize, quiet: bool) -> Progress {
        if quiet {
            Progress::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(n as u64);
            let style = ProgressStyle::with_template("{bar:30} {pos}/{len} frames  {per_sec}  ETA {eta}  {msg}").expect("valid template");
            bar.set_style(style);
            Progress::Bar(bar)
        } else {
            Progress::Lines(n)
        }
    }

    fn frame(&self, i: usize, f: &FrameInput, o: &Outcome) {
        let what = match (&o.est, o.record.get("error").and_then(Value::as_str)) {
            (Some(est), _) => format!("{} instance(s), {:.0} ms", est.poses.len(), o.time_s * 1e3),
            (None, err) => format!("error: {}", err.unwrap_or("unknown")),
        };
        match self {
            Progress::Quiet => {}
            Progress::Lines(n) => eprintln!("[{}/{n}] {}: {what}", i + 1, f.name),
            Progress::Bar(bar) => {
                if o.est.is_none() {
                    bar.println(format!("{}: {what}", f.name));
                }
                bar.set_message(f.name.clone());
                bar.inc(1);
            }
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
