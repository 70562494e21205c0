//! Camera intrinsics: SAM-6D's `camera.json` (`cam_K` row-major 3×3, `depth_scale`) or one entry
//! of a BOP `scene_camera.json` (a map from image id to the same fields).
use super::InputError;
use serde_json::Value;
use std::path::Path;

/// Pinhole intrinsics in pixels; pixel (u, v) is column, row of the pixel index (centres at
/// integer coordinates, as SAM-6D projects). `depth_scale` turns raw depth units into millimetres.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Camera {
    pub fx: f64,
    pub fy: f64,
    pub cx: f64,
    pub cy: f64,
    pub depth_scale: f64,
}

impl Camera {
    pub fn new(fx: f64, fy: f64, cx: f64, cy: f64, depth_scale: f64) -> Result<Camera, InputError> {
        let cam = Camera { fx, fy, cx, cy, depth_scale };
        cam.validate("camera")?;
        Ok(cam)
    }

    /// Builds from a row-major 3×3 `cam_K`.
    pub fn from_k(k: &[f64], depth_scale: f64, what: &str) -> Result<Camera, InputError> {
        if k.len() != 9 {
            return Err(InputError::invalid(what, format!("cam_K must have 9 numbers (row-major 3x3), got {}", k.len())));
        }
        if k.iter().any(|v| !v.is_finite()) {
            return Err(InputError::invalid(what, "cam_K contains a non-finite number"));
        }
        let cam = Camera { fx: k[0], fy: k[4], cx: k[2], cy: k[5], depth_scale };
        cam.validate(what)?;
        Ok(cam)
    }

    fn validate(&self, what: &str) -> Result<(), InputError> {
        for (name, v) in [("fx", self.fx), ("fy", self.fy), ("cx", self.cx), ("cy", self.cy)] {
            if !v.is_finite() {
                return Err(InputError::invalid(what, format!("{name} is not finite")));
            }
        }
        if self.fx <= 0.0 || self.fy <= 0.0 {
            return Err(InputError::invalid(what, format!("focal lengths must be positive, got fx={} fy={}", self.fx, self.fy)));
        }
        if !self.depth_scale.is_finite() || self.depth_scale <= 0.0 {
            return Err(InputError::invalid(what, format!("depth_scale must be a positive number, got {}", self.depth_scale)));
        }
        Ok(())
    }

    pub fn k(&self) -> [f64; 9] {
        [self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0]
    }

    /// Parses a `camera.json` text. `frame` picks an entry of a BOP `scene_camera.json`; without
    /// it a BOP file must hold exactly one entry... or we take the lowest image id and say so.
    pub fn from_json_str(text: &str, frame: Option<&str>, what: &str) -> Result<Camera, InputError> {
        let v: Value = serde_json::from_str(text).map_err(|e| InputError::invalid(what, format!("not valid JSON: {e}")))?;
        let obj = v.as_object().ok_or_else(|| InputError::invalid(what, "expected a JSON object with cam_K"))?;
        if obj.contains_key("cam_K") {
            return Self::from_entry(&v, what);
        }
        // BOP scene_camera.json: {"<im_id>": {"cam_K": [...], "depth_scale": ...}, ...}
        let entry = match frame {
            Some(id) => obj.get(id).ok_or_else(|| {
                InputError::invalid(what, format!("no entry \"{id}\" in this scene_camera.json ({} entries)", obj.len()))
            })?,
            None => {
                let mut ids: Vec<(&String, &Value)> = obj.iter().filter(|(_, e)| e.get("cam_K").is_some()).collect();
                ids.sort_by_key(|(k, _)| (k.parse::<i64>().unwrap_or(i64::MAX), (*k).clone()));
                let (_, e) = *ids.first().ok_or_else(|| {
                    InputError::invalid(what, "no cam_K found: expected SAM-6D camera.json or BOP scene_camera.json")
                })?;
                e
            }
        };
        Self::from_entry(entry, what)
    }

