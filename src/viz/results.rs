//! Reads what `sam6d infer` (one JSON object, compact or pretty) and batch runs (JSON-lines, one
//! object per frame) write, keeping what the viewer needs: the estimated poses and scores, and
//! the input files recorded under `inputs`.
use crate::geometry::Pose;
use anyhow::{bail, Context};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One frame of a result file.
#[derive(Clone, Debug)]
pub struct FrameRecord {
    /// Shown in the window title and in messages: the frame name, or the result file's stem.
    pub label: String,
    pub rgb: Option<PathBuf>,
    pub depth: Option<PathBuf>,
    pub cam: Option<PathBuf>,
    pub cad: Option<PathBuf>,
    /// Which entry of a BOP `scene_camera.json` to use (the frame's im_id).
    pub cam_frame: Option<String>,
    pub depth_scale: Option<f64>,
    /// Model diameter (mm) that infer recorded: tells a model in metres from one in mm.
    pub diameter_mm: Option<f64>,
    /// Best first, as in the file. A score is NaN when the file has none.
    pub instances: Vec<(Pose, f64)>,
    /// A batch line for a frame that failed: its message.
    pub error: Option<String>,
}

/// Input files given on the command line: they replace the recorded ones in every frame.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub rgb: Option<PathBuf>,
    pub depth: Option<PathBuf>,
    pub cam: Option<PathBuf>,
    pub cad: Option<PathBuf>,
}

impl FrameRecord {
    pub fn apply(&mut self, o: &Overrides) {
        for (slot, given) in [(&mut self.rgb, &o.rgb), (&mut self.depth, &o.depth), (&mut self.cam, &o.cam), (&mut self.cad, &o.cad)] {
            if given.is_some() {
                slot.clone_from(given);
            }
        }
    }
}

/// Reads a result file: one JSON object, or JSON-lines (one object per non-empty line).
/// Relative input paths are taken from the current directory, or else from the result file's
/// folder (results are often moved along with their inputs).
pub fn read_results(path: &Path) -> anyhow::Result<Vec<FrameRecord>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read result file {}", path.display()))?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "result".into());
    let base = path.parent().unwrap_or(Path::new(""));
    let what = path.display().to_string();
    parse_results(&text, &stem, base, &what)
}

/// [`read_results`] on text; `base` is the folder relative paths may also be resolved against.
pub fn parse_results(text: &str, stem: &str, base: &Path, what: &str) -> anyhow::Result<Vec<FrameRecord>> {
    if text.trim().is_empty() {
        bail!("{what}: the file is empty (expected the JSON that `sam6d infer` writes)");
    }
    // A whole-file parse first: `infer --pretty` spans several lines.
    let values: Vec<(usize, Value)> = match serde_json::from_str::<Value>(text) {
        Ok(v) => vec![(0, v)],
        Err(whole) => {
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let v = serde_json::from_str(line).map_err(|e| {
                    if i == 0 {
                        anyhow::anyhow!("{what}: not valid JSON ({whole}) nor JSON-lines (line 1: {e})")
                    } else {
                        anyhow::anyhow!("{what}: line {}: not valid JSON: {e}", i + 1)
                    }
                })?;
                out.push((i + 1, v));
            }
            out
        }
    };
    let single = values.len() == 1;
    values
        .into_iter()
        .map(|(line, v)| {
            let what = if line == 0 { what.to_string() } else { format!("{what}: line {line}") };
            parse_frame(&v, if single { stem } else { "" }, base, &what)
        })
        .collect()
}

fn parse_frame(v: &Value, stem: &str, base: &Path, what: &str) -> anyhow::Result<FrameRecord> {
    let obj = v.as_object().with_context(|| format!("{what}: expected a JSON object with rotation, translation and pose_scores"))?;
    let inputs = obj.get("inputs").and_then(Value::as_object);
    let path_of = |key: &str| inputs.and_then(|i| i.get(key)).and_then(Value::as_str).filter(|s| !s.is_empty()).map(|s| resolve(s, base));
    let frame = obj.get("frame").and_then(Value::as_object);
    let frame_name = frame.and_then(|f| f.get("name")).and_then(Value::as_str);
    let im_id = frame.and_then(|f| f.get("im_id")).and_then(Value::as_i64);
    let cam_frame = inputs.and_then(|i| i.get("cam_frame")).and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    let label = match (frame_name, stem) {
        (Some(name), _) => name.to_string(),
        (None, s) if !s.is_empty() => s.to_string(),
        _ => what.to_string(),
    };
    let error = obj.get("error").map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string));
    let instances = if error.is_some() && !obj.contains_key("rotation") { Vec::new() } else { parse_instances(obj, what)? };
    Ok(FrameRecord {
        label,
        rgb: path_of("rgb"),
        depth: path_of("depth"),
        cam: path_of("cam"),
        cad: path_of("cad"),
        cam_frame: cam_frame.or(im_id.map(|i| i.to_string())),
        depth_scale: inputs.and_then(|i| i.get("depth_scale")).and_then(Value::as_f64),
        diameter_mm: inputs.and_then(|i| i.get("diameter_mm")).and_then(Value::as_f64),
        instances,
        error,
    })
}

