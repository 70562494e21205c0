//! Writes synthetic frames as a BOP scene folder, the layout `sam6d infer --scene` reads and the
//! BOP toolkit evaluates against: `rgb/NNNNNN.png`, `depth/NNNNNN.png` (16-bit),
//! `scene_camera.json`, `scene_gt.json` and `scene_gt_info.json` (only `visib_fract` in it).
//! Tests and benchmarks use it as a fixture writer so that every consumer sees the same files.
use super::scene::SyntheticFrame;
use serde_json::{json, Map, Value};
use std::path::Path;

/// One frame of the scene: its BOP image id and the generated frame.
pub struct BopFrame<'a> {
    pub im_id: u32,
    pub frame: &'a SyntheticFrame,
}

/// Writes `frames` into `dir` (created if needed) as one BOP scene. Depth is stored in raw
/// units of `depth_scale` mm (BOP's LM uses 1.0, T-LESS 0.1). `obj_id` maps a ground-truth
/// object name (the generator's target name) to its BOP object id; instances it maps to `None`
/// are left out of `scene_gt.json`. Instances keep the generator's order.
pub fn write_scene(dir: &Path, frames: &[BopFrame], depth_scale: f64, obj_id: impl Fn(&str) -> Option<u32>) -> anyhow::Result<()> {
    use anyhow::Context;
    for sub in ["rgb", "depth"] {
        std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    let (mut cameras, mut gt, mut gt_info) = (Map::new(), Map::new(), Map::new());
    for f in frames {
        let stem = format!("{:06}", f.im_id);
        let rgb = dir.join("rgb").join(format!("{stem}.png"));
        f.frame.rgb.save(&rgb).with_context(|| format!("writing {}", rgb.display()))?;
        let depth = dir.join("depth").join(format!("{stem}.png"));
        crate::io::image::write_depth_png(&f.frame.depth, depth_scale, &depth).with_context(|| format!("writing {}", depth.display()))?;
        let key = f.im_id.to_string();
        cameras.insert(key.clone(), json!({"cam_K": f.frame.camera.k(), "depth_scale": depth_scale}));
        let known: Vec<_> = f.frame.gt.iter().filter_map(|g| obj_id(&g.object).map(|id| (id, g))).collect();
        let instances: Vec<Value> = known
            .iter()
            .map(|(id, g)| {
                let r: Vec<f64> = g.pose.rotation_rows().iter().flatten().copied().collect();
                json!({"cam_R_m2c": r, "cam_t_m2c": g.pose.translation_array(), "obj_id": id})
            })
            .collect();
        gt.insert(key.clone(), Value::Array(instances));
        gt_info.insert(key, known.iter().map(|(_, g)| json!({"visib_fract": g.visible_fraction})).collect());
    }
    for (name, map) in [("scene_camera.json", cameras), ("scene_gt.json", gt), ("scene_gt_info.json", gt_info)] {
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(map))? + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{generate, procedural_targets, SceneSpec, SceneTarget};

    #[test]
    fn writes_a_readable_scene() {
        let target = procedural_targets().into_iter().find(|t| t.name == "bracket").unwrap();
        let mut spec = SceneSpec::new(5, vec![SceneTarget { object: target, instances: 1 }]);
        let k = crate::synth::KINECT;
        spec.camera = crate::io::Camera::new(k.fx / 4.0, k.fy / 4.0, k.cx / 4.0, k.cy / 4.0, 1.0).unwrap();
        (spec.width, spec.height, spec.distractors) = (160, 120, 0);
        let frame = generate(&spec);
        let dir = tempfile::tempdir().unwrap();
        write_scene(dir.path(), &[BopFrame { im_id: 3, frame: &frame }], 0.1, |n| (n == "bracket").then_some(7)).unwrap();
        assert!(dir.path().join("rgb/000003.png").exists() && dir.path().join("depth/000003.png").exists());
        let cam = crate::io::Camera::from_json_file(&dir.path().join("scene_camera.json"), Some("3")).unwrap();
        assert_eq!(cam.depth_scale, 0.1);
        let gt: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("scene_gt.json")).unwrap()).unwrap();
        assert_eq!(gt["3"][0]["obj_id"], 7);
        let t = gt["3"][0]["cam_t_m2c"][2].as_f64().unwrap();
        assert!((t - frame.gt[0].pose.t.z).abs() < 1e-9);
        // Depth round-trips within the 0.1 mm quantisation.
        let depth = crate::io::image::read_depth(&dir.path().join("depth/000003.png"), 0.1).unwrap();
        let err = depth.mm.iter().zip(&frame.depth.mm).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(err <= 0.051, "{err}");
    }
}
