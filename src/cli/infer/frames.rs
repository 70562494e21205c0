//! Which frames a batch `infer` runs on: colour/depth pairs from two folders, from two `*`
//! patterns, or from a BOP scene folder; and each frame's camera. Pairs are matched by name
//! (the file stem, or the part a `*` matched); what has no partner is reported, not guessed.
use anyhow::{bail, Context};
use sam6d::io::Camera;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One frame to estimate.
#[derive(Clone, Debug)]
pub struct FrameInput {
    /// File stem (or the part a `*` matched); names the frame's result files.
    pub name: String,
    pub rgb: PathBuf,
    /// `None` in a BOP scene whose `depth/` lacks this image: the frame fails with a message.
    pub depth: Option<PathBuf>,
    /// BOP scene id: the scene folder's name as an integer.
    pub scene_id: Option<i64>,
    /// BOP image id: the name as an integer (`000001` → 1).
    pub im_id: Option<i64>,
}

/// The frames found, and the files that had no partner (to warn about).
pub struct Listing {
    pub frames: Vec<FrameInput>,
    pub unmatched: Vec<PathBuf>,
}

const COLOUR_EXT: &[&str] = &["png", "jpg", "jpeg"];
const DEPTH_EXT: &[&str] = &["png"];

/// True when a `--rgb`/`--depth` value is a pattern rather than a file name.
pub fn is_pattern(p: &Path) -> bool {
    p.to_string_lossy().contains('*')
}

/// Files in `dir` with one of `exts` (case-insensitive), by stem. Two files with the same stem
/// (a.png and a.jpg) are an error: which one was meant is not ours to guess.
fn files_by_stem(dir: &Path, exts: &[&str], what: &str) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading the {what} folder {}", dir.display()))?;
    let mut out = BTreeMap::new();
    for e in entries {
        let path = e.with_context(|| format!("reading the {what} folder {}", dir.display()))?.path();
        let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
        if !path.is_file() || !exts.contains(&ext.as_str()) {
            continue;
        }
        let stem = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        if let Some(prev) = out.insert(stem.clone(), path.clone()) {
            bail!("{} and {} have the same name {stem:?}: keep one of them", prev.display(), path.display());
        }
    }
    Ok(out)
}

/// Pairs colour and depth files by key; keys without a partner go to `unmatched`.
fn pair(rgb: BTreeMap<String, PathBuf>, mut depth: BTreeMap<String, PathBuf>, scene_id: Option<i64>) -> Listing {
    let mut frames = Vec::new();
    let mut unmatched = Vec::new();
    for (name, rgb) in rgb {
        match depth.remove(&name) {
            Some(d) => frames.push(FrameInput { im_id: name.parse().ok(), name, rgb, depth: Some(d), scene_id }),
            None => unmatched.push(rgb),
        }
    }
    unmatched.extend(depth.into_values());
    sort_frames(&mut frames);
    Listing { frames, unmatched }
}

/// Numeric names in numeric order (2 before 10), then the others by name.
fn sort_frames(frames: &mut [FrameInput]) {
    frames.sort_by(|a, b| (a.im_id.unwrap_or(i64::MAX), &a.name).cmp(&(b.im_id.unwrap_or(i64::MAX), &b.name)));
}

/// `--rgb-dir` and `--depth-dir`: images paired by file stem.
pub fn from_dirs(rgb_dir: &Path, depth_dir: &Path) -> anyhow::Result<Listing> {
    Ok(pair(files_by_stem(rgb_dir, COLOUR_EXT, "colour")?, files_by_stem(depth_dir, DEPTH_EXT, "depth")?, None))
}

/// `--rgb 'caps/*_rgb.png' --depth 'caps/*_depth.png'`: files paired by what the `*` matched.
pub fn from_patterns(rgb: &Path, depth: &Path) -> anyhow::Result<Listing> {
    Ok(pair(expand_pattern(rgb)?, expand_pattern(depth)?, None))
}

/// Files matching a pattern with one `*` in its file name, keyed by what the `*` matched.
fn expand_pattern(pattern: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let text = pattern.to_string_lossy();
    let name = pattern.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = pattern.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if is_pattern(dir) || name.matches('*').count() != 1 {
        bail!("pattern {text:?}: use one `*` in the file name only (e.g. 'caps/*_rgb.png'), or --rgb-dir/--depth-dir for folders");
    }
    let (prefix, suffix) = name.split_once('*').expect("one star");
    let mut out = BTreeMap::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {} for the pattern {text:?}", dir.display()))?;
    for e in entries {
        let path = e.with_context(|| format!("reading {}", dir.display()))?.path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else { continue };
        if path.is_file() && file.len() >= prefix.len() + suffix.len() && file.starts_with(prefix) && file.ends_with(suffix) {
            out.insert(file[prefix.len()..file.len() - suffix.len()].to_string(), path);
        }
    }
    Ok(out)
}

