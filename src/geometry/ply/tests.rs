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

/// A 2×2 texture: top row red | green, bottom row blue | white (v runs bottom to top).
fn quad_texture(dir: &Path) {
    let mut img = image::RgbImage::new(2, 2);
    img.put_pixel(0, 0, image::Rgb([255, 0, 0]));
    img.put_pixel(1, 0, image::Rgb([0, 255, 0]));
    img.put_pixel(0, 1, image::Rgb([0, 0, 255]));
    img.put_pixel(1, 1, image::Rgb([255, 255, 255]));
    img.save(dir.join("tex.png")).unwrap();
}

/// Four vertices, each in one texel's centre: (u, v) = (0.25 | 0.75, 0.75 | 0.25).
const TEXTURED_QUAD: &str = "ply\nformat ascii 1.0\ncomment TextureFile tex.png\nelement vertex 4\n\
property float x\nproperty float y\nproperty float z\nproperty float texture_u\nproperty float texture_v\n\
element face 2\nproperty list uchar int vertex_indices\nend_header\n\
0 0 0 0.25 0.75\n1 0 0 0.75 0.75\n0 1 0 0.25 0.25\n1 1 0 0.75 0.25\n3 0 1 2\n3 1 3 2\n";

#[test]
fn texture_gives_vertex_colours() {
    let dir = tempfile::tempdir().unwrap();
    quad_texture(dir.path());
    let path = dir.path().join("m.ply");
    std::fs::write(&path, TEXTURED_QUAD).unwrap();
    let m = read_ply(&path).unwrap();
    assert_eq!(m.colors.unwrap(), vec![[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]);
    // Parsing bytes alone has no folder to find the texture in.
    assert!(parse_ply(TEXTURED_QUAD.as_bytes(), "m.ply").unwrap().colors.is_none());
}

/// MeshLab's wedge coordinates: a (u, v) per face corner, `comment TextureFile` as above.
#[test]
fn per_corner_texture_coordinates_give_vertex_colours() {
    let dir = tempfile::tempdir().unwrap();
    quad_texture(dir.path());
    let ply = "ply\nformat ascii 1.0\ncomment TextureFile tex.png\nelement vertex 4\n\
property float x\nproperty float y\nproperty float z\n\
element face 2\nproperty list uchar int vertex_indices\nproperty list uchar float texcoord\nend_header\n\
0 0 0\n1 0 0\n0 1 0\n1 1 0\n3 0 1 2 6 0.25 0.75 0.75 0.75 0.25 0.25\n3 1 3 2 6 0.75 0.75 0.75 0.25 0.25 0.25\n";
    let path = dir.path().join("m.ply");
    std::fs::write(&path, ply).unwrap();
    assert_eq!(read_ply(&path).unwrap().colors.unwrap(), vec![[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]);
}

/// A texture that is not there is a warning, not an error: the geometry is still good.
/// Vertex colours in the file win over its texture.
#[test]
fn missing_texture_or_own_colours() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.ply");
    std::fs::write(&path, TEXTURED_QUAD).unwrap();
    let m = read_ply(&path).unwrap();
    assert_eq!(m.vertices.len(), 4);
    assert!(m.colors.is_none());

    quad_texture(dir.path());
    let coloured = TEXTURED_QUAD
        .replace("property float texture_v\n", "property float texture_v\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n")
        .replace(" 0.75\n", " 0.75 9 9 9\n")
        .replace(" 0.25\n", " 0.25 9 9 9\n");
    std::fs::write(&path, coloured).unwrap();
    assert_eq!(read_ply(&path).unwrap().colors.unwrap(), vec![[9, 9, 9]; 4]);
}

#[test]
fn texture_sampling_is_bilinear_and_wraps() {
    let mut img = image::RgbImage::new(2, 1);
    img.put_pixel(0, 0, image::Rgb([0, 0, 0]));
    img.put_pixel(1, 0, image::Rgb([200, 100, 50]));
    assert_eq!(texture::sample(&img, 0.5, 0.5), [100, 50, 25]);
    assert_eq!(texture::sample(&img, 1.25, 0.5), [0, 0, 0]);
    assert_eq!(texture::sample(&img, -0.25, 0.5), [200, 100, 50]);
    assert_eq!(texture::sample(&img, f32::NAN, 0.5), [0, 0, 0]);
}
