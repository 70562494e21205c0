//! PLY meshes (ASCII, binary little/big endian) via the maintained `ply-rs-bw` fork.
//!
//! ply-rs-bw does the header grammar and the payload decoding; around it we
//! - normalise the header (CR/CRLF, blank lines, stray spaces) and ASCII payload line endings,
//!   because ply-rs-bw reads lines with `read_line` (LF only) and rejects blank lines;
//! - parse each element straight into small structs (no per-vertex hash maps), skipping unknown
//!   elements and properties;
//! - validate what the pipeline relies on (x/y/z present and finite, face indices in range).
use super::{Mesh, Vec3};
use crate::io::InputError;
use ply_rs_bw::parser::{ParseError, Parser, Reader};
use ply_rs_bw::ply::{ElementDef, Encoding, Header, Property, PropertyAccess, PropertyAccessResult, PropertyType, ScalarType};
use std::path::Path;

mod texture;

/// Reads a mesh. A texture-mapped model (`comment TextureFile NAME` with per-vertex
/// `texture_u`/`texture_v` or per-face `texcoord` lists, as BOP's YCB-V and MeshLab write them)
/// gets vertex colours sampled from its texture image, which is looked for next to the file; a
/// missing or unreadable texture is a warning, and the model is used without colours.
pub fn read_ply(path: &Path) -> Result<Mesh, InputError> {
    let bytes = crate::io::read_file(path)?;
    let (mut mesh, uv) = parse_with_uv(&bytes, &path.display().to_string())?;
    if let Some(uv) = uv {
        mesh.colors = texture::vertex_colors(path, &uv);
    }
    Ok(mesh)
}

/// Colour property names, per channel, in the spellings seen in the wild.
const RED: [&str; 3] = ["red", "r", "diffuse_red"];
const GREEN: [&str; 3] = ["green", "g", "diffuse_green"];
const BLUE: [&str; 3] = ["blue", "b", "diffuse_blue"];
/// Face index list names (the spec says `vertex_indices`; many writers use `vertex_index`).
const FACE_LISTS: [&str; 2] = ["vertex_indices", "vertex_index"];

/// Writes `mesh` as ASCII PLY (positions, normals and colours when present, triangles).
pub fn write_ascii_ply(mesh: &Mesh, path: &Path) -> std::io::Result<()> {
    use std::fmt::Write;
    let mut t = format!("ply\nformat ascii 1.0\ncomment written by sam6d\nelement vertex {}\n", mesh.vertices.len());
    t += "property float x\nproperty float y\nproperty float z\n";
    if mesh.normals.is_some() {
        t += "property float nx\nproperty float ny\nproperty float nz\n";
    }
    if mesh.colors.is_some() {
        t += "property uchar red\nproperty uchar green\nproperty uchar blue\n";
    }
    let _ = write!(t, "element face {}\nproperty list uchar int vertex_indices\nend_header\n", mesh.faces.len());
    for (i, v) in mesh.vertices.iter().enumerate() {
        let _ = write!(t, "{} {} {}", v.x, v.y, v.z);
        if let Some(n) = &mesh.normals {
            let _ = write!(t, " {} {} {}", n[i].x, n[i].y, n[i].z);
        }
        if let Some(c) = &mesh.colors {
            let _ = write!(t, " {} {} {}", c[i][0], c[i][1], c[i][2]);
        }
        t.push('\n');
    }
    for f in &mesh.faces {
        let _ = writeln!(t, "3 {} {} {}", f[0], f[1], f[2]);
    }
    std::fs::write(path, t)
}

/// Parses PLY bytes; `what` names them in errors. Texture coordinates are not resolved here
/// (there is no folder to find the texture in): [`read_ply`] does that.
pub fn parse_ply(bytes: &[u8], what: &str) -> Result<Mesh, InputError> {
    parse_with_uv(bytes, what).map(|(mesh, _)| mesh)
}

