//! Batch `infer`: many frames through one pipeline, the models prepared once. With a `--cad`
//! folder each frame is searched for every model (those its scene_gt.json lists, in a BOP
//! scene), one after the other by one worker so that they share the frame's points. Results go
//! to JSON files, a JSON-lines file, a BOP19 CSV and/or stdout, one record per frame and
//! object, always in frame order; a frame or object that fails is recorded as an error and the
//! batch goes on.
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

/// What one object in one frame gave: its record (the JSON-lines schema, whose `time_s` is its
/// share of the frame's time; the first object's includes decoding the images) and, when it
/// worked, the estimate.
struct Outcome {
    record: Map<String, Value>,
    est: Option<Estimate>,
    /// Which of the plan's objects.
    object: usize,
}

/// What one frame gave: an outcome per object searched for, and the frame's whole time.
struct FrameOutcome {
    objects: Vec<Outcome>,
    time_s: f64,
}

/// The objects a batch looks for, known before any model is loaded (to check the result
/// files and flags first).
struct Plan {
    /// CAD file, name (file stem), BOP object id.
    objects: Vec<(PathBuf, String, Option<i64>)>,
    /// A `--cad` folder: result files are named `<frame>_<object>`.
    folder: bool,
    /// A BOP scene's objects per image id (scene_gt.json), with a folder of models.
    scene_objects: Option<BTreeMap<i64, Vec<i64>>>,
}

impl Plan {
    /// Indices of the objects to search for in frame `f`.
    fn targets(&self, f: &FrameInput) -> Vec<usize> {
        let listed = self.scene_objects.as_ref().zip(f.im_id).and_then(|(m, id)| m.get(&id));
        (0..self.objects.len()).filter(|&i| listed.is_none_or(|l| self.objects[i].2.is_some_and(|id| l.contains(&id)))).collect()
    }

    /// What names the result files of object `i` in frame `f`.
    fn result_name(&self, f: &FrameInput, i: usize) -> String {
        if self.folder { format!("{}_{}", f.name, self.objects[i].1) } else { f.name.clone() }
    }
}

