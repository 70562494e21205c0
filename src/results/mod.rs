//! Result files. The JSON has the shape of the server's response `data` (rotation, translation,
//! pose_scores as plain nested lists) plus context a script wants: object, image size, timings.
pub mod detections;

use crate::pipeline::ism::score::IsmScores;
use crate::geometry::Proposal;
use crate::pipeline::{Estimate, Frame};
use serde_json::{json, Map, Value};

/// The `data` dict of the server response: `{"rotation": [3×3]…, "translation":
/// [[x,y,z]]…, "pose_scores": […]}`, best first, millimetres.
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
    if let Some(p) = &est.proposals {
        out.insert("search".into(), json!(est.search.name()));
        out.insert("proposals".into(), proposals(p, &est.selected));
    }
    if let (Some(scores), Some(p)) = (&est.ism, &est.proposals) {
        out.insert("ism".into(), ism(scores, p, &est.selected));
    }
    out
}

/// The ISM's detections, best score first: which proposal, its box, the final score and its
/// parts (SAM-6D's formula: (semantic + appearance + geometric · visible_ratio) / (2 +
/// visible_ratio)), the best-matching template, and whether the pose search used it.
pub fn ism(scores: &[IsmScores], proposals: &[Proposal], selected: &[usize]) -> Value {
    let mut order: Vec<&IsmScores> = scores.iter().collect();
    order.sort_by(|a, b| b.score.total_cmp(&a.score));
    order
        .iter()
        .map(|s| {
            json!({
                "proposal": s.index,
                "bbox": proposals.get(s.index).map(|p| p.bbox),
                "score": round3(s.score as f64),
                "semantic": round3(s.semantic as f64),
                "appearance": round3(s.appearance as f64),
                "geometric": round3(s.geometric as f64),
                "visible_ratio": round3(s.visible_ratio as f64),
                "best_template": s.best_template,
                "selected": selected.contains(&s.index),
            })
        })
        .collect()
}

/// The segmenter's proposals, best predicted IoU first: box (XYXY, max inclusive), scores,
/// area in pixels, and whether the pose search used the mask.
pub fn proposals(proposals: &[Proposal], selected: &[usize]) -> Value {
    proposals
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({
                "bbox": p.bbox,
                "predicted_iou": round3(p.predicted_iou as f64),
                "stability_score": round3(p.stability_score as f64),
                "area": p.area(),
                "selected": selected.contains(&i),
            })
        })
        .collect()
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

/// The header of a BOP19 results file.
pub const BOP_CSV_HEADER: &str = "scene_id,im_id,obj_id,score,R,t,time";

/// BOP19 CSV rows for one frame's estimate, one per instance: `R` row-major and `t` (mm)
/// space-separated, `time` the frame's seconds (-1 when unknown), the same for every row.
pub fn bop_csv_rows(scene_id: i64, im_id: i64, obj_id: i64, est: &Estimate, time_s: f64) -> String {
    let mut out = String::new();
    for p in &est.poses {
        let r: Vec<String> = p.pose.rotation_rows().iter().flatten().map(|v| v.to_string()).collect();
        let t: Vec<String> = p.pose.translation_array().iter().map(|v| v.to_string()).collect();
        out += &format!("{scene_id},{im_id},{obj_id},{},{},{},{time_s}\n", p.score, r.join(" "), t.join(" "));
    }
    out
}

/// BOP object id from a CAD file stem: the last run of digits (`obj_000005` → 5).
pub fn obj_id_from_stem(stem: &str) -> Option<i64> {
    let digits: String = stem.chars().rev().skip_while(|c| !c.is_ascii_digit()).take_while(char::is_ascii_digit).collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so that
/// a crash never leaves half a file under the final name.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// `path` with `.tmp` appended to its file name (same folder, so the final rename is atomic).
pub fn tmp_path(path: &std::path::Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Pose;
    use crate::pipeline::PoseEstimate;

    #[test]
    fn obj_ids_come_from_the_stem_digits() {
        assert_eq!(obj_id_from_stem("obj_000005"), Some(5));
        assert_eq!(obj_id_from_stem("obj_12_v2"), Some(2));
        assert_eq!(obj_id_from_stem("model"), None);
    }

    #[test]
    fn bop_rows_have_nine_and_three_numbers() {
        let pose = Pose::new(nalgebra::Matrix3::identity(), nalgebra::Vector3::new(1.5, -2.0, 900.25));
        let est = Estimate { poses: vec![PoseEstimate { pose, score: 0.5 }; 2], ..Default::default() };
        let text = bop_csv_rows(48, 1, 5, &est, 0.25);
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 2);
        let cols: Vec<&str> = rows[0].split(',').collect();
        assert_eq!(cols.len(), 7);
        assert_eq!(&cols[..4], &["48", "1", "5", "0.5"]);
        assert_eq!(cols[4].split(' ').count(), 9);
        assert_eq!(cols[5], "1.5 -2 900.25");
        assert_eq!(cols[6], "0.25");
    }
}