/// The mesh and, when the file names a texture and the mesh has no vertex colours of its own,
/// where each vertex sits in that texture.
fn parse_with_uv(bytes: &[u8], what: &str) -> Result<(Mesh, Option<texture::VertexUv>), InputError> {
    let err = |msg: String| InputError::invalid(what, msg);

    let split = split_header(bytes).map_err(err)?;
    let header = parse_header(&split).map_err(err)?;
    let layout = Layout::from_header(&header).map_err(err)?;

    // ASCII payloads get their line endings normalised and blank lines dropped; `line_map`
    // remembers each kept line's original line number for error messages.
    let body = &bytes[split.body_start..];
    let (ascii_body, line_map) = match header.encoding {
        Encoding::Ascii => {
            let (b, m) = normalise_ascii(body);
            (Some(b), m)
        }
        _ => (None, Vec::new()),
    };
    let mut reader = Reader::new(ascii_body.as_deref().unwrap_or(body));

    let mut vertices = Vec::new();
    let mut faces = Vec::new();
    for element in header.elements.values() {
        let describe = |e: ParseError| {
            let file_line = e.line().and_then(|n| line_map.get(n.checked_sub(1)?)).map(|l| l + split.header_lines);
            err(payload_error(&e, &element.name, file_line))
        };
        // Elements must be read in header order; only `vertex` and `face` are kept.
        match element.name.as_str() {
            "vertex" => vertices = Parser::<VertexRow>::new().read_payload_for_element(&mut reader, element, &header).map_err(describe)?,
            "face" => faces = Parser::<FaceRow>::new().read_payload_for_element(&mut reader, element, &header).map_err(describe)?,
            _ => {
                Parser::<Skip>::new().read_payload_for_element(&mut reader, element, &header).map_err(describe)?;
            }
        }
    }
    let mesh = build_mesh(&vertices, &faces, &layout).map_err(err)?;
    let uv = match texture::file_name(&header.comments) {
        Some(file) if mesh.colors.is_none() => texture::VertexUv::from_rows(file, &vertices, &faces, &layout),
        _ => None,
    };
    Ok((mesh, uv))
}

/// The header as text ply-rs-bw accepts, and where the payload starts in the original bytes.
struct SplitHeader {
    /// One header line per original line, LF-terminated, trimmed; blank lines become `comment`.
    text: String,
    /// Original header lines (same numbering as `text`), for error messages.
    lines: Vec<String>,
    /// Number of lines up to and including `end_header`.
    header_lines: usize,
    /// Number of `element` / `property` lines, to detect duplicate names (see `parse_header`).
    element_lines: usize,
    property_lines: usize,
    body_start: usize,
}

fn split_header(bytes: &[u8]) -> Result<SplitHeader, String> {
    if bytes.is_empty() {
        return Err("not a PLY file: the file is empty".into());
    }
    let mut split = SplitHeader { text: String::new(), lines: Vec::new(), header_lines: 0, element_lines: 0, property_lines: 0, body_start: 0 };
    let mut pos = 0;
    while pos < bytes.len() {
        // A header line ends at LF, CR or CRLF.
        let end = bytes[pos..].iter().position(|&b| b == b'\n' || b == b'\r').map_or(bytes.len(), |i| pos + i);
        let line = String::from_utf8_lossy(&bytes[pos..end]).trim().to_string();
        pos = if bytes[end..].starts_with(b"\r\n") { end + 2 } else { end + 1 };

        if split.lines.is_empty() && line != "ply" {
            return Err("not a PLY file: the first line is not 'ply'".into());
        }
        match line.split_whitespace().next() {
            Some("element") => split.element_lines += 1,
            Some("property") => split.property_lines += 1,
            _ => {}
        }
        // ply-rs-bw rejects blank header lines; an empty comment keeps the line numbering.
        split.text.push_str(if line.is_empty() { "comment" } else { &line });
        split.text.push('\n');
        let done = line == "end_header";
        split.lines.push(line);
        if done {
            split.header_lines = split.lines.len();
            split.body_start = pos.min(bytes.len());
            return Ok(split);
        }
    }
    Err("the PLY header has no 'end_header' line (truncated or not a PLY file)".into())
}

