//! One frame, ready to draw: the depth back-projected to a coloured point cloud and the CAD
//! model at each estimated pose, all in the original camera's frame (OpenCV: x right, y down,
//! z forward, millimetres), plus the viewpoints to look at it from.
use super::results::FrameRecord;
use crate::geometry::{cloud, Mesh, Pose, Vec3};
use crate::io::{self, Camera};
use crate::pipeline::CadUnit;
use anyhow::Context;
use std::path::Path;

/// An estimated pose and how it is drawn.
#[derive(Clone, Debug)]
pub struct Instance {
    pub pose: Pose,
    pub score: f64,
    /// Linear RGB in [0, 1], from [`score_color`].
    pub color: [f32; 3],
}

pub struct VizScene {
    pub label: String,
    pub camera: Camera,
    /// Size of the RGB-D frame, pixels.
    pub width: u32,
    pub height: u32,
    /// Camera-frame points (mm) of every `stride`-th pixel in both directions with a depth.
    pub points: Vec<Vec3>,
    pub colors: Vec<[u8; 3]>,
    pub stride: usize,
    /// The CAD model, model frame, millimetres.
    pub mesh: Mesh,
    pub diameter: f32,
    pub instances: Vec<Instance>,
    /// The batch line's error, for a frame that failed.
    pub error: Option<String>,
}

/// Where the picture is taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ViewKind {
    /// The original camera: same viewpoint and intrinsics, so the picture lines up with the RGB
    /// image (scaled to --size).
    Camera,
    /// A three-quarter view of the selected instance: 45° to the side of and 30° above the
    /// original camera's line of sight, 2.5 model diameters away.
    Orbit,
}

/// A pinhole view, in the scene's frame (OpenCV, mm). `up` points up in the picture.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct View {
    pub eye: Vec3,
    pub target: Vec3,
    pub up: Vec3,
    /// Intrinsics of the picture (pixel centres at integer coordinates, as [`Camera`]).
    pub fx: f32,
    pub fy: f32,
    pub cx: f32,
    pub cy: f32,
    pub width: u32,
    pub height: u32,
    pub near: f32,
    pub far: f32,
}

/// Red (score 0) through yellow (0.5) to green (1); grey when there is no score. Scores are
/// clamped to [0, 1].
pub fn score_color(score: f64) -> [f32; 3] {
    if !score.is_finite() {
        return [0.6, 0.6, 0.6];
    }
    let s = score.clamp(0.0, 1.0) as f32;
    if s < 0.5 {
        [1.0, 2.0 * s, 0.0]
    } else {
        [2.0 * (1.0 - s), 1.0, 0.0]
    }
}

fn need<'a>(p: &'a Option<std::path::PathBuf>, name: &str, flag: &str) -> anyhow::Result<&'a Path> {
    p.as_deref().with_context(|| format!("the result file records no {name} for this frame: pass {flag} FILE"))
}

