//! The ground truth side of an evaluation: BOP scene folders (`scene_gt.json`,
//! `scene_gt_info.json`, `scene_camera.json`, the image width from `rgb/` or `gray/`; VSD reads
//! `depth/` itself, see [`depth_path`]) and the
//! models folder (`obj_XXXXXX.ply`, optional `models_info.json` with diameters and symmetries).
use super::predictions::digits;
use super::symmetry::{symmetry_transformations, Continuous, MAX_SYM_DISC_STEP};
use crate::geometry::{Mesh, Pose};
use crate::io::Camera;
use anyhow::{anyhow, bail, Context, Result};
use nalgebra::{Matrix3, Vector3};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// BOP19: ground-truth instances less visible than this are not targets.
pub const VISIB_GT_MIN: f64 = 0.1;

#[derive(Clone, Debug)]
pub struct GtInstance {
    pub obj_id: u32,
    /// Model → camera, mm.
    pub pose: Pose,
    /// A target: visib_fract ≥ 0.1, or every instance when the scene has no scene_gt_info.json.
    /// The others still take part in matching (an estimate matched to one is not counted).
    pub valid: bool,
}

#[derive(Clone, Debug)]
pub struct SceneImage {
    /// Intrinsics and the depth images' `depth_scale` (mm per raw unit).
    pub camera: Camera,
    pub gt: Vec<GtInstance>,
}

#[derive(Clone, Debug)]
pub struct Scene {
    pub scene_id: u32,
    pub dir: PathBuf,
    /// Images with ground truth, by im_id.
    pub images: BTreeMap<u32, SceneImage>,
    /// Pixels; MSPD thresholds scale with width / 640.
    pub image_width: usize,
    pub has_gt_info: bool,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

fn as_object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| anyhow!("{what}: expected a JSON object keyed by id"))
}

fn numbers(v: Option<&Value>, len: usize, what: &str) -> Result<Vec<f64>> {
    let a = v.and_then(Value::as_array).ok_or_else(|| anyhow!("{what} is missing or not a list"))?;
    let out: Vec<f64> = a.iter().filter_map(Value::as_f64).filter(|x| x.is_finite()).collect();
    if out.len() != len || a.len() != len {
        bail!("{what} must hold {len} numbers (has {})", a.len());
    }
    Ok(out)
}

fn parse_id(key: &str, what: &str) -> Result<u32> {
    key.trim().parse().map_err(|_| anyhow!("{what}: key '{key}' is not an image id"))
}

