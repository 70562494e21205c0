//! One synthetic table-top RGB-D frame with ground truth, from a seed.
//!
//! World frame: z up, table top at z = 0. A Kinect-like camera looks down at the table from
//! 600–1100 mm at 30–70° elevation. Target instances, distractors (primitive shapes of similar
//! size) and occluders (tall boxes and bottles standing between a target and the camera) rest
//! on the table: each mesh is rotated (upright or on one of its sides, sometimes tilted, random
//! yaw) and lowered until its lowest point touches the table; footprints do not overlap.
//! Visible fractions come from instance-id renders with and without the other objects, and
//! placements that would leave a target less than `min_visible` visible are redrawn.
use super::noise::{self, DepthNoise, NORMAL_JUMP};
use super::rng::Rng;
use crate::geometry::shapes;
use crate::geometry::{Mesh, Pose, Vec3};
use crate::io::{Camera, DepthMm};
use crate::render::raster::{render_depth, render_multi};
use crate::pipeline::geometric::color::ColorModel;
use image::RgbImage;
use nalgebra::{Matrix3, Rotation3, Vector2, Vector3};
use std::f64::consts::{FRAC_PI_2, PI, TAU};
use std::sync::Arc;

/// The LM / LM-O Kinect intrinsics (640 × 480).
pub const KINECT: Camera = Camera { fx: 572.4114, fy: 573.57043, cx: 325.2611, cy: 242.04899, depth_scale: 1.0 };

#[derive(Clone, Debug)]
pub struct NamedMesh {
    pub name: String,
    pub mesh: Arc<Mesh>,
}

impl NamedMesh {
    pub fn new(name: &str, mesh: Mesh) -> NamedMesh {
        NamedMesh { name: name.to_string(), mesh: Arc::new(mesh) }
    }
}

#[derive(Clone, Debug)]
pub struct SceneTarget {
    pub object: NamedMesh,
    /// How many copies of this object to place (1 or 2 in the benchmark).
    pub instances: usize,
}

#[derive(Clone, Debug)]
pub struct SceneSpec {
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    pub camera: Camera,
    pub targets: Vec<SceneTarget>,
    /// Number of primitive shapes placed besides the targets.
    pub distractors: usize,
    /// Probability that a target instance gets an occluder standing in front of it.
    pub occlusion: f32,
    /// No target ends up less visible than this (placements are redrawn otherwise).
    pub min_visible: f32,
    pub noise: DepthNoise,
}