impl VizScene {
    /// Reads the frame's inputs. At most about `max_points` points are kept (a regular pixel
    /// grid): enough to see the scene, few enough for a software renderer.
    pub fn load(rec: &FrameRecord, cad_unit: Option<CadUnit>, max_points: usize) -> anyhow::Result<VizScene> {
        let cam_path = need(&rec.cam, "camera intrinsics", "--cam")?;
        let mut camera = Camera::from_json_file(cam_path, rec.cam_frame.as_deref())?;
        if let Some(s) = rec.depth_scale {
            camera = Camera::new(camera.fx, camera.fy, camera.cx, camera.cy, s)?;
        }
        let rgb = io::image::read_rgb(need(&rec.rgb, "RGB image", "--rgb")?)?;
        let depth = io::image::read_depth(need(&rec.depth, "depth image", "--depth")?, camera.depth_scale)?;
        io::image::check_same_size(&rgb, &depth)?;
        let cad_path = need(&rec.cad, "CAD model", "--cad")?;
        let mut mesh = crate::geometry::ply::read_ply(cad_path).with_context(|| format!("loading CAD model {}", cad_path.display()))?;
        anyhow::ensure!(!mesh.faces.is_empty(), "CAD model {}: no faces (a triangle mesh is needed to draw it)", cad_path.display());
        let mut diameter = mesh.diameter();
        anyhow::ensure!(diameter > 0.0 && diameter.is_finite(), "CAD model {}: degenerate (no extent)", cad_path.display());
        // Without --cad-unit, follow what infer used: a model recorded 1000x larger was in metres.
        let unit = cad_unit.unwrap_or(match rec.diameter_mm {
            Some(d) if (f64::from(diameter) * 1000.0 / d - 1.0).abs() < 0.05 => CadUnit::M,
            _ => CadUnit::Mm,
        });
        if unit == CadUnit::M {
            mesh.vertices.iter_mut().for_each(|v| *v *= 1000.0);
            diameter *= 1000.0;
        }

        let (w, h) = (depth.width, depth.height);
        let organized = cloud::organized(&depth, &camera, 1.0, f32::INFINITY);
        let valid = organized.iter().filter(|p| p.z > 0.0).count().max(1);
        let stride = ((valid as f64 / max_points.max(1) as f64).sqrt().ceil() as usize).max(1);
        let (mut points, mut colors) = (Vec::new(), Vec::new());
        for v in (0..h).step_by(stride) {
            for u in (0..w).step_by(stride) {
                let p = organized[v * w + u];
                if p.z > 0.0 {
                    points.push(p);
                    colors.push(rgb.get_pixel(u as u32, v as u32).0);
                }
            }
        }
        let instances = rec.instances.iter().map(|&(pose, score)| Instance { pose, score, color: score_color(score) }).collect();
        Ok(VizScene {
            label: rec.label.clone(),
            camera,
            width: w as u32,
            height: h as u32,
            points,
            colors,
            stride,
            mesh,
            diameter,
            instances,
            error: rec.error.clone(),
        })
    }

    /// Centre of the model's bounding box under instance `k`'s pose; without instances, the
    /// optical axis at the cloud's median depth.
    pub fn focus(&self, k: usize) -> Vec3 {
        if let Some(inst) = self.instances.get(k) {
            let (lo, hi) = self.mesh.bounds();
            return inst.pose.apply_f32(&((lo + hi) * 0.5));
        }
        if self.points.is_empty() {
            return Vec3::new(0.0, 0.0, 1000.0);
        }
        let mut zs: Vec<f32> = self.points.iter().map(|p| p.z).collect();
        let mid = zs.len() / 2;
        let z = *zs.select_nth_unstable_by(mid, f32::total_cmp).1;
        Vec3::new(0.0, 0.0, z)
    }

    /// The view of `kind` for a picture of `width`×`height`, centred on instance `k`.
    pub fn view(&self, kind: ViewKind, k: usize, width: u32, height: u32) -> View {
        let (sx, sy) = (width as f32 / self.width as f32, height as f32 / self.height as f32);
        let c = &self.camera;
        // Pixel edges scale, not centres: centre u maps to (u + 0.5)·s − 0.5.
        let (fx, fy) = (c.fx as f32 * sx, c.fy as f32 * sy);
        let (cx, cy) = ((c.cx as f32 + 0.5) * sx - 0.5, (c.cy as f32 + 0.5) * sy - 0.5);
        let up = Vec3::new(0.0, -1.0, 0.0);
        let target = self.focus(k);
        let eye = match kind {
            ViewKind::Camera => Vec3::zeros(),
            ViewKind::Orbit => {
                let back = -target.try_normalize(1e-6).unwrap_or(Vec3::new(0.0, 0.0, 1.0));
                let side = nalgebra::Rotation3::from_axis_angle(&nalgebra::Vector3::y_axis(), 45f32.to_radians()) * back;
                let axis = nalgebra::Unit::new_normalize(side.cross(&up));
                let dir = nalgebra::Rotation3::from_axis_angle(&axis, 30f32.to_radians()) * side;
                target + dir.normalize() * 2.5 * self.diameter
            }
        };
        let target = if kind == ViewKind::Camera { Vec3::new(0.0, 0.0, 1.0) } else { target };
        // Clip planes bracket everything drawn, with margin; near stays well clear of zero.
        let far_pt = self.points.iter().map(|p| (p - eye).norm()).fold(0.0f32, f32::max);
        let far_model = (self.focus(0) - eye).norm() + self.diameter;
        let far = far_pt.max(far_model).max(10.0) * 1.5;
        let near = (far / 5000.0).max(1.0);
        View { eye, target, up, fx, fy, cx, cy, width, height, near, far }
    }
}

