//! Texture-mapped PLY models: the colour of each vertex, sampled from the texture image at the
//! vertex's (u, v). Many datasets ship their models this way rather than with vertex colours
//! (BOP's YCB-V, HOPE; MeshLab's and Blender's exports), and the pipeline's colour check and
//! the renderings need a colour per vertex.
use super::{FaceRow, Layout, VertexRow};
use image::RgbImage;
use std::path::Path;

/// The texture a PLY header names: `comment TextureFile NAME` (MeshLab, BOP).
pub(super) fn file_name(comments: &[String]) -> Option<String> {
    comments.iter().find_map(|c| {
        let (key, rest) = c.trim().split_once(char::is_whitespace)?;
        (key.eq_ignore_ascii_case("texturefile") && !rest.trim().is_empty()).then(|| rest.trim().to_string())
    })
}

/// Where each vertex sits in the texture image `file` (relative to the PLY's folder).
pub(super) struct VertexUv {
    pub file: String,
    /// (u, v) per vertex, None where no face corner gives one.
    pub uv: Vec<Option<[f32; 2]>>,
}

impl VertexUv {
    /// Per-vertex coordinates when the vertices carry them, else the first corner of a face that
    /// gives one for the vertex (a vertex on a texture seam has several; any will do for a
    /// colour). None when the file has no texture coordinates at all.
    pub(super) fn from_rows(file: String, vertices: &[VertexRow], faces: &[FaceRow], layout: &Layout) -> Option<VertexUv> {
        let uv = if layout.uv {
            vertices.iter().map(|r| Some(r.uv)).collect()
        } else {
            let mut uv = vec![None; vertices.len()];
            for f in faces.iter().filter(|f| f.texcoord.len() == 2 * f.indices.len()) {
                for (k, &i) in f.indices.iter().enumerate() {
                    // Indices were range-checked when the mesh was built.
                    uv[i as usize].get_or_insert([f.texcoord[2 * k], f.texcoord[2 * k + 1]]);
                }
            }
            uv
        };
        uv.iter().any(Option::is_some).then_some(VertexUv { file, uv })
    }
}

/// Vertex colours from the texture next to `ply`; None (with a warning saying why) when the
/// image cannot be read. Vertices without coordinates get the mean colour.
pub(super) fn vertex_colors(ply: &Path, uv: &VertexUv) -> Option<Vec<[u8; 3]>> {
    let path = ply.parent().unwrap_or(Path::new("")).join(&uv.file);
    let image = match image::open(&path) {
        Ok(i) => i.to_rgb8(),
        Err(e) => {
            tracing::warn!("{}: cannot read its texture {} ({e}); the model is used without colours", ply.display(), path.display());
            return None;
        }
    };
    if image.width() == 0 || image.height() == 0 {
        tracing::warn!("{}: its texture {} is empty; the model is used without colours", ply.display(), path.display());
        return None;
    }
    let sampled: Vec<Option<[u8; 3]>> = uv.uv.iter().map(|c| c.map(|[u, v]| sample(&image, u, v))).collect();
    let known: Vec<[u8; 3]> = sampled.iter().flatten().copied().collect();
    let mut sum = [0u64; 3];
    for c in &known {
        for k in 0..3 {
            sum[k] += c[k] as u64;
        }
    }
    let mean = sum.map(|s| (s / known.len().max(1) as u64) as u8);
    Some(sampled.into_iter().map(|c| c.unwrap_or(mean)).collect())
}

/// Bilinear sample at (u, v): u runs left to right, v bottom to top (OpenGL's convention, which
/// PLY texture coordinates follow); coordinates outside [0, 1] repeat, as a renderer's default
/// wrap mode does.
pub(super) fn sample(image: &RgbImage, u: f32, v: f32) -> [u8; 3] {
    let (w, h) = (image.width() as f32, image.height() as f32);
    let (u, v) = (if u.is_finite() { u.rem_euclid(1.0) } else { 0.0 }, if v.is_finite() { v.rem_euclid(1.0) } else { 0.0 });
    // Texel centres are at half-integers.
    let x = (u * w - 0.5).clamp(0.0, w - 1.0);
    let y = ((1.0 - v) * h - 0.5).clamp(0.0, h - 1.0);
    let (x0, y0) = (x.floor() as u32, y.floor() as u32);
    let (x1, y1) = ((x0 + 1).min(image.width() - 1), (y0 + 1).min(image.height() - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let px = |x, y| image.get_pixel(x, y).0.map(f32::from);
    let (a, b, c, d) = (px(x0, y0), px(x1, y0), px(x0, y1), px(x1, y1));
    std::array::from_fn(|k| {
        let top = a[k] + (b[k] - a[k]) * fx;
        let bottom = c[k] + (d[k] - c[k]) * fx;
        (top + (bottom - top) * fy).round().clamp(0.0, 255.0) as u8
    })
}