    fn from_entry(v: &Value, what: &str) -> Result<Camera, InputError> {
        let k = v
            .get("cam_K")
            .and_then(Value::as_array)
            .ok_or_else(|| InputError::invalid(what, "cam_K must be an array of 9 numbers"))?;
        let k: Vec<f64> = k
            .iter()
            .map(|x| x.as_f64().ok_or_else(|| InputError::invalid(what, "cam_K must contain only numbers")))
            .collect::<Result<_, _>>()?;
        let depth_scale = match v.get("depth_scale") {
            None | Some(Value::Null) => 1.0,
            Some(x) => x.as_f64().ok_or_else(|| InputError::invalid(what, "depth_scale must be a number"))?,
        };
        Self::from_k(&k, depth_scale, what)
    }

    pub fn from_json_file(path: &Path, frame: Option<&str>) -> Result<Camera, InputError> {
        let bytes = super::read_file(path)?;
        let text = String::from_utf8(bytes).map_err(|_| InputError::invalid(path.display().to_string(), "not UTF-8 text"))?;
        Self::from_json_str(&text, frame, &path.display().to_string())
    }

    /// Back-projects pixel (u, v) at depth z (mm) to camera coordinates (mm).
    #[inline]
    pub fn unproject(&self, u: f64, v: f64, z: f64) -> [f64; 3] {
        [(u - self.cx) * z / self.fx, (v - self.cy) * z / self.fy, z]
    }

    /// Projects a camera-frame point to pixel coordinates.
    #[inline]
    pub fn project(&self, p: [f64; 3]) -> [f64; 2] {
        [self.fx * p[0] / p[2] + self.cx, self.fy * p[1] / p[2] + self.cy]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sam6d_camera_json() {
        let c = Camera::from_json_str(
            r#"{"cam_K": [572.4114, 0.0, 325.2611, 0.0, 573.57043, 242.04899, 0.0, 0.0, 1.0], "depth_scale": 1.0}"#,
            None,
            "cam",
        )
        .unwrap();
        assert_eq!(c.fx, 572.4114);
        assert_eq!(c.cy, 242.04899);
        assert_eq!(c.depth_scale, 1.0);
        let p = c.unproject(400.0, 300.0, 800.0);
        let uv = c.project(p);
        assert!((uv[0] - 400.0).abs() < 1e-9 && (uv[1] - 300.0).abs() < 1e-9);
    }

    #[test]
    fn bop_scene_camera_picks_entry() {
        let text = r#"{"3": {"cam_K": [600,0,320,0,601,240,0,0,1], "depth_scale": 0.1},
                       "1": {"cam_K": [500,0,320,0,501,240,0,0,1], "depth_scale": 0.1, "cam_R_w2c": [1,0,0,0,1,0,0,0,1]}}"#;
        let first = Camera::from_json_str(text, None, "cam").unwrap();
        assert_eq!(first.fx, 500.0);
        assert_eq!(first.depth_scale, 0.1);
        assert_eq!(Camera::from_json_str(text, Some("3"), "cam").unwrap().fx, 600.0);
        let err = Camera::from_json_str(text, Some("7"), "cam").unwrap_err().to_string();
        assert!(err.contains("no entry \"7\""), "{err}");
    }

    #[test]
    fn rejects_bad_intrinsics() {
        for (text, needle) in [
            (r#"{"cam_K": [0,0,320,0,500,240,0,0,1]}"#, "focal lengths must be positive"),
            (r#"{"cam_K": [500,0,320,0,500,240,0,0]}"#, "9 numbers"),
            (r#"{"cam_K": [500,0,320,0,500,240,0,0,1], "depth_scale": -1}"#, "depth_scale"),
            (r#"{"cam_K": "x"}"#, "array of 9"),
            (r#"[1,2]"#, "JSON object"),
            (r#"{"cam_K": [500,0,320,0,500,240,0,0,1"#, "not valid JSON"),
            (r#"{"foo": 1}"#, "no cam_K"),
        ] {
            let err = Camera::from_json_str(text, None, "cam").unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        // JSON has no NaN literal, but a huge exponent parses to infinity.
        let err = Camera::from_json_str(r#"{"cam_K": [1e999,0,320,0,500,240,0,0,1]}"#, None, "cam");
        assert!(err.is_err());
    }
}
