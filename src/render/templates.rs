//! SAM-6D's 42 level-0 object templates, rendered with our own rasteriser instead of Blender.
//!
//! The ISM compares segment proposals with these views through DINOv2, and PEM matches points
//! against their model coordinates, so the set-up follows SAM-6D's render script
//! (`Render/render_custom_templates.py`, reference notes §3): the same 42 viewpoints in the
//! same order, the object at 4r mm from the camera (r: the normalisation radius below),
//! 512×512 images with BlenderProc's default intrinsics, a binary mask and float16 model
//! coordinates in mm of the unscaled model. Geometry (mask, xyz) is reproduced exactly up to
//! rasterisation; the colour is an approximation: SAM-6D path-traces with Blender Cycles (point
//! light, grey world, Principled BSDF, colour management), which we do not reproduce — we shade
//! vertex colours with one Lambertian point light in the same place plus a small ambient term.
use crate::geometry::{Mesh, Pose, Vec3};
use crate::io::Camera;
use anyhow::Context;
use image::{Luma, Rgb, RgbImage};
use nalgebra::{Matrix3, Vector3};
use rayon::prelude::*;
use std::io::Write;
use std::path::Path;

/// Number of level-0 views.
pub const VIEWS: usize = 42;
/// Template width = height, pixels.
pub const SIZE: usize = 512;
/// BlenderProc's default field of view (a 50 mm lens on a 36 mm sensor), radians.
pub const FOV_RAD: f64 = 0.691111;
/// The point light sits at this multiple of the camera position (object at the origin).
pub const LIGHT_SCALE: f64 = 2.5;
/// Surface samples behind the normalisation radius, as SAM-6D's `get_norm_info`.
pub const NORM_SAMPLES: usize = 1024;
/// Seed of those samples. SAM-6D samples with unseeded trimesh, so its radius (and with it the
/// camera distance) changes by a fraction of a percent from run to run; ours is repeatable.
pub const NORM_SEED: u64 = 0x5A6D_7E3D;
/// Ambient light, as a fraction of full irradiance: stands in for BlenderProc's default world
/// (a uniform 0.05 grey) lighting the object from every side.
const AMBIENT: f64 = 0.05;
/// Albedo of a mesh without vertex colours: Blender's default base colour (0.8, linear).
const DEFAULT_ALBEDO: f64 = 0.8;

/// Camera centres of the 42 level-0 views in the object frame, mm, in SAM-6D's order: the
/// translations of `ISM/utils/poses/predefined_poses/cam_poses_level0.npy` (copied from
/// `shared/reference/template-poses-level0.json`, `cam_position_mm`). The vertices of a
/// once-subdivided icosahedron ordered by elevation, ties in the order Blender produced them:
/// the order cannot be re-derived, hence the table.
const CAM_POSITIONS_MM: [[f64; 3]; VIEWS] = [
    [0.0, 0.0, -1000.0],
    [-162.45555877685547, -499.99526143074036, -850.6544232368469],
    [-162.45555877685547, 499.99526143074036, -850.6544232368469],
    [425.32268166542053, 309.01139974594116, -850.6541848182678],
    [425.32268166542053, -309.01139974594116, -850.6541848182678],
    [-525.729775428772, 0.0, -850.6516814231873],
    [262.86882162094116, 809.0116381645203, -525.7376432418823],
    [262.86882162094116, -809.0116381645203, -525.7376432418823],
    [-688.1893873214722, -499.99693036079407, -525.7362127304077],
    [-688.1893873214722, 499.99693036079407, -525.7362127304077],
    [850.6478667259216, 0.0, -525.7359147071838],
    [-276.388019323349, -850.6492376327515, -447.2198486328125],
    [-276.388019323349, 850.6492376327515, -447.2198486328125],
    [723.6073017120361, 525.7253050804138, -447.21952080726624],
    [723.6073017120361, -525.7253050804138, -447.21952080726624],
    [-894.4262266159058, 0.0, -447.21561670303345],
    [-587.7856016159058, -809.0167045593262, 0.0],
    [-951.0578513145447, -309.01262164115906, 0.0],
    [-951.0578513145447, 309.01262164115906, 0.0],
    [-587.7856016159058, 809.0167045593262, 0.0],
    [0.0, 999.9999403953552, 0.0],
    [587.7856016159058, 809.0167045593262, 0.0],
    [951.0578513145447, 309.01262164115906, 0.0],
    [951.0578513145447, -309.01262164115906, 0.0],
    [587.7856016159058, -809.0167045593262, 0.0],
    [0.0, -999.9999403953552, 0.0],
    [894.4262266159058, 0.0, 447.21561670303345],
    [-723.6073017120361, -525.7253050804138, 447.21952080726624],
    [-723.6073017120361, 525.7253050804138, 447.21952080726624],
    [276.388019323349, 850.6492376327515, 447.2198486328125],
    [276.388019323349, -850.6492376327515, 447.2198486328125],
    [-850.6478667259216, 0.0, 525.7359147071838],
    [688.1893873214722, 499.99693036079407, 525.7362127304077],
    [688.1893873214722, -499.99693036079407, 525.7362127304077],
    [-262.86882162094116, -809.0116381645203, 525.7376432418823],
    [-262.86882162094116, 809.0116381645203, 525.7376432418823],
    [525.729775428772, 0.0, 850.6516814231873],
    [-425.32268166542053, -309.01139974594116, 850.6541848182678],
    [-425.32268166542053, 309.01139974594116, 850.6541848182678],
    [162.45555877685547, 499.99526143074036, 850.6543636322021],
    [162.45555877685547, -499.99526143074036, 850.6543636322021],
    [0.0, 0.0, 1000.0],
];

