//! Pose estimates to score: the BOP19 CSV (`scene_id,im_id,obj_id,score,R,t,time`) or our batch
//! JSON-lines (one frame per line, best instance first). Both become a flat list of
//! [`Prediction`]s plus per-frame times; failed frames of a JSON-lines file are counted, not fatal.
use crate::geometry::Pose;
use anyhow::{anyhow, bail, Context, Result};
use nalgebra::{Matrix3, Vector3};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One estimated instance.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub scene_id: u32,
    pub im_id: u32,
    pub obj_id: u32,
    pub score: f64,
    /// Model → camera, mm.
    pub pose: Pose,
}

/// Everything read from a predictions file.
#[derive(Clone, Debug, Default)]
pub struct Predictions {
    pub rows: Vec<Prediction>,
    /// Seconds per frame, by (scene_id, im_id), for frames whose time is known (≥ 0).
    pub frame_times: BTreeMap<(u32, u32), f64>,
    /// CSV frames whose rows disagree on the time (the largest is kept).
    pub inconsistent_times: usize,
    /// JSON-lines frames that failed (`"error"`), skipped.
    pub error_lines: usize,
    /// "csv" or "jsonl".
    pub format: &'static str,
}

impl Predictions {
    fn add_time(&mut self, key: (u32, u32), t: f64) {
        if !(t >= 0.0 && t.is_finite()) {
            return; // BOP: −1 = unknown.
        }
        match self.frame_times.get_mut(&key) {
            Some(old) if (*old - t).abs() > 1e-9 => {
                self.inconsistent_times += 1;
                *old = old.max(t);
            }
            Some(_) => {}
            None => {
                self.frame_times.insert(key, t);
            }
        }
    }
}

/// Reads `path`: JSON-lines when the name ends in .jsonl/.json/.ndjson or the first non-blank
/// character is `{`, else BOP19 CSV. `default_scene` fills a JSON-lines frame whose scene_id is
/// null (it is the scene when only one was given).
pub fn read_predictions(path: &Path, default_scene: Option<u32>) -> Result<Predictions> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading predictions {}", path.display()))?;
    let name = path.display().to_string();
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let json = matches!(ext.as_str(), "jsonl" | "json" | "ndjson") || (ext != "csv" && text.trim_start().starts_with('{'));
    if json {
        parse_jsonl(&text, &name, default_scene)
    } else {
        parse_csv(&text, &name)
    }
}

/// BOP19 CSV. The header line is optional; blank lines are skipped; `time` may be missing
/// (unknown). Errors name the line (1-based).
pub fn parse_csv(text: &str, name: &str) -> Result<Predictions> {
    let mut out = Predictions { format: "csv", ..Default::default() };
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let n = i + 1;
        if line.is_empty() || (n == 1 && line.starts_with("scene_id")) {
            continue;
        }
        let (p, time) = parse_csv_row(line).map_err(|e| anyhow!("{name} line {n}: {e} (expected scene_id,im_id,obj_id,score,R,t,time)"))?;
        out.add_time((p.scene_id, p.im_id), time);
        out.rows.push(p);
    }
    Ok(out)
}

fn parse_csv_row(line: &str) -> Result<(Prediction, f64)> {
    let f: Vec<&str> = line.split(',').map(str::trim).collect();
    if f.len() != 6 && f.len() != 7 {
        bail!("{} comma-separated fields, expected 7", f.len());
    }
    let id = |s: &str, what: &str| s.parse::<u32>().map_err(|_| anyhow!("{what} '{s}' is not a non-negative integer"));
    let num = |s: &str, what: &str| s.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| anyhow!("{what} '{s}' is not a number"));
    let list = |s: &str, what: &str, len: usize| -> Result<Vec<f64>> {
        let v: Vec<f64> = s.split_whitespace().map(|x| num(x, what)).collect::<Result<_>>()?;
        if v.len() != len {
            bail!("{what} has {} numbers, expected {len}", v.len());
        }
        Ok(v)
    };
    let r = list(f[4], "R", 9)?;
    let t = list(f[5], "t", 3)?;
    let time = if f.len() == 7 { num(f[6], "time")? } else { -1.0 };
    let p = Prediction {
        scene_id: id(f[0], "scene_id")?,
        im_id: id(f[1], "im_id")?,
        obj_id: id(f[2], "obj_id")?,
        score: num(f[3], "score")?,
        pose: Pose::new(Matrix3::from_row_slice(&r), Vector3::from_row_slice(&t)),
    };
    Ok((p, time))
}

