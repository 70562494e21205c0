//! Result files. The JSON has the shape of the server's response `data` (rotation, translation,
//! pose_scores as plain nested lists) plus context a script wants: object, image size, timings.
use crate::pipeline::{Estimate, Frame};
use serde_json::{json, Map, Value};

/// The `data` dict of the server response: {"rotation": [3×3]…, "translation": [[x,y,z]]…,
/// "pose_scores": […]}, best first, millimetres.
pub fn pose_lists(est: &Estimate) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("rotation".into(), est.poses.iter().map(|p| json!(p.pose.rotation_rows())).collect());
    m.insert("translation".into(), est.poses.iter().map(|p| json!(p.pose.translation_array())).collect());
    m.insert("pose_scores".into(), est.poses.iter().map(|p| json!(p.score)).collect());
    m
}

/// What `infer` prints and the server answers for one frame: the pose lists plus the object,
/// image size, pipeline, device and stage timings.
pub fn estimate_json(est: &Estimate, object: &str, frame: &Frame, pipeline: &str, device: &str) -> Map<String, Value> {
    let mut out = pose_lists(est);
    out.insert("object".into(), json!(object));
    out.insert("image_size".into(), json!({"width": frame.width(), "height": frame.height()}));
    out.insert("pipeline".into(), json!(pipeline));
    out.insert("device".into(), json!(device));
    out.insert("timings_ms".into(), timings(est));
    out
}

pub fn timings(est: &Estimate) -> Value {
    let mut m = Map::new();
    for (k, v) in &est.timings {
        m.insert((*k).into(), json!(round3(*v)));
    }
    Value::Object(m)
}

pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