impl SceneSpec {
    /// Kinect camera at 640 × 480, 3 distractors, half the targets occluded, Kinect noise.
    pub fn new(seed: u64, targets: Vec<SceneTarget>) -> SceneSpec {
        SceneSpec {
            seed,
            width: 640,
            height: 480,
            camera: KINECT,
            targets,
            distractors: 3,
            occlusion: 0.5,
            min_visible: 0.4,
            noise: DepthNoise::kinect(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct GtInstance {
    pub object: String,
    /// Model → camera, mm.
    pub pose: Pose,
    /// Visible pixels / pixels the instance would cover alone (noise-free).
    pub visible_fraction: f32,
}

#[derive(Clone, Debug)]
pub struct SyntheticFrame {
    /// Corrupted depth, mm (0 = missing), registered with `rgb` up to `noise.shift_px`.
    pub depth: DepthMm,
    pub rgb: RgbImage,
    pub camera: Camera,
    pub gt: Vec<GtInstance>,
    /// Per pixel: index into `gt` of the visible target instance (noise-free), else −1.
    pub gt_mask: Vec<i32>,
    /// Noise-free depth, mm (0 = nothing).
    pub clean_depth: Vec<f32>,
    /// World (z up, table top at z = 0) → camera.
    pub world_to_camera: Pose,
}

impl SyntheticFrame {
    /// The names of the target objects present, sorted, each once: one pipeline call each.
    pub fn target_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.gt.iter().map(|g| g.object.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    /// Index into the ground truth.
    Target(usize),
    Distractor,
    Occluder,
    /// Table top and floor: never occlude anything, rendered last.
    Support,
}

struct Placed {
    mesh: Arc<Mesh>,
    /// Model → world.
    world: Pose,
    role: Role,
    colour: [u8; 3],
    /// Per-vertex colours of the object, when its model has them (else the flat `colour`).
    surface: Option<Arc<ColorModel>>,
    /// Footprint on the table: centre and radius (mm).
    centre: Vector2<f64>,
    radius: f64,
}

/// A mesh rotated into a resting orientation, with what placement needs to know about it.
struct Resting {
    rot: Matrix3<f64>,
    /// Bounds of the rotated vertices.
    lo: Vector3<f64>,
    hi: Vector3<f64>,
    /// Footprint radius about the centre of the rotated xy bounds.
    radius: f64,
}

impl Resting {
    fn new(mesh: &Mesh, rot: Matrix3<f64>) -> Resting {
        let pts: Vec<Vector3<f64>> = mesh.vertices.iter().map(|v| rot * v.cast::<f64>()).collect();
        let mut lo = Vector3::repeat(f64::INFINITY);
        let mut hi = Vector3::repeat(f64::NEG_INFINITY);
        for p in &pts {
            lo = lo.inf(p);
            hi = hi.sup(p);
        }
        let c = Vector2::new(lo.x + hi.x, lo.y + hi.y) * 0.5;
        let radius = pts.iter().map(|p| (Vector2::new(p.x, p.y) - c).norm()).fold(0.0, f64::max);
        Resting { rot, lo, hi, radius }
    }

    /// The model → world pose that puts the footprint centre at `at` on the table.
    fn pose_at(&self, at: Vector2<f64>) -> Pose {
        let c = Vector2::new(self.lo.x + self.hi.x, self.lo.y + self.hi.y) * 0.5;
        Pose::new(self.rot, Vector3::new(at.x - c.x, at.y - c.y, -self.lo.z))
    }

    fn height(&self) -> f64 {
        self.hi.z - self.lo.z
    }
}

/// Scene under construction: placed objects plus the z-composite of the non-support ones
/// (to judge what a new object would hide before accepting it).
struct Builder<'a> {
    spec: &'a SceneSpec,
    world_to_camera: Pose,
    camera_centre: Vector3<f64>,
    look: Vector3<f64>,
    items: Vec<Placed>,
    depth: Vec<f32>,
    ids: Vec<i32>,
    /// Per target, in ground-truth order: (object name, pixels it covers alone).
    targets: Vec<(String, usize)>,
}

impl Builder<'_> {
    fn render_alone(&self, mesh: &Mesh, world: &Pose) -> Vec<f32> {
        let pose = self.world_to_camera.compose(world);
        render_depth(mesh, &self.spec.camera, &pose, self.spec.width, self.spec.height)
    }

    /// Visible fraction of every target (and of the candidate itself when `new_target`) if
    /// an object with depth `cand` were added.
    fn fractions_with(&self, cand: &[f32], new_target: bool) -> Vec<f32> {
        let n = self.targets.len();
        let mut visible = vec![0usize; n + 1];
        for (i, (&c, &d)) in cand.iter().zip(&self.depth).enumerate() {
            if covers(c, d) {
                if new_target {
                    visible[n] += 1;
                }
            } else if let Some(t) = self.target_at(i) {
                visible[t] += 1;
            }
        }
        let mut out: Vec<f32> = (0..n).map(|t| visible[t] as f32 / self.targets[t].1.max(1) as f32).collect();
        if new_target {
            let alone = cand.iter().filter(|&&z| z > 0.0).count();
            out.push(visible[n] as f32 / alone.max(1) as f32);
        }
        out
    }

    fn target_at(&self, pixel: usize) -> Option<usize> {
        let id = self.ids[pixel];
        match id {
            -1 => None,
            _ => match self.items[id as usize].role {
                Role::Target(t) => Some(t),
                _ => None,
            },
        }
    }

    fn commit(&mut self, item: Placed, cand: &[f32]) {
        let id = self.items.len() as i32;
        for ((&c, d), ids) in cand.iter().zip(self.depth.iter_mut()).zip(self.ids.iter_mut()) {
            if covers(c, *d) {
                *d = c;
                *ids = id;
            }
        }
        self.items.push(item);
    }

    fn overlaps(&self, centre: Vector2<f64>, radius: f64, gap: f64) -> bool {
        self.items
            .iter()
            .filter(|p| p.role != Role::Support)
            .any(|p| (p.centre - centre).norm() < p.radius + radius + gap)
    }

    /// Whether the world-space box [lo, hi] projects inside the image with `margin` px.
    fn box_in_image(&self, lo: Vector3<f64>, hi: Vector3<f64>, margin: f64) -> bool {
        let cam = &self.spec.camera;
        (0..8).all(|k| {
            let p = Vector3::new(
                if k & 1 == 0 { lo.x } else { hi.x },
                if k & 2 == 0 { lo.y } else { hi.y },
                if k & 4 == 0 { lo.z } else { hi.z },
            );
            let q = self.world_to_camera.apply(&p);
            if q.z <= 1.0 {
                return false;
            }
            let uv = cam.project([q.x, q.y, q.z]);
            uv[0] >= margin && uv[1] >= margin && uv[0] <= self.spec.width as f64 - 1.0 - margin && uv[1] <= self.spec.height as f64 - 1.0 - margin
        })
    }

    /// Tries random spots near the look-at point; the object must fit in the image, not touch
    /// other footprints, and keep every target at least `min_visible` visible.
    /// `target` names the object when the new item is a target instance.
    fn place_on_table(&mut self, rng: &mut Rng, mesh: &Arc<Mesh>, target: Option<&str>, colour: [u8; 3], surface: Option<&Arc<ColorModel>>, attempts: usize) -> bool {
        let rest = Resting::new(mesh, resting_rotation(rng));
        let new_target = target.is_some();
        for attempt in 0..attempts {
            // Widen the search as attempts fail.
            let reach = 120.0 + 200.0 * (attempt as f64 / attempts as f64);
            let (a, r) = (rng.range(0.0, TAU), reach * rng.f64().sqrt());
            let at = Vector2::new(self.look.x + r * a.cos(), self.look.y + r * a.sin());
            if self.overlaps(at, rest.radius, 8.0) {
                continue;
            }
            let world = rest.pose_at(at);
            let (lo, hi) = (
                Vector3::new(at.x - rest.radius, at.y - rest.radius, 0.0),
                Vector3::new(at.x + rest.radius, at.y + rest.radius, rest.height()),
            );
            if new_target && !self.box_in_image(lo, hi, 4.0) {
                continue;
            }
            let cand = self.render_alone(mesh, &world);
            if cand.iter().all(|&z| z == 0.0) {
                continue;
            }
            if self.fractions_with(&cand, new_target).iter().any(|&f| f < self.spec.min_visible) {
                continue;
            }
            let role = match target {
                Some(name) => {
                    let alone = cand.iter().filter(|&&z| z > 0.0).count();
                    self.targets.push((name.to_string(), alone));
                    Role::Target(self.targets.len() - 1)
                }
                None => Role::Distractor,
            };
            self.commit(Placed { mesh: mesh.clone(), world, role, colour, surface: surface.cloned(), centre: at, radius: rest.radius }, &cand);
            return true;
        }
        false
    }

    /// A tall box or bottle standing between target `t` and the camera, sized to hide part of
    /// it. Keeps the candidate that hides most while leaving ≥ `min_visible` of every target.
    fn add_occluder(&mut self, rng: &mut Rng, t: usize) {
        let Some(target) = self.items.iter().find(|p| p.role == Role::Target(t)) else { return };
        let (q, r_t) = (target.centre, target.radius);
        let h_t = {
            let pts = target.mesh.vertices.iter().map(|v| target.world.apply(&v.cast::<f64>()).z);
            pts.fold(0.0, f64::max)
        };
        let to_cam = Vector2::new(self.camera_centre.x - q.x, self.camera_centre.y - q.y);
        let ground_dist = to_cam.norm().max(1.0);
        let dir = to_cam / ground_dist;
        let side = Vector2::new(-dir.y, dir.x);
        let mut best: Option<(f32, Placed, Vec<f32>)> = None;
        for _ in 0..24 {
            let r_o = rng.range(20.0, 50.0);
            let s = r_t + r_o + rng.range(5.0, 50.0);
            let at = q + dir * s + side * (rng.range(-0.8, 0.8) * r_t);
            if self.overlaps(at, r_o, 5.0) {
                continue;
            }
            // Height at which the ray from a target point at height f·h_t passes over `at`.
            let f = rng.range(0.3, 1.1);
            let z_p = f * h_t;
            let h = (z_p + s * (self.camera_centre.z - z_p) / ground_dist).clamp(40.0, 400.0);
            let mesh = if rng.chance(0.5) {
                shapes::cuboid((r_o * 1.6) as f32, (r_o * rng.range(0.8, 1.4)) as f32, h as f32)
            } else {
                shapes::cylinder(r_o as f32, h as f32, 32)
            };
            let rest = Resting::new(&mesh, yaw(rng.range(0.0, TAU)));
            let world = rest.pose_at(at);
            let mesh = Arc::new(mesh);
            let cand = self.render_alone(&mesh, &world);
            let fr = self.fractions_with(&cand, false);
            if fr.iter().any(|&v| v < self.spec.min_visible) || fr[t] >= 0.98 {
                continue;
            }
            if best.as_ref().is_none_or(|(b, _, _)| fr[t] < *b) {
                let item = Placed { mesh, world, role: Role::Occluder, colour: random_colour(rng), surface: None, centre: at, radius: rest.radius };
                best = Some((fr[t], item, cand));
            }
            // Good enough: a clearly occluded target; stop early (keeps occlusion varied).
            if best.as_ref().is_some_and(|(b, _, _)| *b < 0.85 && rng.chance(0.5)) {
                break;
            }
        }
        if let Some((_, item, cand)) = best {
            self.commit(item, &cand);
        }
    }
}

/// Whether a new surface at depth `c` wins over the composite's `d` (0 = empty for both);
/// ties go to what was drawn first, as in `render_multi`.
fn covers(c: f32, d: f32) -> bool {
    c > 0.0 && (d == 0.0 || c < d)
}

fn yaw(a: f64) -> Matrix3<f64> {
    *Rotation3::from_axis_angle(&Vector3::z_axis(), a).matrix()
}

/// Upright (half the time) or on one of its other five sides, sometimes tilted up to 20°,
/// random yaw.
fn resting_rotation(rng: &mut Rng) -> Matrix3<f64> {
    let sides = [
        Rotation3::identity(),
        Rotation3::from_axis_angle(&Vector3::x_axis(), PI),
        Rotation3::from_axis_angle(&Vector3::x_axis(), FRAC_PI_2),
        Rotation3::from_axis_angle(&Vector3::x_axis(), -FRAC_PI_2),
        Rotation3::from_axis_angle(&Vector3::y_axis(), FRAC_PI_2),
        Rotation3::from_axis_angle(&Vector3::y_axis(), -FRAC_PI_2),
    ];
    let base = if rng.chance(0.5) { sides[0] } else { sides[rng.below(6)] };
    let tilt = if rng.chance(0.3) {
        let a = rng.range(0.0, TAU);
        let axis = nalgebra::Unit::new_normalize(Vector3::new(a.cos(), a.sin(), 0.0));
        Rotation3::from_axis_angle(&axis, rng.range(0.05, 0.35))
    } else {
        Rotation3::identity()
    };
    yaw(rng.range(0.0, TAU)) * tilt.matrix() * base.matrix()
}

/// A random primitive of roughly target size (50–150 mm).
fn random_distractor(rng: &mut Rng) -> Mesh {
    let mut s = || rng.range(40.0, 140.0) as f32;
    let (a, b, c) = (s(), s(), s());
    match rng.below(5) {
        0 => shapes::cuboid(a, b, c),
        1 => shapes::cylinder(0.25 * a + 15.0, b, 32),
        2 => shapes::cone(0.3 * a + 15.0, b, 32),
        3 => shapes::icosphere(0.25 * a + 20.0, 2),
        _ => shapes::torus(0.3 * a + 20.0, 0.08 * b + 6.0, 32, 12),
    }
}

fn random_colour(rng: &mut Rng) -> [u8; 3] {
    // Saturated-ish colours: one channel high, one low, one anywhere.
    let mut c = [rng.range(20.0, 90.0) as u8, rng.range(150.0, 240.0) as u8, rng.range(20.0, 240.0) as u8];
    let k = rng.below(3);
    c.rotate_left(k);
    c
}

/// The mesh's mean vertex colour when it has colours, else a colour from its name.
fn object_colour(m: &NamedMesh) -> [u8; 3] {
    if let Some(cols) = m.mesh.colors.as_ref().filter(|c| !c.is_empty()) {
        let mut sum = [0u64; 3];
        for c in cols {
            for k in 0..3 {
                sum[k] += c[k] as u64;
            }
        }
        return sum.map(|s| (s / cols.len() as u64) as u8);
    }
    let h = m.name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    random_colour(&mut Rng::new(h))
}

/// Camera looking at a point near the table centre from 600–1100 mm, 30–70° elevation,
/// any azimuth, a few degrees of roll. Returns (world → camera, camera centre, look-at point).
fn sample_camera(rng: &mut Rng) -> (Pose, Vector3<f64>, Vector3<f64>) {
    let dist = rng.range(600.0, 1100.0);
    let el = rng.range(30.0f64, 70.0).to_radians();
    let az = rng.range(0.0, TAU);
    let look = Vector3::new(rng.range(-50.0, 50.0), rng.range(-50.0, 50.0), rng.range(20.0, 50.0));
    let centre = look + dist * Vector3::new(el.cos() * az.cos(), el.cos() * az.sin(), el.sin());
    let forward = (look - centre).normalize();
    let right = forward.cross(&Vector3::z()).normalize();
    let down = forward.cross(&right);
    let r = Matrix3::from_rows(&[right.transpose(), down.transpose(), forward.transpose()]);
    let roll = Rotation3::from_axis_angle(&Vector3::z_axis(), rng.range(-0.08, 0.08));
    let r = roll.matrix() * r;
    (Pose::new(r, -(r * centre)), centre, Vector3::new(look.x, look.y, 0.0))
}

pub fn generate(spec: &SceneSpec) -> SyntheticFrame {
    let mut rng = Rng::new(spec.seed);
    let (w, h) = (spec.width, spec.height);
    let (world_to_camera, camera_centre, look) = sample_camera(&mut rng);
    let mut b = Builder {
        spec,
        world_to_camera,
        camera_centre,
        look,
        items: Vec::new(),
        depth: vec![0.0; w * h],
        ids: vec![-1; w * h],
        targets: Vec::new(),
    };

    // Table top under the objects and a floor 74 cm below it, composited first so that the
    // builder's instance map is exactly the final render's.
    let table_centre = Vector3::new(look.x + rng.range(-150.0, 150.0), look.y + rng.range(-150.0, 150.0), 0.0);
    let supports = [
        (shapes::table(1400.0), table_centre, [176u8, 132, 92]),
        (shapes::table(12000.0), Vector3::new(0.0, 0.0, -740.0), [120, 120, 125]),
    ];
    for (mesh, t, colour) in supports {
        let (mesh, world) = (Arc::new(mesh), Pose::new(Matrix3::identity(), t));
        let depth = b.render_alone(&mesh, &world);
        b.commit(Placed { mesh, world, role: Role::Support, colour, surface: None, centre: Vector2::zeros(), radius: 0.0 }, &depth);
    }
    // Targets next, so that they get the best spots.
    for t in &spec.targets {
        let colour = object_colour(&t.object);
        let surface = ColorModel::new(&t.object.mesh, t.object.mesh.diameter()).map(Arc::new);
        for _ in 0..t.instances {
            b.place_on_table(&mut rng, &t.object.mesh, Some(&t.object.name), colour, surface.as_ref(), 300);
        }
    }
    for _ in 0..spec.distractors {
        let mesh = Arc::new(random_distractor(&mut rng));
        let colour = random_colour(&mut rng);
        b.place_on_table(&mut rng, &mesh, None, colour, None, 60);
    }
    for t in 0..b.targets.len() {
        if rng.chance(spec.occlusion as f64) {
            b.add_occluder(&mut rng, t);
        }
    }

    // Final noise-free render of everything.
    let posed: Vec<(&Mesh, Pose)> = b.items.iter().map(|p| (p.mesh.as_ref(), world_to_camera.compose(&p.world))).collect();
    let (clean, ids) = render_multi(&posed, &spec.camera, w, h);
    let gt_mask: Vec<i32> = ids
        .iter()
        .map(|&id| match id {
            -1 => -1,
            _ => match b.items[id as usize].role {
                Role::Target(t) => t as i32,
                _ => -1,
            },
        })
        .collect();
    debug_assert_eq!(ids, b.ids, "the builder's composite is the final render");
    // Targets were pushed in ground-truth order.
    let gt: Vec<GtInstance> = b
        .items
        .iter()
        .filter_map(|p| match p.role {
            Role::Target(t) => {
                let (name, alone) = &b.targets[t];
                let visible = gt_mask.iter().filter(|&&m| m == t as i32).count();
                let visible_fraction = visible as f32 / (*alone).max(1) as f32;
                Some(GtInstance { object: name.clone(), pose: world_to_camera.compose(&p.world), visible_fraction })
            }
            _ => None,
        })
        .collect();

    let rgb = shade(&b.items, &clean, &ids, &spec.camera, &world_to_camera, w, h, &mut rng);
    let mm = noise::corrupt(&clean, w, h, &spec.camera, &spec.noise, &mut rng);
    SyntheticFrame {
        depth: DepthMm { width: w, height: h, mm },
        rgb,
        camera: spec.camera,
        gt,
        gt_mask,
        clean_depth: clean,
        world_to_camera,
    }
}

/// Each object's colours lit from the camera (Lambert on depth-derived normals): its model's
/// vertex colours where it has them, else one flat colour; a wood-grain table, a tiled floor,
/// and a little sensor noise.
#[allow(clippy::too_many_arguments)]
fn shade(items: &[Placed], depth: &[f32], ids: &[i32], cam: &Camera, world_to_camera: &Pose, w: usize, h: usize, rng: &mut Rng) -> RgbImage {
    let camera_to_world = world_to_camera.inverse();
    // Camera → model, for objects painted per vertex.
    let to_model: Vec<Pose> = items.iter().map(|p| world_to_camera.compose(&p.world).inverse()).collect();
    let mut img = RgbImage::new(w as u32, h as u32);
    for v in 0..h {
        for u in 0..w {
            let i = v * w + u;
            let mut c = [38.0f64, 40.0, 46.0];
            if ids[i] >= 0 {
                let item = &items[ids[i] as usize];
                let p = cam.unproject(u as f64, v as f64, depth[i] as f64);
                let painted = item.surface.as_ref().and_then(|s| {
                    let m = to_model[ids[i] as usize].apply(&Vector3::new(p[0], p[1], p[2]));
                    s.color_at(&m.cast::<f32>())
                });
                let base = painted.unwrap_or(item.colour).map(|x| x as f64);
                let lambert = noise::normal_at(depth, w, h, cam, u, v, NORMAL_JUMP)
                    .map(|n| {
                        let len = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
                        (-(n[0] * p[0] + n[1] * p[1] + n[2] * p[2]) / len).abs()
                    })
                    .unwrap_or(0.7);
                let texture = if item.role == Role::Support {
                    let q = camera_to_world.apply(&Vector3::new(p[0], p[1], p[2]));
                    if q.z > -1.0 {
                        0.85 + 0.15 * (q.x / 6.0 + 2.5 * (q.y / 60.0).sin()).sin()
                    } else if ((q.x / 400.0).floor() + (q.y / 400.0).floor()) as i64 % 2 == 0 {
                        1.0
                    } else {
                        0.8
                    }
                } else {
                    1.0
                };
                let k = (0.3 + 0.7 * lambert) * texture;
                c = base.map(|x| x * k);
            }
            let px = c.map(|x| (x + 2.0 * rng.normal()).round().clamp(0.0, 255.0) as u8);
            img.put_pixel(u as u32, v as u32, image::Rgb(px));
        }
    }
    img
}

/// Pixel coordinates of every vertex of a posed mesh (tests and debugging).
pub fn project_vertices(mesh: &Mesh, pose: &Pose, cam: &Camera) -> Vec<[f64; 2]> {
    mesh.vertices
        .iter()
        .map(|v: &Vec3| {
            let p = pose.apply(&v.cast::<f64>());
            cam.project([p.x, p.y, p.z])
        })
        .collect()
}

#[cfg(test)]
mod tests;