/// Reads one BOP scene folder. `image_width` overrides the width read from the first image.
pub fn read_scene(dir: &Path, image_width: Option<usize>) -> Result<Scene> {
    if !dir.is_dir() {
        bail!("scene folder {} does not exist", dir.display());
    }
    let folder = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let name = folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let scene_id = digits(&name).ok_or_else(|| anyhow!("cannot tell the scene id of {}: BOP scene folders are named by their id, like 000048", dir.display()))?;

    let gt_path = dir.join("scene_gt.json");
    let gt_json = read_json(&gt_path)?;
    let cam_path = dir.join("scene_camera.json");
    let cam_json = read_json(&cam_path)?;
    let info_path = dir.join("scene_gt_info.json");
    let info_json = if info_path.exists() { Some(read_json(&info_path)?) } else { None };
    let gt_what = gt_path.display().to_string();
    let cam_map = as_object(&cam_json, &cam_path.display().to_string())?;

    let mut images = BTreeMap::new();
    for (key, list) in as_object(&gt_json, &gt_what)? {
        let im_id = parse_id(key, &gt_what)?;
        let list = list.as_array().ok_or_else(|| anyhow!("{gt_what}: image {key}: expected a list of instances"))?;
        let cam_entry = cam_map.get(key).or_else(|| cam_map.iter().find(|(k, _)| k.trim().parse::<u32>().ok() == Some(im_id)).map(|(_, v)| v));
        let cam_entry = cam_entry.ok_or_else(|| anyhow!("{}: no entry for image {im_id}, which scene_gt.json lists", cam_path.display()))?;
        let k = numbers(cam_entry.get("cam_K"), 9, &format!("{}: image {im_id}: cam_K", cam_path.display()))?;
        // Raw depth units → mm for VSD's test depth (BOP: 1.0 when the entry has none).
        let depth_scale = match cam_entry.get("depth_scale") {
            None | Some(Value::Null) => 1.0,
            Some(v) => v.as_f64().ok_or_else(|| anyhow!("{}: image {im_id}: depth_scale is not a number", cam_path.display()))?,
        };
        let camera = Camera::from_k(&k, depth_scale, &format!("{}: image {im_id}", cam_path.display()))?;
        let infos = match &info_json {
            Some(info) => {
                let entry = info.get(key).and_then(Value::as_array).ok_or_else(|| anyhow!("{}: no list for image {im_id}", info_path.display()))?;
                if entry.len() != list.len() {
                    bail!("{}: image {im_id} has {} entries, scene_gt.json has {}", info_path.display(), entry.len(), list.len());
                }
                Some(entry)
            }
            None => None,
        };
        let mut gt = Vec::with_capacity(list.len());
        for (i, inst) in list.iter().enumerate() {
            let what = format!("{gt_what}: image {im_id}, instance {i}");
            let r = numbers(inst.get("cam_R_m2c"), 9, &format!("{what}: cam_R_m2c"))?;
            let t = numbers(inst.get("cam_t_m2c"), 3, &format!("{what}: cam_t_m2c"))?;
            let obj_id = inst.get("obj_id").and_then(Value::as_u64).and_then(|o| u32::try_from(o).ok()).ok_or_else(|| anyhow!("{what}: obj_id is missing or not an integer"))?;
            let valid = match infos {
                Some(e) => {
                    let v = e[i].get("visib_fract").and_then(Value::as_f64).ok_or_else(|| anyhow!("{}: image {im_id}, instance {i}: no visib_fract", info_path.display()))?;
                    v >= VISIB_GT_MIN
                }
                None => true,
            };
            gt.push(GtInstance { obj_id, pose: Pose::new(Matrix3::from_row_slice(&r), Vector3::from_row_slice(&t)), valid });
        }
        images.insert(im_id, SceneImage { camera, gt });
    }
    let image_width = match image_width {
        Some(w) => w,
        None => first_image_width(dir)?,
    };
    Ok(Scene { scene_id, dir: dir.to_path_buf(), images, image_width, has_gt_info: info_json.is_some() })
}

/// The test depth image of `im_id` in a BOP scene folder (VSD needs it).
pub fn depth_path(scene_dir: &Path, im_id: u32) -> PathBuf {
    scene_dir.join("depth").join(format!("{im_id:06}.png"))
}

/// Width of the first image in rgb/ (or gray/ for grey-only datasets such as ITODD).
fn first_image_width(dir: &Path) -> Result<usize> {
    for sub in ["rgb", "gray"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
        files.sort();
        if let Some(f) = files.first() {
            let (w, _) = image::image_dimensions(f).with_context(|| format!("reading the size of {} (MSPD thresholds scale with the image width)", f.display()))?;
            return Ok(w as usize);
        }
    }
    bail!("cannot tell the image width of scene {}: no image in rgb/ or gray/ (MSPD thresholds scale with it); pass --image-width", dir.display())
}

/// One object as the metrics need it.
#[derive(Clone, Debug)]
pub struct EvalModel {
    pub obj_id: u32,
    /// The mesh vertices (BOP evaluates over model vertices), mm.
    pub pts: Vec<Vector3<f64>>,
    /// The mesh itself: VSD renders it (no faces: VSD cannot be computed for the object).
    pub mesh: Mesh,
    pub diameter: f64,
    /// "models_info.json" or "mesh".
    pub diameter_source: &'static str,
    /// Symmetry transformations, identity first (see [`symmetry_transformations`]).
    pub syms: Vec<Pose>,
    /// Has a discrete or continuous symmetry: ADD-S (ADI) is its ADD(-S) figure.
    pub symmetric: bool,
}