/// `--scene DIR`: a BOP scene (`rgb/`, `depth/`, `scene_camera.json`). Every colour image is a
/// frame; one whose depth is missing fails on its own (a BOP scene is meant to be complete).
pub fn from_scene(dir: &Path) -> anyhow::Result<Listing> {
    for need in ["rgb", "depth", "scene_camera.json"] {
        anyhow::ensure!(
            dir.join(need).exists(),
            "{} is not a BOP scene folder: it has no {need} (expected rgb/, depth/ and scene_camera.json)",
            dir.display()
        );
    }
    let folder = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let scene_id = folder.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok());
    let rgb = files_by_stem(&dir.join("rgb"), COLOUR_EXT, "colour")?;
    let mut depth = files_by_stem(&dir.join("depth"), DEPTH_EXT, "depth")?;
    let mut frames: Vec<FrameInput> = rgb
        .into_iter()
        .map(|(name, rgb)| FrameInput { im_id: name.parse().ok(), depth: depth.remove(&name), name, rgb, scene_id })
        .collect();
    sort_frames(&mut frames);
    Ok(Listing { frames, unmatched: depth.into_values().collect() })
}

/// One frame given as two files, as a batch of one (a `--cad` folder over a single frame).
pub fn from_files(rgb: &Path, depth: &Path) -> Listing {
    let name = rgb.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let frame = FrameInput { im_id: name.parse().ok(), name, rgb: rgb.to_path_buf(), depth: Some(depth.to_path_buf()), scene_id: None };
    Listing { frames: vec![frame], unmatched: Vec::new() }
}

/// The objects `scene_gt.json` lists per image id in a BOP scene (each once), or `None` when the
/// scene has no such file. A BOP test image shows the objects its ground truth names: with a
/// `--cad` folder, only those are searched for (BOP's localisation task gives them too).
pub fn scene_objects(dir: &Path) -> anyhow::Result<Option<BTreeMap<i64, Vec<i64>>>> {
    let path = dir.join("scene_gt.json");
    if !path.exists() {
        return Ok(None);
    }
    let what = path.display();
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {what}"))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("{what}: not valid JSON"))?;
    let Value::Object(images) = v else { bail!("{what}: expected an object of image ids") };
    let mut out = BTreeMap::new();
    for (id, list) in images {
        let im_id: i64 = id.parse().with_context(|| format!("{what}: {id:?} is not an image id"))?;
        let Value::Array(list) = list else { bail!("{what}: image {id}: expected a list of instances") };
        let mut objects = Vec::new();
        for inst in &list {
            let obj = inst.get("obj_id").and_then(Value::as_i64).with_context(|| format!("{what}: image {id}: an instance without an integer obj_id"))?;
            if !objects.contains(&obj) {
                objects.push(obj);
            }
        }
        out.insert(im_id, objects);
    }
    Ok(Some(out))
}

/// The camera of each frame: one `camera.json` for all, or a BOP `scene_camera.json` looked up
/// by image id.
pub enum Cameras {
    One(Camera),
    PerImage { entries: Map<String, Value>, what: String, depth_scale: Option<f64> },
}

impl Cameras {
    /// `depth_scale` (from --depth-scale) overrides the file's.
    pub fn load(path: &Path, depth_scale: Option<f64>) -> anyhow::Result<Cameras> {
        let what = path.display().to_string();
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {what}"))?;
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{what}: not valid JSON"))?;
        match v {
            Value::Object(entries) if !entries.contains_key("cam_K") => Ok(Cameras::PerImage { entries, what, depth_scale }),
            _ => {
                let c = Camera::from_json_str(&text, None, &what)?;
                Ok(Cameras::One(match depth_scale {
                    Some(s) => Camera::new(c.fx, c.fy, c.cx, c.cy, s)?,
                    None => c,
                }))
            }
        }
    }

    pub fn for_image(&self, frame: &FrameInput) -> anyhow::Result<Camera> {
        match self {
            Cameras::One(c) => Ok(*c),
            Cameras::PerImage { entries, what, depth_scale } => {
                let id = frame.im_id.with_context(|| {
                    format!("{what} has one camera per image id, but the name {:?} is not an image id", frame.name)
                })?;
                let entry = entries.get(&id.to_string()).with_context(|| format!("{what} has no entry \"{id}\""))?;
                let c = Camera::from_json_str(&entry.to_string(), None, &format!("{what} entry \"{id}\""))?;
                Ok(match depth_scale {
                    Some(s) => Camera::new(c.fx, c.fy, c.cx, c.cy, *s)?,
                    None => c,
                })
            }
        }
    }
}