/// Everything a worker needs, shared read-only.
struct Ctx<'a> {
    cameras: Cameras,
    plan: Plan,
    /// In the plan's order.
    models: Vec<ObjectModel>,
    pipeline: Pipeline,
    device: String,
    cam: &'a Path,
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

    let plan = plan(args, &frames)?;
    check_overwrite(args, &frames, &plan)?;

    // Loaded once for the whole batch.
    let cam = match &args.scene {
        Some(scene) => scene.join("scene_camera.json"),
        None => args.cam.clone().expect("clap requires --cam"),
    };
    let cameras = Cameras::load(&cam, args.depth_scale)?;
    let device = args.device.resolve().map_err(anyhow::Error::msg)?;
    let t0 = Instant::now();
    let files: Vec<PathBuf> = plan.objects.iter().map(|o| o.0.clone()).collect();
    let spinner = if files.len() > 1 && !args.quiet { super::super::status_spinner(format!("preparing {} models", files.len())) } else { ProgressBar::hidden() };
    let models = sam6d::pipeline::load_models(&files, args.cad_unit);
    spinner.finish_and_clear();
    let models = models?;
    let model_ms = t0.elapsed().as_secs_f64() * 1e3;
    let options = Options {
        det_score_thresh: args.det_score_thresh.unwrap_or(args.stages.default_det_score_thresh()),
        max_instances: args.max_instances as usize,
        device,
        refine_icp: args.stages.refine_icp(),
    };
    let pipeline = args.stages.build(options)?;
    let ctx = Ctx { cameras, plan, models, pipeline, device: device.to_string(), cam: &cam, vis: args.vis.as_deref(), output_dir: args.output_dir.as_deref(), model_ms };
    for dir in [args.output_dir.as_deref(), args.vis.as_deref()].into_iter().flatten() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut sinks = Sinks::open(args, stdout_lines(args))?;
    let progress = Progress::new(frames.len(), args.quiet);

    let t_batch = Instant::now();
    let (mut failed, mut records, mut instances) = (Vec::new(), 0, 0);
    let jobs = (args.jobs as usize).min(frames.len());
    let next = AtomicUsize::new(0);
    let result: anyhow::Result<()> = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel();
        // Each worker takes the next frame, decodes it and estimates its objects; this thread
        // writes the results in frame order, whatever order they finish in.
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
                records += o.objects.len();
                instances += o.objects.iter().filter_map(|x| x.est.as_ref()).map(|e| e.poses.len()).sum::<usize>();
                if o.objects.iter().any(|x| x.est.is_none()) {
                    failed.push(f.name.clone());
                }
                progress.frame(done, f, &o);
                if let Err(e) = sinks.write(&ctx, f, &o) {
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
        let what = match ctx.models.as_slice() {
            [one] => one.name.clone(),
            many => format!("{} objects ({records} frame-object searches)", many.len()),
        };
        eprintln!(
            "{n} frame(s): {} ok, {} failed; {instances} instance(s) of {what}; {secs:.1} s ({:.2} frames/s){}",
            n - failed.len(),
            failed.len(),
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

/// The objects to look for: the --cad file, or every PLY of a --cad folder, with their BOP ids;
/// the flags that need ids are checked here, before any work.
fn plan(args: &InferArgs, frames: &[FrameInput]) -> anyhow::Result<Plan> {
    let cad = args.cad.as_deref().expect("clap requires --cad");
    let folder = cad.is_dir();
    if folder && args.obj_id.is_some() {
        usage_error(format!("--obj-id names the object of one CAD file; {} is a folder, whose models take their ids from their file names (obj_000005.ply → 5)", cad.display()));
    }
    let files = sam6d::pipeline::model_files(&[cad.to_path_buf()])?;
    let objects: Vec<(PathBuf, String, Option<i64>)> = files
        .into_iter()
        .map(|p| {
            let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let id = if folder { results::obj_id_from_stem(&stem) } else { args.obj_id.or_else(|| results::obj_id_from_stem(&stem)) };
            (p, stem, id)
        })
        .collect();
    if args.bop_csv.is_some() {
        if let Some((path, _, _)) = objects.iter().find(|o| o.2.is_none()) {
            let fix = if folder { "rename it like obj_000005.ply" } else { "pass --obj-id N" };
            usage_error(format!("--bop-csv needs an object id: the CAD file name {} has no digits (like obj_000005.ply); {fix}", path.display()));
        }
        if let Some(f) = frames.iter().find(|f| f.im_id.is_none()) {
            usage_error(format!("--bop-csv needs numeric image ids, but the frame {:?} ({}) has none: name files like 000001.png", f.name, f.rgb.display()));
        }
    }
    let scene_objects = match (&args.scene, folder && !args.all_objects) {
        (Some(scene), true) => super::frames::scene_objects(scene)?,
        _ => None,
    };
    if let Some(listed) = &scene_objects {
        let mut missing: Vec<i64> = listed.values().flatten().copied().filter(|id| !objects.iter().any(|o| o.2 == Some(*id))).collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            eprintln!("warning: scene_gt.json lists object(s) {missing:?} that have no model in {}: they are not searched for", cad.display());
        }
    }
    Ok(Plan { objects, folder, scene_objects })
}

/// Records go to stdout: --format json, or a single frame with a model folder and nowhere else
/// to put them.
fn stdout_lines(args: &InferArgs) -> bool {
    args.format.is_some() || (is_single_frame(args) && args.output_dir.is_none() && args.jsonl.is_none() && args.bop_csv.is_none())
}

/// --rgb FILE --depth FILE with a --cad folder: a batch of one frame.
fn is_single_frame(args: &InferArgs) -> bool {
    args.scene.is_none() && args.rgb_dir.is_none() && !args.rgb.as_deref().is_some_and(super::frames::is_pattern)
}

/// Options that make no sense for a batch are usage errors, caught before any work.
fn check_flags(args: &InferArgs) {
    let bad = [
        (args.connect.is_some(), "--connect runs one frame on a server; batches run here"),
        (args.out.is_some(), "--out names one result file; for a batch (or a --cad folder) use --output-dir DIR, --jsonl FILE or --format json"),
        (args.overlay.is_some(), "--overlay names one PNG; for a batch (or a --cad folder) use --vis DIR (one overlay per frame and object)"),
        (args.cam_frame.is_some() && !is_single_frame(args), "--cam-frame picks one image; a batch looks up each image's camera in scene_camera.json by its id"),
        (args.pretty, "--pretty is for one frame and object; batch records are one JSON object per line"),
        (args.all_objects && args.scene.is_none(), "--all-objects is for --scene with a --cad folder (without a scene every model is searched for anyway)"),
    ];
    if let Some((_, msg)) = bad.iter().find(|(b, _)| *b) {
        usage_error(msg);
    }
    if !stdout_lines(args) && args.output_dir.is_none() && args.jsonl.is_none() && args.bop_csv.is_none() && args.vis.is_none() {
        usage_error("a batch needs somewhere to put results: --output-dir DIR, --jsonl FILE, --bop-csv FILE and/or --format json");
    }
}

fn json_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

fn vis_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.png"))
}