fn parse_header(split: &SplitHeader) -> Result<Header, String> {
    let header = Parser::<Skip>::new().read_header(&mut Reader::new(split.text.as_bytes())).map_err(|e| {
        let msg = first_line_of(&e);
        match e.line().and_then(|n| split.lines.get(n.checked_sub(1)?)) {
            Some(text) => format!("invalid PLY header line {} '{text}': {msg}", e.line().unwrap_or(0)),
            None => format!("invalid PLY header: {msg}"),
        }
    })?;
    // ply-rs-bw keys elements and properties by name, so a duplicate silently replaces the
    // first one and binary data would be misread: refuse instead.
    let properties: usize = header.elements.values().map(|e| e.properties.len()).sum();
    if header.elements.len() != split.element_lines || properties != split.property_lines {
        return Err("the PLY header declares the same element or property name twice".into());
    }
    Ok(header)
}

/// ply-rs-bw's message without its "Line N: " prefix (we report our own line numbers).
fn without_line_prefix(e: &ParseError) -> String {
    let full = e.to_string();
    match e.line() {
        Some(n) => full.strip_prefix(&format!("Line {n}: ")).unwrap_or(&full).to_string(),
        None => full,
    }
}

/// The message flattened onto one line (ply-rs-bw spreads it over indented lines).
fn ply_message(e: &ParseError) -> String {
    without_line_prefix(e).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Just the summary line; for header errors the rest is a verbose grammar dump.
fn first_line_of(e: &ParseError) -> String {
    without_line_prefix(e).lines().next().unwrap_or("").trim().to_string()
}

fn payload_error(e: &ParseError, element: &str, file_line: Option<usize>) -> String {
    let msg = ply_message(e);
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return format!("the PLY file is truncated: its '{element}' data ends early ({msg})");
    }
    match file_line {
        Some(l) => format!("invalid PLY data for element '{element}' at line {l}: {msg}"),
        None => format!("invalid PLY data for element '{element}': {msg}"),
    }
}

/// LF-only copy of an ASCII payload without blank lines, tokens separated by single spaces
/// and numbers made palatable to ply-rs-bw (see `push_number`), plus each kept line's
/// 1-based number in the original payload.
fn normalise_ascii(body: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::with_capacity(body.len());
    let mut line_map = Vec::new();
    let (mut pos, mut line_no) = (0, 0);
    while pos < body.len() {
        let end = body[pos..].iter().position(|&b| b == b'\n' || b == b'\r').map_or(body.len(), |i| pos + i);
        let line = &body[pos..end];
        line_no += 1;
        pos = if body[end..].starts_with(b"\r\n") { end + 2 } else { end + 1 };
        let mut tokens = line.split(u8::is_ascii_whitespace).filter(|t| !t.is_empty()).peekable();
        if tokens.peek().is_none() {
            continue;
        }
        for (i, token) in tokens.enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            push_number(token, &mut out);
        }
        out.push(b'\n');
        line_map.push(line_no);
    }
    (out, line_map)
}

/// Copies one ASCII number, rewritten into the subset ply-rs-bw's grammar accepts
/// (`[+-]digits[.digits][e[+-]digits]`): `.5` -> `0.5`, `5.` / `5.e3` -> `5.0` / `5.0e3`.
/// `nan`/`inf` become `1e999`, which Rust parses as infinity, so a non-finite coordinate
/// gets our clear error instead of a grammar error (NaN is reported as infinite).
/// Anything else is copied unchanged and left for ply-rs-bw to accept or reject.
fn push_number(token: &[u8], out: &mut Vec<u8>) {
    let (sign, rest) = match token.first() {
        Some(b'+' | b'-') => token.split_at(1),
        _ => (&token[..0], token),
    };
    if [&b"nan"[..], b"inf", b"infinity"].iter().any(|w| rest.eq_ignore_ascii_case(w)) {
        out.extend_from_slice(sign);
        out.extend_from_slice(b"1e999");
        return;
    }
    let mantissa_end = rest.iter().position(|&b| b == b'e' || b == b'E').unwrap_or(rest.len());
    let (mantissa, exponent) = rest.split_at(mantissa_end);
    out.extend_from_slice(sign);
    if mantissa.first() == Some(&b'.') {
        out.push(b'0');
    }
    out.extend_from_slice(mantissa);
    if mantissa.len() > 1 && mantissa.last() == Some(&b'.') {
        out.push(b'0');
    }
    out.extend_from_slice(exponent);
}