/// One rendered template view, as SAM-6D's render script writes it.
#[derive(Clone, Debug)]
pub struct TemplateView {
    /// 512×512, the mesh's vertex colours (grey without them) under the template light; black
    /// background (the ISM multiplies by the mask anyway).
    pub rgb: RgbImage,
    /// Row-major 512×512, true on the object.
    pub mask: Vec<bool>,
    /// Model-frame coordinates in mm (unscaled model) of the visible surface; [0, 0, 0] where
    /// the mask is false (SAM-6D's files hold −1 there; nothing reads it).
    pub xyz: Vec<[f32; 3]>,
    /// `obj_R`: model → template camera rotation (OpenCV axes).
    pub rotation: Matrix3<f64>,
    /// Full model → camera pose used to render: `rotation`, t = (0, 0, 4r) mm.
    pub pose: Pose,
}

/// Camera centre of view `i` in the object frame, mm (‖p‖ ≈ 1000). Panics if i ≥ [`VIEWS`].
pub fn cam_position_mm(i: usize) -> Vector3<f64> {
    let p = CAM_POSITIONS_MM[i];
    Vector3::new(p[0], p[1], p[2])
}

/// `cam_R` of a camera at `p` looking at the origin: columns = (right, down, forward) in
/// object axes. The helper "up" is −z, or −y when the camera sits on the z axis (where −z is
/// parallel to the viewing direction); this reproduces SAM-6D's stored matrices.
fn look_at(p: &Vector3<f64>) -> Matrix3<f64> {
    let forward = -p / p.norm();
    let helper = if p.x == 0.0 && p.y == 0.0 { Vector3::new(0.0, -1.0, 0.0) } else { Vector3::new(0.0, 0.0, -1.0) };
    let right = helper.cross(&forward).normalize();
    let down = forward.cross(&right);
    Matrix3::from_columns(&[right, down, forward])
}

/// `obj_R` of the 42 views in SAM-6D's order: the inverse (transpose) of each camera's `cam_R`.
pub fn level0_rotations() -> Vec<Matrix3<f64>> {
    (0..VIEWS).map(|i| look_at(&cam_position_mm(i)).transpose()).collect()
}

/// The template camera: 512×512, fx = fy from BlenderProc's default FOV, principal point at
/// (W − 1)/2 (BlenderProc's K convention, pixel centres at integer coordinates, as we render).
pub fn camera() -> Camera {
    let f = SIZE as f64 / 2.0 / (FOV_RAD / 2.0).tan();
    let c = (SIZE as f64 - 1.0) / 2.0;
    Camera { fx: f, fy: f, cx: c, cy: c, depth_scale: 1.0 }
}

