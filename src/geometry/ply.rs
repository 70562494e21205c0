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

pub fn read_ply(path: &Path) -> Result<Mesh, InputError> {
    let bytes = crate::io::read_file(path)?;
    parse_ply(&bytes, &path.display().to_string())
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

pub fn parse_ply(bytes: &[u8], what: &str) -> Result<Mesh, InputError> {
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
    build_mesh(&vertices, &faces, &layout).map_err(err)
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

/// Which optional vertex data the header declares.
struct Layout {
    normals: bool,
    colors: bool,
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
        Ok(Layout { normals, colors })
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
            _ => return PropertyAccessResult::Ignored,
        }
        PropertyAccessResult::Set
    }
}

/// One face's vertex indices, widened to i64 so negative indices can be reported.
#[derive(Default)]
struct FaceRow {
    indices: Vec<i64>,
}

fn widen<T: Copy + Into<i64>>(v: &[T]) -> Vec<i64> {
    v.iter().map(|&i| i.into()).collect()
}

impl PropertyAccess for FaceRow {
    fn new() -> Self {
        Self::default()
    }
    fn set_property(&mut self, name: &str, p: Property) -> PropertyAccessResult {
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
mod tests {
    use super::*;

    fn v(x: f32, y: f32, z: f32) -> Vec3 {
        Vec3::new(x, y, z)
    }

    fn err_text(bytes: &[u8]) -> String {
        parse_ply(bytes, "model.ply").unwrap_err().to_string()
    }

    /// Tetrahedron with comments, obj_info, CRLF endings, odd number spellings and extra elements.
    const TETRA_ASCII_CRLF: &str = "ply\r\n\
format ascii 1.0\r\n\
comment made by hand\r\n\
obj_info num_cols 1\r\n\
element material 1\r\n\
property uchar ambient_red\r\n\
property float shininess\r\n\
element vertex 4\r\n\
comment between properties\r\n\
property float x\r\n\
property float y\r\n\
property float z\r\n\
property float quality\r\n\
element edge 2\r\n\
property int vertex1\r\n\
property int vertex2\r\n\
element face 4\r\n\
property list uchar int vertex_indices\r\n\
property list uchar float texcoord\r\n\
end_header\r\n\
12 0.5\r\n\
0 0 0 1\r\n\
1E-05 -0 +3.5 2\r\n\
0 1 0 3\r\n\
-1.5e+2 0 1 4\r\n\
0 1\r\n\
1 2\r\n\
3 0 2 1 6 0 0 1 0 1 1\r\n\
3 0 1 3 0\r\n\
3 0 3 2 0\r\n\
3 1 2 3 0\r\n";

    #[test]
    fn ascii_crlf_comments_extra_elements() {
        let m = parse_ply(TETRA_ASCII_CRLF.as_bytes(), "t.ply").unwrap();
        assert_eq!(m.vertices, vec![v(0., 0., 0.), v(1e-5, 0., 3.5), v(0., 1., 0.), v(-150., 0., 1.)]);
        assert_eq!(m.faces, vec![[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]);
        assert!(m.normals.is_none() && m.colors.is_none());
    }

    #[test]
    fn ascii_lf_cr_and_blank_lines() {
        // Same file with LF, then old-Mac CR endings, then blank lines and trailing spaces.
        let expected = parse_ply(TETRA_ASCII_CRLF.as_bytes(), "t.ply").unwrap();
        for text in [
            TETRA_ASCII_CRLF.replace("\r\n", "\n"),
            TETRA_ASCII_CRLF.replace("\r\n", "\r"),
            TETRA_ASCII_CRLF.replace("\r\n", "  \n\n"),
        ] {
            let m = parse_ply(text.as_bytes(), "t.ply").unwrap();
            assert_eq!(m.vertices, expected.vertices);
            assert_eq!(m.faces, expected.faces);
        }
    }

    #[test]
    fn ascii_number_spellings() {
        // Valid C/strtod spellings outside ply-rs-bw's grammar, tabs, and an `inf` in an
        // ignored property.
        let text = "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty double y\nproperty float z\n\
                    property float quality\nend_header\n  .5\t5. -.25e1 inf\n+3.5 -0 1E-05 0\n5.e-1 -2.E+1 +.0 -INF\n";
        let m = parse_ply(text.as_bytes(), "n.ply").unwrap();
        assert_eq!(m.vertices, vec![v(0.5, 5.0, -2.5), v(3.5, 0.0, 1e-5), v(0.5, -20.0, 0.0)]);
        // nan/inf coordinates get the non-finite error, not a grammar error.
        let text = text.replace("  .5\t5.", "nan 5.");
        let msg = err_text(text.as_bytes());
        assert!(msg.starts_with("model.ply: vertex 0 has a non-finite coordinate"), "{msg}");
    }

    /// Little helper to write binary payloads in either byte order.
    struct Bin {
        le: bool,
        out: Vec<u8>,
    }
    impl Bin {
        fn new(header: &str, le: bool) -> Bin {
            Bin { le, out: header.as_bytes().to_vec() }
        }
        fn f32(&mut self, x: f32) -> &mut Self {
            self.out.extend(if self.le { x.to_le_bytes() } else { x.to_be_bytes() });
            self
        }
        fn f64(&mut self, x: f64) -> &mut Self {
            self.out.extend(if self.le { x.to_le_bytes() } else { x.to_be_bytes() });
            self
        }
        fn u32(&mut self, x: u32) -> &mut Self {
            self.out.extend(if self.le { x.to_le_bytes() } else { x.to_be_bytes() });
            self
        }
        fn i32(&mut self, x: i32) -> &mut Self {
            self.out.extend(if self.le { x.to_le_bytes() } else { x.to_be_bytes() });
            self
        }
        fn u16(&mut self, x: u16) -> &mut Self {
            self.out.extend(if self.le { x.to_le_bytes() } else { x.to_be_bytes() });
            self
        }
        fn u8(&mut self, x: u8) -> &mut Self {
            self.out.push(x);
            self
        }
    }

    const TETRA: [[f64; 3]; 4] = [[0., 0., 0.], [1., 0., 0.], [0., 1., 0.], [0., 0., 1.]];
    const TETRA_FACES: [[u32; 3]; 4] = [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]];

    fn tetra_vertices() -> Vec<Vec3> {
        TETRA.iter().map(|p| v(p[0] as f32, p[1] as f32, p[2] as f32)).collect()
    }

    fn binary_le_double_uint() -> Vec<u8> {
        let mut b = Bin::new(
            "ply\nformat binary_little_endian 1.0\nelement vertex 4\nproperty double x\nproperty double y\n\
             property double z\nproperty float nx\nproperty float ny\nproperty float nz\n\
             element face 4\nproperty list uint uint vertex_indices\nend_header\n",
            true,
        );
        for p in TETRA {
            b.f64(p[0]).f64(p[1]).f64(p[2]).f32(0.0).f32(0.6).f32(-0.8);
        }
        for f in TETRA_FACES {
            b.u32(3).u32(f[0]).u32(f[1]).u32(f[2]);
        }
        b.out
    }

    #[test]
    fn binary_le_doubles_uint_indices_normals() {
        let m = parse_ply(&binary_le_double_uint(), "le.ply").unwrap();
        assert_eq!(m.vertices, tetra_vertices());
        assert_eq!(m.faces, TETRA_FACES.to_vec());
        assert_eq!(m.normals.unwrap(), vec![v(0.0, 0.6, -0.8); 4]);
        assert!(m.colors.is_none());
    }

    #[test]
    fn binary_be_with_colours_and_extra_props() {
        // Big endian, float coords, ushort list count with int indices, uchar colours + alpha,
        // an extra short property, and an element after the faces.
        let mut b = Bin::new(
            "ply\nformat binary_big_endian 1.0\ncomment big endian\nelement vertex 4\nproperty float32 x\n\
             property float32 y\nproperty float32 z\nproperty uint16 flags\nproperty uchar red\n\
             property uchar green\nproperty uchar blue\nproperty uchar alpha\nelement face 4\n\
             property list ushort int vertex_index\nproperty uchar face_flag\nelement extra 1\n\
             property list uchar double stuff\nend_header\n",
            false,
        );
        for (i, p) in TETRA.iter().enumerate() {
            b.f32(p[0] as f32).f32(p[1] as f32).f32(p[2] as f32).u16(7).u8(10 * i as u8).u8(255).u8(1).u8(128);
        }
        for f in TETRA_FACES {
            b.u16(3).i32(f[0] as i32).i32(f[1] as i32).i32(f[2] as i32).u8(9);
        }
        b.u8(2).f64(1.0).f64(2.0);
        let m = parse_ply(&b.out, "be.ply").unwrap();
        assert_eq!(m.vertices, tetra_vertices());
        assert_eq!(m.faces, TETRA_FACES.to_vec());
        assert_eq!(m.colors.unwrap(), vec![[0, 255, 1], [10, 255, 1], [20, 255, 1], [30, 255, 1]]);
        assert!(m.normals.is_none());
    }

    #[test]
    fn quad_and_polygon_fan_triangulated() {
        let text = "ply\nformat ascii 1.0\nelement vertex 5\nproperty int x\nproperty short y\nproperty uchar z\n\
                    element face 3\nproperty list int ushort vertex_indices\nend_header\n\
                    0 0 0\n1 0 0\n1 1 0\n0 1 0\n-1 0 0\n4 0 1 2 3\n5 4 0 1 2 3\n2 0 1\n";
        let m = parse_ply(text.as_bytes(), "q.ply").unwrap();
        assert_eq!(m.vertices[4], v(-1., 0., 0.));
        // Quad -> 2 triangles, pentagon -> 3, a 2-vertex "face" -> none.
        assert_eq!(m.faces, vec![[0, 1, 2], [0, 2, 3], [4, 0, 1], [4, 1, 2], [4, 2, 3]]);
    }

    #[test]
    fn no_faces_is_a_point_cloud() {
        let text = "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n\
                    end_header\n1 2 3\n4 5 6\n";
        let m = parse_ply(text.as_bytes(), "pc.ply").unwrap();
        assert_eq!(m.vertices, vec![v(1., 2., 3.), v(4., 5., 6.)]);
        assert!(m.faces.is_empty());
        // An empty face element (no index list needed) is also fine.
        let text = text.replace("end_header", "element face 0\nend_header");
        let m = parse_ply(text.as_bytes(), "pc.ply").unwrap();
        assert!(m.faces.is_empty() && m.vertices.len() == 2);
    }

    #[test]
    fn colours_uchar_and_float() {
        let text = "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n\
                    property uchar diffuse_red\nproperty uchar diffuse_green\nproperty uchar diffuse_blue\n\
                    end_header\n0 0 0 1 2 3\n1 0 0 255 0 128\n0 1 0 0 0 0\n";
        let m = parse_ply(text.as_bytes(), "c.ply").unwrap();
        assert_eq!(m.colors.unwrap(), vec![[1, 2, 3], [255, 0, 128], [0, 0, 0]]);

        // Float colours are scaled by 255 and rounded (0.5 -> 127.5 -> 128); out-of-range values clamp.
        let text = "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n\
                    property float r\nproperty float g\nproperty double b\nproperty float a\n\
                    end_header\n0 0 0 0 0.5 1 1\n1 0 0 1.0 0.8 1.5 1\n0 1 0 -0.1 0.25 0.002 1\n";
        let m = parse_ply(text.as_bytes(), "c.ply").unwrap();
        assert_eq!(m.colors.unwrap(), vec![[0, 128, 255], [255, 204, 255], [0, 64, 1]]);
    }

    #[test]
    fn not_a_ply() {
        assert_eq!(err_text(b""), "model.ply: not a PLY file: the file is empty");
        assert_eq!(err_text(b"solid cube\nfacet normal 0 0 1\n"), "model.ply: not a PLY file: the first line is not 'ply'");
        assert_eq!(err_text(b"\x89PNG\r\n\x1a\n"), "model.ply: not a PLY file: the first line is not 'ply'");
        let msg = err_text(b"ply\nformat ascii 1.0\nelement vertex 1\n");
        assert!(msg.contains("no 'end_header' line"), "{msg}");
        let msg = err_text(b"ply\nformat ascii 1\nend_header\n");
        assert!(msg.starts_with("model.ply: invalid PLY header line 2 'format ascii 1'"), "{msg}");
        let msg = err_text(b"ply\nelement vertex 1\nproperty float x\nend_header\n0\n");
        assert!(msg.contains("invalid PLY header") && msg.contains("format"), "{msg}");
    }

    #[test]
    fn truncated_binary() {
        let full = binary_le_double_uint();
        for cut in [full.len() - 1, full.len() - 40, full.len() - 100] {
            let msg = err_text(&full[..cut]);
            assert!(msg.starts_with("model.ply: the PLY file is truncated"), "{msg}");
        }
        // Truncated ASCII as well.
        let text = TETRA_ASCII_CRLF.rsplit_once("3 0 1 3").unwrap().0;
        let msg = err_text(text.as_bytes());
        assert!(msg.contains("truncated") && msg.contains("'face'"), "{msg}");
    }

    #[test]
    fn missing_coordinates_and_elements() {
        let msg = err_text(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float z\nend_header\n1 2\n");
        assert_eq!(msg, "model.ply: the 'vertex' element has no 'y' property");
        let msg = err_text(b"ply\nformat ascii 1.0\nelement point 1\nproperty float x\nend_header\n1\n");
        assert_eq!(msg, "model.ply: the PLY file has no 'vertex' element");
        let msg = err_text(
            b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\n\
              element face 1\nproperty list uchar int corners\nend_header\n0 0 0\n3 0 0 0\n",
        );
        assert!(msg.contains("'face' element has no 'vertex_indices'"), "{msg}");
    }

    #[test]
    fn non_finite_coordinates() {
        let header = "ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty double x\nproperty double y\n\
                      property double z\nend_header\n";
        let mut b = Bin::new(header, true);
        b.f64(0.0).f64(0.0).f64(0.0).f64(1.0).f64(f64::NAN).f64(0.0);
        assert_eq!(err_text(&b.out), "model.ply: vertex 1 has a non-finite coordinate (1, NaN, 0)");
        // Finite as a double, infinite as f32.
        let mut b = Bin::new(header, true);
        b.f64(1e300).f64(0.0).f64(0.0).f64(0.0).f64(0.0).f64(0.0);
        assert!(err_text(&b.out).contains("vertex 0 has a non-finite coordinate"));
    }

    #[test]
    fn face_indices_out_of_range() {
        let base = "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n\
                    element face 2\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n";
        let msg = err_text(format!("{base}3 0 1 3\n").as_bytes());
        assert_eq!(msg, "model.ply: face 1 refers to vertex 3, but the file has only 3 vertices (valid: 0..2)");
        let msg = err_text(format!("{base}3 0 -1 2\n").as_bytes());
        assert!(msg.contains("face 1 refers to vertex -1"), "{msg}");
    }

    #[test]
    fn bad_ascii_number_names_the_line() {
        let text = "ply\nformat ascii 1.0\ncomment c\nelement vertex 2\nproperty float x\nproperty float y\n\
                    property float z\nend_header\n0 0 0\n\n1 zero 0\n";
        let msg = err_text(text.as_bytes());
        // Line 11 of the file (after a blank line that is skipped).
        assert!(msg.starts_with("model.ply: invalid PLY data for element 'vertex' at line 11: "), "{msg}");
        assert!(msg.contains("1 zero 0") && !msg.contains('\n'), "{msg}");
    }

    #[test]
    fn duplicate_property_refused() {
        let text = "ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nproperty float y\n\
                    property float z\nproperty float x\nend_header\n";
        assert!(err_text(text.as_bytes()).contains("same element or property name twice"));
    }

    #[test]
    fn sam6d_example_model() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/sam6d-example/obj_000005.ply");
        if !path.exists() {
            eprintln!("skipping: {} not found", path.display());
            return;
        }
        let t = std::time::Instant::now();
        let m = read_ply(&path).unwrap();
        let took = t.elapsed();
        eprintln!("read {} in {took:?}", path.display());
        assert_eq!(m.vertices.len(), 22831);
        assert_eq!(m.faces.len(), 45666);
        assert_eq!(m.normals.as_ref().map(Vec::len), Some(22831));
        assert_eq!(m.colors.as_ref().map(Vec::len), Some(22831));
        // First vertex line: "-6.631 -40.9674 -76.6654 -0.119051 -0.991294 -0.0562379 197 187 184 255".
        assert_eq!(m.vertices[0], v(-6.631, -40.9674, -76.6654));
        assert_eq!(m.normals.unwrap()[0], v(-0.119051, -0.991294, -0.0562379));
        assert_eq!(m.colors.unwrap()[0], [197, 187, 184]);
        // Loose bound (shared 2-core machine); typically far below.
        assert!(took.as_secs_f64() < 3.0, "took {took:?}");
    }

    #[test]
    fn ascii_writer_round_trips() {
        let mesh = Mesh {
            vertices: vec![Vec3::new(0.0, 0.0, 0.0), Vec3::new(1.5, 0.0, -2.0), Vec3::new(0.0, 1e-5, 3.0)],
            normals: Some(vec![Vec3::z(), Vec3::x(), Vec3::y()]),
            colors: Some(vec![[255, 0, 0], [0, 255, 0], [0, 0, 255]]),
            faces: vec![[0, 1, 2]],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ply");
        write_ascii_ply(&mesh, &path).unwrap();
        let back = read_ply(&path).unwrap();
        assert_eq!(back.vertices, mesh.vertices);
        assert_eq!(back.normals, mesh.normals);
        assert_eq!(back.colors, mesh.colors);
        assert_eq!(back.faces, mesh.faces);
    }
}