/// The models folder: `obj_XXXXXX.ply` files and an optional `models_info.json`.
pub struct ModelsDir {
    pub dir: PathBuf,
    pub info: Option<Map<String, Value>>,
}

impl ModelsDir {
    pub fn open(dir: &Path) -> Result<ModelsDir> {
        if !dir.is_dir() {
            bail!("models folder {} does not exist", dir.display());
        }
        let info_path = dir.join("models_info.json");
        let info = if info_path.exists() { Some(as_object(&read_json(&info_path)?, &info_path.display().to_string())?.clone()) } else { None };
        Ok(ModelsDir { dir: dir.to_path_buf(), info })
    }

    pub fn ply_path(&self, obj_id: u32) -> PathBuf {
        self.dir.join(format!("obj_{obj_id:06}.ply"))
    }

    pub fn has(&self, obj_id: u32) -> bool {
        self.ply_path(obj_id).is_file()
    }

    pub fn load(&self, obj_id: u32) -> Result<EvalModel> {
        let path = self.ply_path(obj_id);
        let mesh = crate::geometry::ply::read_ply(&path).with_context(|| format!("model of object {obj_id}"))?;
        if mesh.vertices.is_empty() {
            bail!("{} has no vertices", path.display());
        }
        let pts: Vec<Vector3<f64>> = mesh.vertices.iter().map(|v| v.cast()).collect();
        let what = format!("{}: object {obj_id}", self.dir.join("models_info.json").display());
        let entry = self.info.as_ref().and_then(|m| m.get(&obj_id.to_string()).or_else(|| m.iter().find(|(k, _)| k.trim().parse::<u32>().ok() == Some(obj_id)).map(|(_, v)| v)));
        let (diameter, diameter_source) = match entry.and_then(|e| e.get("diameter")).and_then(Value::as_f64) {
            Some(d) if d > 0.0 && d.is_finite() => (d, "models_info.json"),
            Some(d) => bail!("{what}: diameter {d} is not a positive number"),
            None => (mesh.diameter() as f64, "mesh"),
        };
        let mut discrete = Vec::new();
        let mut continuous = Vec::new();
        if let Some(e) = entry {
            if let Some(list) = e.get("symmetries_discrete") {
                for (i, m) in list.as_array().ok_or_else(|| anyhow!("{what}: symmetries_discrete is not a list"))?.iter().enumerate() {
                    let v = numbers(Some(m), 16, &format!("{what}: symmetries_discrete[{i}]"))?;
                    discrete.push(<[f64; 16]>::try_from(v.as_slice()).expect("16 numbers"));
                }
            }
            if let Some(list) = e.get("symmetries_continuous") {
                for (i, c) in list.as_array().ok_or_else(|| anyhow!("{what}: symmetries_continuous is not a list"))?.iter().enumerate() {
                    let axis = numbers(c.get("axis"), 3, &format!("{what}: symmetries_continuous[{i}].axis"))?;
                    let offset = numbers(c.get("offset"), 3, &format!("{what}: symmetries_continuous[{i}].offset"))?;
                    if axis.iter().all(|a| *a == 0.0) {
                        bail!("{what}: symmetries_continuous[{i}].axis is the zero vector");
                    }
                    continuous.push(Continuous { axis: [axis[0], axis[1], axis[2]], offset: [offset[0], offset[1], offset[2]] });
                }
            }
        }
        let symmetric = !discrete.is_empty() || !continuous.is_empty();
        let syms = symmetry_transformations(&discrete, &continuous, MAX_SYM_DISC_STEP);
        Ok(EvalModel { obj_id, pts, mesh, diameter, diameter_source, syms, symmetric })
    }
}