/// Texture coordinate property names: BOP / MeshLab's, Blender's and the bare ones.
const TEX_U: [&str; 3] = ["texture_u", "s", "u"];
const TEX_V: [&str; 3] = ["texture_v", "t", "v"];
/// The per-face list of (u, v) pairs, one per corner (MeshLab's wedge texture coordinates).
const FACE_TEXCOORD: &str = "texcoord";

/// Which optional vertex data the header declares.
struct Layout {
    normals: bool,
    colors: bool,
    /// Per-vertex texture coordinates.
    uv: bool,
}

fn scalar_prop(element: &ElementDef, name: &str) -> Result<bool, String> {
    match element.properties.get(name).map(|p| &p.data_type) {
        None => Ok(false),
        Some(PropertyType::Scalar(_)) => Ok(true),
        Some(PropertyType::List(..)) => Err(format!("vertex property '{name}' must be a single number, but it is a list")),
    }
}

impl Layout {
    fn from_header(header: &Header) -> Result<Layout, String> {
        let vertex = header.elements.get("vertex").ok_or("the PLY file has no 'vertex' element")?;
        for axis in ["x", "y", "z"] {
            if !scalar_prop(vertex, axis)? {
                return Err(format!("the 'vertex' element has no '{axis}' property"));
            }
        }
        let normals = ["nx", "ny", "nz"].iter().map(|n| scalar_prop(vertex, n)).collect::<Result<Vec<_>, _>>()?.iter().all(|&b| b);
        let any_of = |names: [&str; 3]| -> Result<bool, String> {
            names.iter().try_fold(false, |acc, n| Ok(acc | scalar_prop(vertex, n)?))
        };
        let colors = any_of(RED)? && any_of(GREEN)? && any_of(BLUE)?;
        let uv = any_of(TEX_U)? && any_of(TEX_V)?;

        if let Some(face) = header.elements.get("face") {
            let list = FACE_LISTS.iter().find_map(|n| face.properties.get(*n));
            match list.map(|p| &p.data_type) {
                Some(PropertyType::List(_, ScalarType::Float | ScalarType::Double)) => {
                    return Err("the face vertex index list must hold integers, not floats".into());
                }
                Some(PropertyType::List(..)) => {}
                Some(PropertyType::Scalar(_)) => return Err("the face vertex indices must be a list property".into()),
                // A face element with no entries needs no index list.
                None if face.count == 0 => {}
                None => return Err("the 'face' element has no 'vertex_indices' (or 'vertex_index') list".into()),
            }
        }
        Ok(Layout { normals, colors, uv })
    }
}

/// Any scalar as f64 (lists give NaN; the header check keeps lists away from x/y/z).
fn as_f64(p: &Property) -> f64 {
    match *p {
        Property::Char(v) => v.into(),
        Property::UChar(v) => v.into(),
        Property::Short(v) => v.into(),
        Property::UShort(v) => v.into(),
        Property::Int(v) => v.into(),
        Property::UInt(v) => v.into(),
        Property::Float(v) => v.into(),
        Property::Double(v) => v,
        _ => f64::NAN,
    }
}

/// Integer colours are 0..=255; float colours are 0..=1 and scaled. Out-of-range values clamp.
fn as_color(p: &Property) -> u8 {
    let v = as_f64(p);
    let v = if matches!(p, Property::Float(_) | Property::Double(_)) { v * 255.0 } else { v };
    if v.is_nan() {
        0
    } else {
        v.round().clamp(0.0, 255.0) as u8
    }
}

/// One vertex as read; coordinates stay f64 until validated.
#[derive(Default)]
struct VertexRow {
    pos: [f64; 3],
    normal: [f32; 3],
    color: [u8; 3],
    uv: [f32; 2],
}