/// Our batch JSON-lines: one frame per line with `frame.{scene_id, im_id, name}`, `obj_id` (or
/// an `object` name like obj_000005), `rotation`, `translation`, `pose_scores`, `time_s`.
pub fn parse_jsonl(text: &str, name: &str, default_scene: Option<u32>) -> Result<Predictions> {
    let mut out = Predictions { format: "jsonl", ..Default::default() };
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let n = i + 1;
        let v: Value = serde_json::from_str(line).map_err(|e| anyhow!("{name} line {n}: not JSON: {e}"))?;
        if v.get("error").is_some() {
            out.error_lines += 1;
            continue;
        }
        parse_json_frame(&v, default_scene, &mut out).map_err(|e| anyhow!("{name} line {n}: {e}"))?;
    }
    Ok(out)
}

fn parse_json_frame(v: &Value, default_scene: Option<u32>, out: &mut Predictions) -> Result<()> {
    let frame = v.get("frame").unwrap_or(&Value::Null);
    let as_id = |x: &Value| x.as_u64().and_then(|u| u32::try_from(u).ok());
    let scene_id = match frame.get("scene_id").and_then(as_id) {
        Some(s) => s,
        None => default_scene.ok_or_else(|| anyhow!("frame.scene_id is missing and several scenes were given"))?,
    };
    let im_id = match frame.get("im_id").and_then(as_id) {
        Some(s) => s,
        None => frame.get("name").and_then(Value::as_str).and_then(digits).ok_or_else(|| anyhow!("frame.im_id is missing and frame.name has no digits"))?,
    };
    let obj_id = match v.get("obj_id").and_then(as_id) {
        Some(o) => o,
        None => v.get("object").and_then(Value::as_str).and_then(digits).ok_or_else(|| anyhow!("obj_id is missing and the object name has no digits"))?,
    };
    let arr = |key: &str| v.get(key).and_then(Value::as_array).ok_or_else(|| anyhow!("'{key}' is missing or not a list"));
    let (rot, trans, scores) = (arr("rotation")?, arr("translation")?, arr("pose_scores")?);
    if rot.len() != trans.len() || rot.len() != scores.len() {
        bail!("rotation, translation and pose_scores have {}, {} and {} entries", rot.len(), trans.len(), scores.len());
    }
    let nums = |x: &Value, what: &str| -> Result<Vec<f64>> {
        let flat: Vec<&Value> = match x.as_array() {
            Some(a) => a.iter().flat_map(|e| e.as_array().map(|r| r.iter().collect::<Vec<_>>()).unwrap_or_else(|| vec![e])).collect(),
            None => bail!("{what} is not a list"),
        };
        flat.iter().map(|e| e.as_f64().filter(|f| f.is_finite()).ok_or_else(|| anyhow!("{what} holds a non-number"))).collect()
    };
    for k in 0..rot.len() {
        let r = nums(&rot[k], "rotation")?;
        let t = nums(&trans[k], "translation")?;
        if r.len() != 9 || t.len() != 3 {
            bail!("instance {k}: rotation has {} numbers (expected 9), translation {} (expected 3)", r.len(), t.len());
        }
        let score = scores[k].as_f64().ok_or_else(|| anyhow!("pose_scores[{k}] is not a number"))?;
        out.rows.push(Prediction { scene_id, im_id, obj_id, score, pose: Pose::new(Matrix3::from_row_slice(&r), Vector3::from_row_slice(&t)) });
    }
    if let Some(t) = v.get("time_s").and_then(Value::as_f64) {
        out.add_time((scene_id, im_id), t);
    }
    Ok(())
}