/// SAM-6D's normalisation radius r (mm): max(‖max corner‖, ‖min corner‖) of the bounding box
/// of [`NORM_SAMPLES`] area-uniform surface samples. The object is scaled by 1/(2r) and seen
/// from 2 units away, i.e. the camera is 4r mm from the model origin. 0 for a mesh without area.
pub fn normalisation_radius(mesh: &Mesh) -> f64 {
    let (pts, _) = mesh.sample_surface(NORM_SAMPLES, NORM_SEED);
    if pts.is_empty() {
        return 0.0;
    }
    let (mut lo, mut hi) = (Vec3::repeat(f32::INFINITY), Vec3::repeat(f32::NEG_INFINITY));
    for p in &pts {
        lo = lo.inf(p);
        hi = hi.sup(p);
    }
    hi.cast::<f64>().norm().max(lo.cast::<f64>().norm())
}

/// Renders the 42 views (in parallel).
pub fn render_templates(mesh: &Mesh) -> Vec<TemplateView> {
    render_templates_with(mesh, &|_| {})
}

/// As [`render_templates`], calling `done(view_index)` as each view finishes (progress bars).
pub fn render_templates_with(mesh: &Mesh, done: &(dyn Fn(usize) + Sync)) -> Vec<TemplateView> {
    let r = normalisation_radius(mesh);
    let shading = Shading::new(mesh);
    let rotations = level0_rotations();
    rotations
        .par_iter()
        .enumerate()
        .map(|(i, rot)| {
            let view = render_view(mesh, &shading, *rot, r);
            done(i);
            view
        })
        .collect()
}

/// Per-vertex data for shading, prepared once for all views.
struct Shading {
    /// Linear-light albedo per vertex (sRGB bytes decoded), or None: [`DEFAULT_ALBEDO`] grey.
    albedo: Option<Vec<[f32; 3]>>,
    /// The file's vertex normals (smooth shading), else per-face normals (flat shading) — what
    /// Blender's PLY import does with and without normals.
    normals: Normals,
}

enum Normals {
    Vertex(Vec<Vec3>),
    Face(Vec<Vec3>),
}

impl Shading {
    fn new(mesh: &Mesh) -> Shading {
        let albedo = mesh.colors.as_ref().filter(|c| c.len() == mesh.vertices.len()).map(|c| {
            let lut: Vec<f32> = (0..256).map(|b| srgb_to_linear(b as f64 / 255.0) as f32).collect();
            c.iter().map(|rgb| rgb.map(|b| lut[b as usize])).collect()
        });
        let normals = match &mesh.normals {
            Some(n) if n.len() == mesh.vertices.len() => Normals::Vertex(n.clone()),
            _ => Normals::Face(mesh.face_normals()),
        };
        Shading { albedo, normals }
    }
}

/// One view: rasterise (depth + visible triangle), back-project to model coordinates, shade.
fn render_view(mesh: &Mesh, shading: &Shading, rotation: Matrix3<f64>, r: f64) -> TemplateView {
    let cam = camera();
    let distance = 4.0 * r;
    let pose = Pose::new(rotation, Vector3::new(0.0, 0.0, distance));
    let (depth, faces) = super::raster::render_depth_faces(mesh, &cam, &pose, SIZE, SIZE);
    let xyz = super::raster::model_points(&depth, &cam, &pose, SIZE);
    let mask: Vec<bool> = depth.iter().map(|&z| z > 0.0).collect();

    // The light: LIGHT_SCALE × the camera position, object at the origin. In the camera frame
    // it is on the optical axis behind the camera, at z = −(LIGHT_SCALE − 1)·4r; shading is
    // done in the model frame, where it is LIGHT_SCALE × the camera centre.
    let light = pose.inverse().apply(&Vector3::new(0.0, 0.0, -(LIGHT_SCALE - 1.0) * distance));
    // Inverse-square falloff, normalised to 1 at the model origin.
    let d0_sq = light.norm_squared();

    let mut rgb = RgbImage::new(SIZE as u32, SIZE as u32);
    for (i, (&f, m)) in faces.iter().zip(&xyz).enumerate() {
        if f == u32::MAX || !mask[i] {
            continue;
        }
        let face = mesh.faces[f as usize].map(|k| k as usize);
        let p = Vector3::new(m[0] as f64, m[1] as f64, m[2] as f64);
        let w = barycentric(&p, face.map(|k| mesh.vertices[k].cast::<f64>()));
        let albedo = match &shading.albedo {
            Some(a) => {
                let c = face.map(|k| a[k]);
                [0, 1, 2].map(|ch| w[0] * c[0][ch] as f64 + w[1] * c[1][ch] as f64 + w[2] * c[2][ch] as f64)
            }
            None => [DEFAULT_ALBEDO; 3],
        };
        let n = match &shading.normals {
            Normals::Vertex(vn) => {
                let [a, b, c] = face.map(|k| vn[k].cast::<f64>());
                a * w[0] + b * w[1] + c * w[2]
            }
            Normals::Face(fn_) => fn_[f as usize].cast::<f64>(),
        };
        let to_light = light - p;
        let dist_sq = to_light.norm_squared();
        // Two-sided, as the rasteriser draws both sides: |n·l|.
        let cos = match n.try_normalize(1e-12) {
            Some(n) => n.dot(&to_light).abs() / dist_sq.sqrt(),
            None => 1.0,
        };
        let irradiance = AMBIENT + cos * d0_sq / dist_sq;
        let px = albedo.map(|a| (linear_to_srgb(a * irradiance) * 255.0).round().clamp(0.0, 255.0) as u8);
        rgb.put_pixel((i % SIZE) as u32, (i / SIZE) as u32, Rgb(px));
    }
    TemplateView { rgb, mask, xyz, rotation, pose }
}