impl View {
    /// Pixel (column, row) of a scene point, as the renderer places it; None behind the eye.
    pub fn project(&self, p: &Vec3) -> Option<[f32; 2]> {
        let fwd = (self.target - self.eye).normalize();
        let right = fwd.cross(&self.up).normalize();
        let down = fwd.cross(&right);
        let d = p - self.eye;
        let z = d.dot(&fwd);
        (z > 0.0).then(|| [self.fx * d.dot(&right) / z + self.cx, self.fy * d.dot(&down) / z + self.cy])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scene() -> VizScene {
        let mesh = Mesh {
            vertices: vec![Vec3::new(-10.0, -10.0, -10.0), Vec3::new(10.0, 10.0, 10.0), Vec3::new(10.0, -10.0, 0.0)],
            faces: vec![[0, 1, 2]],
            ..Default::default()
        };
        let pose = Pose::new(nalgebra::Matrix3::identity(), nalgebra::Vector3::new(50.0, -20.0, 500.0));
        VizScene {
            label: "t".into(),
            camera: Camera::new(500.0, 500.0, 319.5, 239.5, 1.0).unwrap(),
            width: 640,
            height: 480,
            points: vec![Vec3::new(0.0, 0.0, 800.0)],
            colors: vec![[1, 2, 3]],
            stride: 1,
            diameter: mesh.diameter(),
            mesh,
            instances: vec![Instance { pose, score: 0.9, color: score_color(0.9) }],
            error: None,
        }
    }

    #[test]
    fn camera_view_projects_like_the_camera() {
        let s = scene();
        let p = Vec3::new(50.0, -20.0, 500.0);
        let expect = s.camera.project([50.0, -20.0, 500.0]);
        let v = s.view(ViewKind::Camera, 0, 640, 480);
        let got = v.project(&p).unwrap();
        assert!((got[0] as f64 - expect[0]).abs() < 1e-3 && (got[1] as f64 - expect[1]).abs() < 1e-3, "{got:?} vs {expect:?}");
        // Half size: the same place, scaled.
        let half = s.view(ViewKind::Camera, 0, 320, 240).project(&p).unwrap();
        assert!(((half[0] + 0.5) * 2.0 - (got[0] + 0.5)).abs() < 1e-3);
        assert!(v.near > 0.0 && v.far > 800.0);
    }

    #[test]
    fn orbit_view_looks_at_the_object_from_above_and_aside() {
        let s = scene();
        let v = s.view(ViewKind::Orbit, 0, 640, 480);
        let c = s.focus(0);
        let [u, w] = v.project(&c).unwrap();
        assert!((u - v.cx).abs() < 1e-2 && (w - v.cy).abs() < 1e-2, "the target is centred");
        assert!(((v.eye - c).norm() - 2.5 * s.diameter).abs() < 1e-2);
        assert!(v.eye.y < c.y, "above (y is down)");
        assert!((v.eye.x - c.x).abs() > 0.3 * s.diameter, "to the side");
    }

    #[test]
    fn scores_go_from_red_to_green() {
        assert_eq!(score_color(0.0), [1.0, 0.0, 0.0]);
        assert_eq!(score_color(0.5), [1.0, 1.0, 0.0]);
        assert_eq!(score_color(1.0), [0.0, 1.0, 0.0]);
        assert_eq!(score_color(7.0), [0.0, 1.0, 0.0]);
        assert_eq!(score_color(f64::NAN), [0.6, 0.6, 0.6]);
    }
}