/// The integer made of the last run of digits in `s` ("obj_000005" → 5, "000012" → 12).
pub fn digits(s: &str) -> Option<u32> {
    let end = s.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = s[..end].rfind(|c: char| !c.is_ascii_digit()).map_or(0, |i| i + 1);
    s[start..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_times_and_line_numbers() {
        let text = "scene_id,im_id,obj_id,score,R,t,time\n\
                    1,3,5,0.9,1 0 0 0 1 0 0 0 1,10 20 30,0.5\n\
                    \n\
                    1,3,5,0.4,1 0 0 0 1 0 0 0 1,11 20 30,0.5\n\
                    1,4,5,0.8,0 -1 0 1 0 0 0 0 1,0 0 500,-1\n";
        let p = parse_csv(text, "r.csv").unwrap();
        assert_eq!(p.rows.len(), 3);
        assert_eq!((p.rows[0].scene_id, p.rows[0].im_id, p.rows[0].obj_id, p.rows[0].score), (1, 3, 5, 0.9));
        assert_eq!(p.rows[0].pose.t, Vector3::new(10.0, 20.0, 30.0));
        assert_eq!(p.rows[2].pose.r[(0, 1)], -1.0);
        // Time −1 is unknown: only frame (1, 3) has a time.
        assert_eq!(p.frame_times.len(), 1);
        assert_eq!(p.frame_times[&(1, 3)], 0.5);

        let e = parse_csv("scene_id,im_id,obj_id,score,R,t,time\n1,3,5,0.9,1 0 0 0 1 0 0 0,1 2 3,0.1\n", "r.csv").unwrap_err().to_string();
        assert!(e.contains("r.csv line 2") && e.contains("R has 8 numbers"), "{e}");
        let e = parse_csv("1,x,5,0.9,1 0 0 0 1 0 0 0 1,1 2 3,0.1\n", "r.csv").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("im_id 'x'"), "{e}");
        let e = parse_csv("1,2,5\n", "r.csv").unwrap_err().to_string();
        assert!(e.contains("3 comma-separated fields"), "{e}");
    }

    #[test]
    fn jsonl_frames_errors_and_ids() {
        let text = r#"{"frame": {"name": "000007", "scene_id": null, "im_id": null}, "obj_id": null, "object": "obj_000005", "rotation": [[[1,0,0],[0,1,0],[0,0,1]], [[1,0,0],[0,1,0],[0,0,1]]], "translation": [[1,2,3],[4,5,6]], "pose_scores": [0.9, 0.2], "time_s": 1.25}
{"frame": {"name": "000008", "scene_id": 2, "im_id": 8}, "inputs": {}, "error": "bad depth"}
{"frame": {"name": "x", "scene_id": 2, "im_id": 9}, "obj_id": 5, "rotation": [], "translation": [], "pose_scores": [], "time_s": 0.5}
"#;
        let p = parse_jsonl(text, "r.jsonl", Some(2)).unwrap();
        assert_eq!(p.rows.len(), 2);
        assert_eq!((p.rows[1].scene_id, p.rows[1].im_id, p.rows[1].obj_id, p.rows[1].score), (2, 7, 5, 0.2));
        assert_eq!(p.rows[1].pose.t, Vector3::new(4.0, 5.0, 6.0));
        assert_eq!(p.error_lines, 1);
        assert_eq!(p.frame_times.len(), 2);
        let e = parse_jsonl(text, "r.jsonl", None).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("scene_id"), "{e}");
        assert_eq!(digits("obj_000005"), Some(5));
        assert_eq!(digits("000012"), Some(12));
        assert_eq!(digits("abc"), None);
    }
}