impl PropertyAccess for VertexRow {
    fn new() -> Self {
        Self::default()
    }
    fn set_property(&mut self, name: &str, p: Property) -> PropertyAccessResult {
        match name {
            "x" => self.pos[0] = as_f64(&p),
            "y" => self.pos[1] = as_f64(&p),
            "z" => self.pos[2] = as_f64(&p),
            "nx" => self.normal[0] = as_f64(&p) as f32,
            "ny" => self.normal[1] = as_f64(&p) as f32,
            "nz" => self.normal[2] = as_f64(&p) as f32,
            n if RED.contains(&n) => self.color[0] = as_color(&p),
            n if GREEN.contains(&n) => self.color[1] = as_color(&p),
            n if BLUE.contains(&n) => self.color[2] = as_color(&p),
            n if TEX_U.contains(&n) => self.uv[0] = as_f64(&p) as f32,
            n if TEX_V.contains(&n) => self.uv[1] = as_f64(&p) as f32,
            _ => return PropertyAccessResult::Ignored,
        }
        PropertyAccessResult::Set
    }
}

/// One face's vertex indices, widened to i64 so negative indices can be reported.
#[derive(Default)]
struct FaceRow {
    indices: Vec<i64>,
    /// (u, v) per corner, when the face carries texture coordinates.
    texcoord: Vec<f32>,
}

fn widen<T: Copy + Into<i64>>(v: &[T]) -> Vec<i64> {
    v.iter().map(|&i| i.into()).collect()
}

impl PropertyAccess for FaceRow {
    fn new() -> Self {
        Self::default()
    }
    fn set_property(&mut self, name: &str, p: Property) -> PropertyAccessResult {
        if name == FACE_TEXCOORD {
            self.texcoord = match p {
                Property::ListFloat(v) => v,
                Property::ListDouble(v) => v.iter().map(|&x| x as f32).collect(),
                _ => return PropertyAccessResult::Ignored,
            };
            return PropertyAccessResult::Set;
        }
        if !FACE_LISTS.contains(&name) {
            return PropertyAccessResult::Ignored;
        }
        self.indices = match &p {
            Property::ListChar(v) => widen(v),
            Property::ListUChar(v) => widen(v),
            Property::ListShort(v) => widen(v),
            Property::ListUShort(v) => widen(v),
            Property::ListInt(v) => widen(v),
            Property::ListUInt(v) => widen(v),
            // Float lists are refused from the header (Layout::from_header).
            _ => return PropertyAccessResult::Ignored,
        };
        PropertyAccessResult::Set
    }
}

/// Elements we do not use (edges, materials, ...): read past and drop.
struct Skip;

impl PropertyAccess for Skip {
    fn new() -> Self {
        Skip
    }
}

fn build_mesh(rows: &[VertexRow], face_rows: &[FaceRow], layout: &Layout) -> Result<Mesh, String> {
    let mut vertices = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let v = Vec3::new(r.pos[0] as f32, r.pos[1] as f32, r.pos[2] as f32);
        // Checked after the f32 cast: a finite double like 1e300 overflows to infinity.
        if !v.iter().all(|c| c.is_finite()) {
            return Err(format!("vertex {i} has a non-finite coordinate ({}, {}, {})", r.pos[0], r.pos[1], r.pos[2]));
        }
        vertices.push(v);
    }
    let normals = layout.normals.then(|| rows.iter().map(|r| Vec3::from(r.normal)).collect());
    let colors = layout.colors.then(|| rows.iter().map(|r| r.color).collect());

    let n = rows.len() as i64;
    let mut faces = Vec::with_capacity(face_rows.len());
    for (f, row) in face_rows.iter().enumerate() {
        if let Some(&bad) = row.indices.iter().find(|&&i| i < 0 || i >= n) {
            return Err(format!("face {f} refers to vertex {bad}, but the file has only {n} vertices (valid: 0..{})", n - 1));
        }
        // Lines and points (fewer than 3 indices) have no area: skip them.
        // Polygons are fan-triangulated around their first vertex.
        for k in 1..row.indices.len().saturating_sub(1) {
            faces.push([row.indices[0] as u32, row.indices[k] as u32, row.indices[k + 1] as u32]);
        }
    }
    Ok(Mesh { vertices, normals, colors, faces })
}

#[cfg(test)]
mod tests;
