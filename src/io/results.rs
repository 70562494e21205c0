//! Result files. The JSON has the shape of the server's response `data` (rotation, translation,
//! pose_scores as plain nested lists) plus context a script wants: object, image size, timings.
use crate::pipeline::Estimate;
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

pub fn timings(est: &Estimate) -> Value {
    let mut m = Map::new();
    for (k, v) in &est.timings {
        m.insert((*k).into(), json!((v * 1000.0).round() / 1000.0));
    }
    Value::Object(m)
}