fn resolve(s: &str, base: &Path) -> PathBuf {
    let p = PathBuf::from(s);
    if p.is_absolute() || p.exists() {
        return p;
    }
    let beside = base.join(&p);
    if beside.exists() {
        beside
    } else {
        p
    }
}

fn parse_instances(obj: &serde_json::Map<String, Value>, what: &str) -> anyhow::Result<Vec<(Pose, f64)>> {
    let list = |key: &str| -> anyhow::Result<&Vec<Value>> {
        obj.get(key).and_then(Value::as_array).with_context(|| format!("{what}: no \"{key}\" list: is this a `sam6d infer` result?"))
    };
    let (rs, ts) = (list("rotation")?, list("translation")?);
    if rs.len() != ts.len() {
        bail!("{what}: {} rotations but {} translations", rs.len(), ts.len());
    }
    let scores = match obj.get("pose_scores") {
        Some(Value::Array(s)) if s.len() == rs.len() => s.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect(),
        Some(Value::Array(s)) => bail!("{what}: {} pose_scores for {} poses", s.len(), rs.len()),
        _ => vec![f64::NAN; rs.len()],
    };
    let nums = |v: &Value, n: usize, name: &str, i: usize| -> anyhow::Result<Vec<f64>> {
        let flat: Vec<&Value> = match v.as_array() {
            Some(a) if a.iter().all(Value::is_array) => a.iter().flat_map(|r| r.as_array().unwrap().iter()).collect(),
            Some(a) => a.iter().collect(),
            None => Vec::new(),
        };
        let out: Vec<f64> = flat.iter().filter_map(|x| x.as_f64()).collect();
        if out.len() != n || flat.len() != n || out.iter().any(|x| !x.is_finite()) {
            bail!("{what}: {name} of instance {i} must be {n} finite numbers");
        }
        Ok(out)
    };
    let mut out = Vec::with_capacity(rs.len());
    for (i, ((r, t), s)) in rs.iter().zip(ts).zip(scores).enumerate() {
        let r = nums(r, 9, "rotation", i)?;
        let t = nums(t, 3, "translation", i)?;
        let pose = Pose::new(nalgebra::Matrix3::from_row_slice(&r), nalgebra::Vector3::from_row_slice(&t));
        out.push((pose, s));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"{"rotation": [[[1,0,0],[0,1,0],[0,0,1]], [[0,-1,0],[1,0,0],[0,0,1]]],
        "translation": [[1,2,300],[4,5,600]], "pose_scores": [0.9, 0.4], "object": "m",
        "inputs": {"rgb": "/x/rgb.png", "depth": "/x/depth.png", "cam": "/x/camera.json", "cad": "/x/m.ply", "diameter_mm": 80.0}}"#;

    #[test]
    fn single_pretty_json() {
        let pretty = serde_json::to_string_pretty(&serde_json::from_str::<Value>(ONE).unwrap()).unwrap();
        let f = parse_results(&pretty, "res", Path::new(""), "res.json").unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].label, "res");
        assert_eq!(f[0].instances.len(), 2);
        assert_eq!(f[0].instances[1].0.r[(0, 1)], -1.0);
        assert_eq!(f[0].instances[1].0.t.z, 600.0);
        assert_eq!(f[0].instances[0].1, 0.9);
        assert_eq!(f[0].cad.as_deref(), Some(Path::new("/x/m.ply")));
        assert_eq!(f[0].diameter_mm, Some(80.0));
    }

    #[test]
    fn json_lines_with_a_failed_frame() {
        let a: Value = serde_json::from_str(ONE).unwrap();
        let mut a = a.as_object().unwrap().clone();
        a.insert("frame".into(), serde_json::json!({"name": "000003", "scene_id": 1, "im_id": 3}));
        let b = r#"{"frame": {"name": "000004", "scene_id": 1, "im_id": 4}, "inputs": {"rgb": "r.png"}, "error": "no depth"}"#;
        let text = format!("{}\n\n{b}\n", serde_json::to_string(&a).unwrap());
        let f = parse_results(&text, "batch", Path::new(""), "batch.jsonl").unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].label.as_str(), f[0].cam_frame.as_deref()), ("000003", Some("3")));
        assert_eq!(f[1].error.as_deref(), Some("no depth"));
        assert!(f[1].instances.is_empty());
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let e = |t: &str| parse_results(t, "r", Path::new(""), "r.json").unwrap_err().to_string();
        assert!(e("").contains("empty"));
        assert!(e("{\"a\": 1}\nnot json").contains("line 2"));
        assert!(e("[1, 2]").contains("expected a JSON object"));
        assert!(e(r#"{"translation": []}"#).contains("\"rotation\""));
        assert!(e(r#"{"rotation": [[1,2]], "translation": [[1,2,3]]}"#).contains("rotation of instance 0"));
        assert!(e(r#"{"rotation": [], "translation": [[1,2,3]]}"#).contains("0 rotations but 1"));
    }

    #[test]
    fn overrides_replace_recorded_paths() {
        let mut f = parse_results(ONE, "r", Path::new(""), "r").unwrap().remove(0);
        f.apply(&Overrides { cad: Some("/y/other.ply".into()), ..Default::default() });
        assert_eq!(f.cad.as_deref(), Some(Path::new("/y/other.ply")));
        assert_eq!(f.rgb.as_deref(), Some(Path::new("/x/rgb.png")));
    }
}