/// Barycentric weights of `p` (a point on the triangle's plane) in triangle (a, b, c), clamped
/// to the triangle (round-off at edges) and summing to 1.
fn barycentric(p: &Vector3<f64>, [a, b, c]: [Vector3<f64>; 3]) -> [f64; 3] {
    let (e0, e1, ep) = (b - a, c - a, p - a);
    let (d00, d01, d11) = (e0.dot(&e0), e0.dot(&e1), e1.dot(&e1));
    let (d20, d21) = (ep.dot(&e0), ep.dot(&e1));
    let den = d00 * d11 - d01 * d01;
    if den.abs() < 1e-18 || !den.is_finite() {
        return [1.0 / 3.0; 3];
    }
    let v = ((d11 * d20 - d01 * d21) / den).clamp(0.0, 1.0);
    let w = ((d00 * d21 - d01 * d20) / den).clamp(0.0, 1.0);
    let s = (1.0 - v - w).max(0.0) + v + w;
    [(1.0 - v - w).max(0.0) / s, v / s, w / s]
}

fn srgb_to_linear(c: f64) -> f64 {
    if c <= 0.04045 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
}

fn linear_to_srgb(c: f64) -> f64 {
    let c = c.clamp(0.0, 1.0);
    if c <= 0.0031308 { 12.92 * c } else { 1.055 * c.powf(1.0 / 2.4) - 0.055 }
}

/// Writes `rgb_{i}.png`, `mask_{i}.png` (0/255) and `xyz_{i}.npy` (512×512×3 float16, mm) for
/// each view into `dir` (created if missing) — SAM-6D's `templates/` layout, so its ISM and
/// PEM could read them.
pub fn write_templates(dir: &Path, views: &[TemplateView]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    views.par_iter().enumerate().try_for_each(|(i, v)| -> anyhow::Result<()> {
        let p = dir.join(format!("rgb_{i}.png"));
        v.rgb.save(&p).with_context(|| format!("writing {}", p.display()))?;
        let (w, h) = (v.rgb.width(), v.rgb.height());
        let mask = image::GrayImage::from_fn(w, h, |x, y| Luma([if v.mask[(y * w + x) as usize] { 255 } else { 0 }]));
        let p = dir.join(format!("mask_{i}.png"));
        mask.save(&p).with_context(|| format!("writing {}", p.display()))?;
        let p = dir.join(format!("xyz_{i}.npy"));
        let flat: Vec<f32> = v.xyz.iter().flatten().copied().collect();
        write_npy_f16(&p, &flat, &[h as usize, w as usize, 3]).with_context(|| format!("writing {}", p.display()))?;
        Ok(())
    })
}