/// Refuses, before anything runs, to replace results from an earlier run unless --overwrite.
fn check_overwrite(args: &InferArgs, frames: &[FrameInput], plan: &Plan) -> anyhow::Result<()> {
    if args.overwrite {
        return Ok(());
    }
    let mut targets: Vec<PathBuf> = [args.jsonl.clone(), args.bop_csv.clone()].into_iter().flatten().collect();
    for f in frames {
        for i in plan.targets(f) {
            let name = plan.result_name(f, i);
            targets.extend(args.output_dir.as_deref().map(|d| json_path(d, &name)));
            targets.extend(args.vis.as_deref().map(|d| vis_path(d, &name)));
        }
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

/// Decodes one frame and estimates each of its objects in turn (they share the frame's points);
/// any failure becomes an error record, of every object when the frame itself fails.
fn process(f: &FrameInput, ctx: &Ctx) -> FrameOutcome {
    let t0 = Instant::now();
    let targets = ctx.plan.targets(f);
    let decoded = (|| -> anyhow::Result<Frame> {
        let depth_path = f.depth.as_deref().with_context(|| format!("no depth image for {} (expected depth/{}.png)", f.rgb.display(), f.name))?;
        let camera = ctx.cameras.for_image(f)?;
        let rgb = io::image::read_rgb(&f.rgb)?;
        let depth = io::image::read_depth(depth_path, camera.depth_scale)?;
        Frame::new(rgb, depth, camera).with_context(|| format!("{} and {}", f.rgb.display(), depth_path.display()))
    })();
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut objects = Vec::with_capacity(targets.len());
    let mut since = t0;
    for i in targets {
        let result = match &decoded {
            Ok(frame) => estimate_object(f, frame, ctx, i, load_ms),
            Err(e) => Err(anyhow::anyhow!("{e:#}")),
        };
        let now = Instant::now();
        let time_s = (now - since).as_secs_f64();
        since = now;
        objects.push(outcome(f, ctx, i, result, time_s));
    }
    FrameOutcome { objects, time_s: t0.elapsed().as_secs_f64() }
}

/// The record of object `i` in a decoded frame, with its overlays written.
fn estimate_object(f: &FrameInput, frame: &Frame, ctx: &Ctx, i: usize, load_ms: f64) -> anyhow::Result<(Map<String, Value>, Estimate)> {
    let model = &ctx.models[i];
    let name = ctx.plan.result_name(f, i);
    let obj_id = ctx.plan.objects[i].2;
    let est = ctx.pipeline.estimate(frame, model)?;
    let mut out = results::estimate_json(&est, &model.name, frame, ctx.pipeline.name(), &ctx.device);
    out.insert("load_ms".into(), json!({"inputs": round3(load_ms), "model": round3(ctx.model_ms)}));
    if let (Some(dir), Some(_)) = (ctx.output_dir, &est.ism) {
        // SAM-6D's detection_ism.json of this frame, with the BOP ids when the frame has them.
        let path = dir.join(format!("{name}_detection_ism.json"));
        super::write_ism_json(&path, &est, f.scene_id, f.im_id, obj_id)?;
        out.insert("detection_ism".into(), json!(path));
    }
    if let Some(dir) = ctx.vis {
        let path = vis_path(dir, &name);
        // The overlay helper writes by extension: draw to a .tmp.png, then rename.
        let tmp = dir.join(format!(".{name}.tmp.png"));
        let poses: Vec<_> = est.poses.iter().map(|p| (p.pose, p.score)).collect();
        super::write_overlay(&tmp, frame, model, &poses)?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing overlay {}", path.display()))?;
        out.insert("overlay".into(), json!(path));
        if est.proposals.is_some() {
            let path = dir.join(format!("{name}_ism.png"));
            let tmp = dir.join(format!(".{name}_ism.tmp.png"));
            super::write_ism_overlay(&tmp, frame, &est)?;
            std::fs::rename(&tmp, &path).with_context(|| format!("writing overlay {}", path.display()))?;
            out.insert("ism_overlay".into(), json!(path));
        }
    }
    Ok((out, est))
}

/// The JSON-lines record of one object in one frame, worked or failed.
fn outcome(f: &FrameInput, ctx: &Ctx, i: usize, result: anyhow::Result<(Map<String, Value>, Estimate)>, time_s: f64) -> Outcome {
    let (cad, _, obj_id) = &ctx.plan.objects[i];
    let mut inputs = json!({"rgb": f.rgb, "depth": f.depth, "cam": ctx.cam, "cad": cad});
    let mut record = Map::new();
    let est = match result {
        Ok((out, est)) => {
            record = out;
            inputs["diameter_mm"] = json!(ctx.models[i].diameter);
            record.insert("time_s".into(), json!(round3(time_s * 1e3) / 1e3));
            Some(est)
        }
        Err(e) => {
            record.insert("object".into(), json!(ctx.models[i].name));
            record.insert("error".into(), json!(format!("{e:#}")));
            None
        }
    };
    record.insert("inputs".into(), inputs);
    record.insert("frame".into(), json!({"name": f.name, "scene_id": f.scene_id, "im_id": f.im_id}));
    record.insert("obj_id".into(), json!(obj_id));
    Outcome { record, est, object: i }
}

/// The result files being written: JSON-lines and CSV go to `<file>.tmp` and are renamed into
/// place at the end, per-frame JSON files are written whole and renamed one by one.
struct Sinks {
    jsonl: Option<(std::io::BufWriter<std::fs::File>, PathBuf)>,
    csv: Option<(std::io::BufWriter<std::fs::File>, PathBuf)>,
    json_files: usize,
    output_dir: Option<PathBuf>,
    /// One line per record on stdout, flushed at once.
    stdout: bool,
}

impl Sinks {
    fn open(args: &InferArgs, stdout: bool) -> anyhow::Result<Sinks> {
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
        Ok(Sinks { jsonl, csv, json_files: 0, output_dir: args.output_dir.clone(), stdout })
    }

    /// A frame's records, one per object, in the plan's order. The CSV's `time` is the frame's
    /// whole time on every row of it, as BOP requires of one image.
    fn write(&mut self, ctx: &Ctx, f: &FrameInput, o: &FrameOutcome) -> anyhow::Result<()> {
        for x in &o.objects {
            let line = serde_json::to_string(&x.record)?;
            if let Some(dir) = &self.output_dir {
                let path = json_path(dir, &ctx.plan.result_name(f, x.object));
                results::write_atomic(&path, (line.clone() + "\n").as_bytes()).with_context(|| format!("writing {}", path.display()))?;
                self.json_files += 1;
            }
            if let Some((w, path)) = &mut self.jsonl {
                writeln!(w, "{line}").with_context(|| format!("writing {}", path.display()))?;
            }
            if let (Some((w, path)), Some(est)) = (&mut self.csv, &x.est) {
                let obj_id = ctx.plan.objects[x.object].2.unwrap_or(0);
                let rows = results::bop_csv_rows(f.scene_id.unwrap_or(0), f.im_id.unwrap_or(0), obj_id, est, o.time_s);
                w.write_all(rows.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
            }
            if self.stdout {
                // One line per record, flushed at once so that a pipe sees it as soon as it is done.
                let mut out = std::io::stdout().lock();
                writeln!(out, "{line}")?;
                out.flush()?;
            }
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

    fn frame(&self, i: usize, f: &FrameInput, o: &FrameOutcome) {
        let instances: usize = o.objects.iter().filter_map(|x| x.est.as_ref()).map(|e| e.poses.len()).sum();
        let errors: Vec<String> = o
            .objects
            .iter()
            .filter(|x| x.est.is_none())
            .map(|x| x.record.get("error").and_then(Value::as_str).unwrap_or("unknown").to_string())
            .collect();
        let ms = o.time_s * 1e3;
        let what = match (o.objects.len(), errors.first()) {
            (1, Some(err)) => format!("error: {err}"),
            (1, None) => format!("{instances} instance(s), {ms:.0} ms"),
            (0, _) => "none of the models is in its scene_gt.json, skipped".to_string(),
            (n, None) => format!("{n} objects, {instances} instance(s), {ms:.0} ms"),
            (n, Some(err)) => format!("{n} objects, {instances} instance(s), {} error(s), the first: {err}", errors.len()),
        };
        match self {
            Progress::Quiet => {}
            Progress::Lines(n) => eprintln!("[{}/{n}] {}: {what}", i + 1, f.name),
            Progress::Bar(bar) => {
                if !errors.is_empty() {
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