/// A 7 × 6 grid of the views' colour images at a quarter size, each labelled with its index:
/// a contact sheet for looking at all templates at once.
pub fn contact_sheet(views: &[TemplateView]) -> RgbImage {
    const COLS: u32 = 7;
    const CELL: u32 = 128;
    const GAP: u32 = 2;
    let rows = (views.len() as u32).div_ceil(COLS).max(1);
    let mut sheet = RgbImage::from_pixel(COLS * (CELL + GAP) + GAP, rows * (CELL + GAP) + GAP, Rgb([40, 40, 40]));
    for (i, v) in views.iter().enumerate() {
        let small = image::imageops::resize(&v.rgb, CELL, CELL, image::imageops::FilterType::Triangle);
        let (x, y) = (GAP + (i as u32 % COLS) * (CELL + GAP), GAP + (i as u32 / COLS) * (CELL + GAP));
        image::imageops::replace(&mut sheet, &small, x as i64, y as i64);
        super::font::draw_text(&mut sheet, x as i64 + 3, y as i64 + 3, &i.to_string(), 1, Rgb([255, 255, 0]));
    }
    sheet
}

/// Writes a little-endian float16 `.npy` (format version 1.0) of the given C-order shape.
pub fn write_npy_f16(path: &Path, data: &[f32], shape: &[usize]) -> std::io::Result<()> {
    assert_eq!(data.len(), shape.iter().product::<usize>(), "npy data does not match its shape");
    let mut bytes = npy_header("<f2", shape);
    bytes.reserve(data.len() * 2);
    for &x in data {
        bytes.extend_from_slice(&f32_to_f16(x).to_le_bytes());
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(&bytes)?;
    f.flush()
}

/// Magic, version 1.0, header length, then the header dict padded with spaces and ended by a
/// newline so that the data starts at a multiple of 64 bytes (what numpy writes).
fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// IEEE 754 binary32 → binary16, round to nearest even (as numpy's `astype(np.float16)`),
/// overflow to infinity, subnormals kept.
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        // Infinity stays infinity; NaN stays a (quiet) NaN.
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // Subnormal half (or zero): value = m × 2^-24 with m = full significand >> (14 − e).
        if e < -10 {
            return sign;
        }
        let full = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let (m, rem, half) = (full >> shift, full & ((1 << shift) - 1), 1u32 << (shift - 1));
        let m = if rem > half || (rem == half && m & 1 == 1) { m + 1 } else { m };
        return sign | m as u16;
    }
    let (m, rem) = (man >> 13, man & 0x1fff);
    let h = ((e as u32) << 10) | m;
    // A carry out of the mantissa correctly bumps the exponent (up to infinity).
    let h = if rem > 0x1000 || (rem == 0x1000 && m & 1 == 1) { h + 1 } else { h };
    sign | h as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn box_mesh(lo: [f32; 3], hi: [f32; 3]) -> Mesh {
        let mut m = crate::geometry::shapes::cuboid(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]);
        let c = Vec3::new(lo[0] + hi[0], lo[1] + hi[1], lo[2] + hi[2]) * 0.5;
        for v in &mut m.vertices {
            *v += c;
        }
        m
    }

    #[test]
    fn rotations_match_sam6d_obj_r() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/template-poses-level0.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("skipped: {} not present", path.display());
            return;
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let ours = level0_rotations();
        assert_eq!(ours.len(), VIEWS);
        let mut worst = 0.0f64;
        for (i, r) in ours.iter().enumerate() {
            let reference = &v["obj_R"][i];
            let p = &v["cam_position_mm"][i];
            for j in 0..3 {
                // serde_json's float parsing is not always correctly rounded: compare to 1e-9 mm.
                assert!((p[j].as_f64().unwrap() - CAM_POSITIONS_MM[i][j]).abs() < 1e-9, "position table, view {i}");
                for k in 0..3 {
                    worst = worst.max((r[(j, k)] - reference[j][k].as_f64().unwrap()).abs());
                }
            }
            assert!((r.determinant() - 1.0).abs() < 1e-12);
        }
        eprintln!("max |obj_R − reference| = {worst:e}");
        assert!(worst < 1e-9, "max |obj_R − reference| = {worst:e}");
    }

    #[test]
    fn camera_is_blenderproc_default() {
        let c = camera();
        // 50 mm lens on a 36 mm sensor over 512 px.
        assert!((c.fx - 512.0 * 50.0 / 36.0).abs() < 0.01, "{}", c.fx);
        assert_eq!((c.cx, c.cy, c.fx), (255.5, 255.5, c.fy));
    }

    #[test]
    fn view_looks_at_the_origin_from_its_position() {
        // The model origin is on the optical axis; the camera centre maps to the camera origin.
        for (i, r) in level0_rotations().iter().enumerate() {
            let pose = Pose::new(*r, Vector3::new(0.0, 0.0, 1000.0));
            let c = pose.apply(&cam_position_mm(i));
            assert!(c.norm() < 1e-3, "view {i}: camera centre maps to {c:?}");
        }
    }

    #[test]
    fn f16_conversion_matches_ieee() {
        for (x, h) in [
            (0.0f32, 0x0000u16),
            (-0.0, 0x8000),
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (0.1, 0x2e66),
            (1.0 / 3.0, 0x3555),
            (65504.0, 0x7bff),
            (65519.0, 0x7bff),
            (65520.0, 0x7c00),
            (1e6, 0x7c00),
            (f32::INFINITY, 0x7c00),
            (6.103_515_6e-5, 0x0400),
            (5.960_464_5e-8, 0x0001),
            (2.0e-8, 0x0000),
            (3.0e-8, 0x0001),
            // Ties to even: 1 + 2^-11 sits halfway between 1 and 1 + 2^-10.
            (1.0 + 1.0 / 2048.0, 0x3c00),
            (1.0 + 3.0 / 2048.0, 0x3c02),
            (-123.456, 0xd7b7),
        ] {
            assert_eq!(f32_to_f16(x), h, "{x}");
        }
        assert_eq!(f32_to_f16(f32::NAN) & 0x7c00, 0x7c00);
        assert_ne!(f32_to_f16(f32::NAN) & 0x3ff, 0);
    }

    #[test]
    fn npy_header_is_aligned() {
        let h = npy_header("<f2", &[512, 512, 3]);
        assert_eq!(h.len() % 64, 0);
        assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert!(text.starts_with("{'descr': '<f2', 'fortran_order': False, 'shape': (512, 512, 3), }"), "{text}");
        assert!(text.ends_with('\n'));
        assert!(std::str::from_utf8(&npy_header("<f4", &[7])[10..]).unwrap().contains("'shape': (7,)"));
    }

    #[test]
    fn radius_of_a_box_is_its_far_corner() {
        // Samples get within a fraction of a mm of the corners of a 60 × 100 × 140 box.
        let m = box_mesh([-20.0, -40.0, -60.0], [40.0, 60.0, 80.0]);
        let r = normalisation_radius(&m);
        let far = (40f64.powi(2) + 60f64.powi(2) + 80f64.powi(2)).sqrt();
        assert!(r <= far + 1e-3 && r > far - 5.0, "r = {r}, far corner {far}");
    }

    #[test]
    fn shading_uses_vertex_colours_and_faces_the_light() {
        // A red box: every visible pixel is reddish; the face turned to the camera (and light)
        // is brighter than one seen at a grazing angle.
        let mut m = box_mesh([-50.0; 3], [50.0; 3]);
        m.colors = Some(vec![[200, 30, 30]; m.vertices.len()]);
        let views = render_templates(&m);
        assert_eq!(views.len(), VIEWS);
        let v = &views[0];
        let mut n = 0;
        for (i, px) in v.rgb.pixels().enumerate() {
            if v.mask[i] {
                assert!(px[0] > px[1] && px[0] > px[2], "pixel {i}: {px:?}");
                n += 1;
            } else {
                assert_eq!(px.0, [0, 0, 0]);
                assert_eq!(v.xyz[i], [0.0; 3]);
            }
        }
        assert!(n > 1000);
        // View 0 looks along +z at the −z face head-on: its centre pixel is nearly the albedo.
        let c = v.rgb.get_pixel(256, 256);
        assert!(c[0] > 190, "{c:?}");
        // Without colours: grey.
        m.colors = None;
        let grey = &render_templates(&m)[0];
        let g = grey.rgb.get_pixel(256, 256);
        assert!(g[0] == g[1] && g[1] == g[2] && g[0] > 150, "{g:?}");
    }

    #[test]
    fn barycentric_weights_reproduce_the_point() {
        let tri = [Vector3::new(0.0, 0.0, 0.0), Vector3::new(10.0, 0.0, 1.0), Vector3::new(0.0, 5.0, 2.0)];
        let w_true = [0.2, 0.5, 0.3];
        let p = tri[0] * w_true[0] + tri[1] * w_true[1] + tri[2] * w_true[2];
        let w = barycentric(&p, tri);
        for k in 0..3 {
            assert!((w[k] - w_true[k]).abs() < 1e-12);
        }
    }
}
