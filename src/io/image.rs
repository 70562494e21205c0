//! RGB and depth images. RGB: PNG/JPEG, 8-bit RGB, RGBA (alpha dropped) or grey.
//! Depth: single-channel 16-bit PNG; millimetres = raw × depth_scale; 0 = missing.
use super::InputError;
use image::{ColorType, DynamicImage, ImageFormat};
use std::path::Path;

pub use image::RgbImage;

/// Depth in millimetres, row-major, 0.0 where the sensor gave nothing.
#[derive(Clone, Debug)]
pub struct DepthMm {
    pub width: usize,
    pub height: usize,
    pub mm: Vec<f32>,
}

impl DepthMm {
    #[inline]
    pub fn at(&self, u: usize, v: usize) -> f32 {
        self.mm[v * self.width + u]
    }
}

/// Human-readable name of a decoded pixel format, used in error messages.
fn color_name(color: ColorType) -> &'static str {
    match color {
        ColorType::L8 => "8-bit grey",
        ColorType::La8 => "8-bit grey+alpha",
        ColorType::Rgb8 => "8-bit RGB",
        ColorType::Rgba8 => "8-bit RGBA",
        ColorType::L16 => "16-bit grey",
        ColorType::La16 => "16-bit grey+alpha",
        ColorType::Rgb16 => "16-bit RGB",
        ColorType::Rgba16 => "16-bit RGBA",
        ColorType::Rgb32F => "32-bit float RGB",
        ColorType::Rgba32F => "32-bit float RGBA",
        _ => "unknown pixel format",
    }
}

/// Decodes PNG or JPEG bytes (format guessed from the magic bytes).
fn decode_any(bytes: &[u8], what: &str) -> Result<DynamicImage, InputError> {
    if bytes.is_empty() {
        return Err(InputError::invalid(what, "the file is empty (expected a PNG or JPEG image)"));
    }
    // Note: JPEG EXIF orientation is deliberately not applied: the pixels must stay
    // registered with the depth map, which has no orientation tag.
    let img = image::load_from_memory(bytes)
        .map_err(|e| InputError::invalid(what, format!("not a readable PNG/JPEG image: {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(InputError::invalid(what, format!("the image is empty ({}x{})", img.width(), img.height())));
    }
    Ok(img)
}

/// Decodes encoded RGB bytes (PNG or JPEG). `what` names the source in errors.
pub fn decode_rgb(bytes: &[u8], what: &str) -> Result<RgbImage, InputError> {
    let img = decode_any(bytes, what)?;
    Ok(match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        // Everything else (RGBA: alpha dropped, not composited; grey: replicated;
        // 16-bit: scaled to 8-bit) goes through image's own conversion.
        other => other.to_rgb8(),
    })
}

pub fn read_rgb(path: &Path) -> Result<RgbImage, InputError> {
    decode_rgb(&super::read_file(path)?, &path.display().to_string())
}

/// Decodes an encoded 16-bit single-channel PNG into millimetres.
pub fn decode_depth(bytes: &[u8], depth_scale: f64, what: &str) -> Result<DepthMm, InputError> {
    const EXPECTED: &str = "depth must be a single-channel 16-bit PNG";
    if !(depth_scale.is_finite() && depth_scale > 0.0) {
        return Err(InputError::invalid(what, format!("depth_scale must be a positive number, got {depth_scale}")));
    }
    // A JPEG is lossy and 8-bit: refuse it before decoding so the message is precise.
    if let Ok(ImageFormat::Jpeg) = image::guess_format(bytes) {
        return Err(InputError::invalid(what, format!("{EXPECTED}, got a JPEG image")));
    }
    let img = decode_any(bytes, what)?;
    // Only L16 is accepted: converting grey8 or colour would silently invent depths.
    let DynamicImage::ImageLuma16(raw) = img else {
        return Err(InputError::invalid(what, format!("{EXPECTED}, got {}", color_name(img.color()))));
    };
    let (width, height) = (raw.width() as usize, raw.height() as usize);
    // Multiply in f64 so the result is the nearest f32 to the exact product; 0 stays 0.
    let mm = raw.as_raw().iter().map(|&d| (f64::from(d) * depth_scale) as f32).collect();
    Ok(DepthMm { width, height, mm })
}

/// Depths (mm) between which a depth camera looking at graspable objects usually sees them;
/// a frame whose median lies outside both is almost always read with the wrong `depth_scale`.
const TYPICAL_MM: (f32, f32) = (150.0, 4000.0);

/// A scale for a message: 0.1 × 0.1 reads 0.01, not 0.010000000000000002.
fn nice(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

/// What is wrong with a decoded depth image, if something plainly is: no measurement at all, or a
/// median depth so far from any camera's range that `depth_scale` is off by a factor of ten
/// (the usual slip: BOP's YCB-V and T-LESS store 0.1 mm units, LM and most cameras 1 mm).
/// `depth_scale` is the one the image was read with; the message names the likely fix.
pub fn depth_hint(depth: &DepthMm, depth_scale: f64) -> Option<String> {
    if !depth.mm.iter().any(|&z| z > 0.0 && z.is_finite()) {
        return Some("the depth image has no measurement (every pixel is 0): no pose can be found".into());
    }
    // Every 7th pixel is plenty for a median, and keeps this off the frame's time budget.
    let mut valid: Vec<f32> = depth.mm.iter().step_by(7).copied().filter(|&z| z > 0.0 && z.is_finite()).collect();
    if valid.is_empty() {
        valid = depth.mm.iter().copied().filter(|&z| z > 0.0 && z.is_finite()).collect();
    }
    let mid = valid.len() / 2;
    let median = *valid.select_nth_unstable_by(mid, f32::total_cmp).1;
    let (lo, hi) = TYPICAL_MM;
    if (lo..=hi).contains(&median) {
        return None;
    }
    for factor in [0.1f64, 10.0, 0.01, 100.0] {
        let z = median as f64 * factor;
        if (lo as f64..=hi as f64).contains(&z) {
            return Some(format!(
                "the median depth is {median:.0} mm with depth_scale {depth_scale}, outside the {lo:.0}-{hi:.0} mm where objects are usually seen; \
                 if the raw depth units are {} mm, use depth_scale {} (--depth-scale, or the camera file's depth_scale), which puts it at {z:.0} mm",
                nice(depth_scale * factor),
                nice(depth_scale * factor)
            ));
        }
    }
    Some(format!("the median depth is {median:.0} mm with depth_scale {depth_scale}: check the depth image and its depth_scale (mm per raw unit)"))
}

pub fn read_depth(path: &Path, depth_scale: f64) -> Result<DepthMm, InputError> {
    decode_depth(&super::read_file(path)?, depth_scale, &path.display().to_string())
}

/// Writes depth as a 16-bit PNG in raw units (mm / depth_scale, rounded; 0 stays missing).
pub fn write_depth_png(depth: &DepthMm, depth_scale: f64, path: &Path) -> image::ImageResult<()> {
    let raw: Vec<u16> = depth.mm.iter().map(|&z| (z as f64 / depth_scale).round().clamp(0.0, 65535.0) as u16).collect();
    image::ImageBuffer::<image::Luma<u16>, _>::from_raw(depth.width as u32, depth.height as u32, raw)
        .expect("buffer matches the image size")
        .save(path)
}

/// OpenCV's `cv2.resize(src, (dw, dh), interpolation=cv2.INTER_LINEAR)` for interleaved
/// uint8 images, bit for bit: 11-bit fixed-point weights (`INTER_RESIZE_COEF_BITS`), a
/// horizontal pass into i32, then the vertical pass with OpenCV's shifts and rounding. Source
/// coordinates are (d + 0.5)·scale − 0.5 (half-pixel centres); columns left of or right of the
/// image clamp their weight to the edge pixel, rows clamp their index only (as OpenCV does).
pub fn resize_linear_cv(src: &[u8], w: usize, h: usize, channels: usize, dw: usize, dh: usize) -> Vec<u8> {
    assert_eq!(src.len(), w * h * channels, "resize source size");
    assert!(w > 0 && h > 0 && dw > 0 && dh > 0, "resize of an empty image");
    const SCALE: f32 = 2048.0;
    // Per destination column: left source column and its two weights.
    let scale_x = 1.0 / (dw as f64 / w as f64);
    let cols: Vec<(usize, i32, i32)> = (0..dw)
        .map(|dx| {
            let f = ((dx as f64 + 0.5) * scale_x - 0.5) as f32;
            let mut sx = f.floor() as i64;
            let mut fx = f - sx as f32;
            if sx < 0 {
                sx = 0;
                fx = 0.0;
            }
            if sx >= w as i64 - 1 {
                sx = w as i64 - 1;
                fx = 0.0;
            }
            (sx as usize, round_short((1.0 - fx) * SCALE), round_short(fx * SCALE))
        })
        .collect();
    // Horizontal pass of one source row.
    let hpass = |y: usize| -> Vec<i32> {
        let row = &src[y * w * channels..(y + 1) * w * channels];
        let mut out = vec![0i32; dw * channels];
        for (dx, &(sx, a0, a1)) in cols.iter().enumerate() {
            let sx1 = (sx + 1).min(w - 1);
            for k in 0..channels {
                out[dx * channels + k] = i32::from(row[sx * channels + k]) * a0 + i32::from(row[sx1 * channels + k]) * a1;
            }
        }
        out
    };
    let scale_y = 1.0 / (dh as f64 / h as f64);
    let mut dst = vec![0u8; dw * dh * channels];
    for dy in 0..dh {
        let f = ((dy as f64 + 0.5) * scale_y - 0.5) as f32;
        let sy = f.floor() as i64;
        let fy = f - sy as f32;
        let (b0, b1) = (round_short((1.0 - fy) * SCALE), round_short(fy * SCALE));
        let y0 = sy.clamp(0, h as i64 - 1) as usize;
        let y1 = (sy + 1).clamp(0, h as i64 - 1) as usize;
        let (r0, r1) = (hpass(y0), hpass(y1));
        let out = &mut dst[dy * dw * channels..(dy + 1) * dw * channels];
        for x in 0..dw * channels {
            // VResizeLinear<uchar, int, short>: each product rounded down separately.
            let v = (((b0 * (r0[x] >> 4)) >> 16) + ((b1 * (r1[x] >> 4)) >> 16) + 2) >> 2;
            out[x] = v.clamp(0, 255) as u8;
        }
    }
    dst
}

/// `saturate_cast<short>(v)`: round half to even, clamp.
fn round_short(v: f32) -> i32 {
    (v.round_ties_even() as i32).clamp(i16::MIN as i32, i16::MAX as i32)
}

/// Checks that colour and depth describe the same pixels.
pub fn check_same_size(rgb: &RgbImage, depth: &DepthMm) -> Result<(), InputError> {
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    if (w, h) == (depth.width, depth.height) {
        return Ok(());
    }
    Err(InputError::invalid(
        "RGB-D frame",
        format!(
            "RGB is {w}x{h} but depth is {}x{}: they must be the same size \
             (the depth must be registered to the colour image)",
            depth.width, depth.height
        ),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn depth_hint_names_the_likely_depth_scale() {
        let img = |z: f32| super::DepthMm { width: 10, height: 10, mm: vec![z; 100] };
        assert_eq!(super::depth_hint(&img(900.0), 1.0), None);
        let empty = super::depth_hint(&img(0.0), 1.0).unwrap();
        assert!(empty.contains("no measurement"), "{empty}");
        // YCB-V depth (0.1 mm units) read as mm: 9000 mm.
        let far = super::depth_hint(&img(9000.0), 1.0).unwrap();
        assert!(far.contains("use depth_scale 0.1") && far.contains("900 mm"), "{far}");
        // LM depth (mm) read with YCB-V's 0.1: 90 mm.
        let near = super::depth_hint(&img(90.0), 0.1).unwrap();
        assert!(near.contains("use depth_scale 1 ") && near.contains("900 mm"), "{near}");
        // Nothing plausible within a factor of 100.
        assert!(!super::depth_hint(&img(1.0e7), 1.0).unwrap().contains("use depth_scale"));
    }

    use super::*;

    #[test]
    fn resize_identity_and_constant() {
        let src: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(resize_linear_cv(&src, 5, 4, 3, 5, 4), src);
        let flat = vec![77u8; 7 * 3 * 3];
        assert!(resize_linear_cv(&flat, 7, 3, 3, 224, 224).iter().all(|&v| v == 77));
    }

    use image::{GrayAlphaImage, GrayImage, ImageBuffer, Luma, LumaA, Rgb, Rgba, RgbaImage};
    use std::io::Cursor;

    fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn err_text<T: std::fmt::Debug>(r: Result<T, InputError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn rgb8_png_exact() {
        let img = RgbImage::from_fn(3, 2, |x, y| Rgb([x as u8 * 10, y as u8 * 20, 200]));
        let dec = decode_rgb(&encode(img.clone().into(), ImageFormat::Png), "a.png").unwrap();
        assert_eq!(dec, img);
    }

    #[test]
    fn rgba8_png_drops_alpha() {
        let img = RgbaImage::from_fn(2, 2, |x, y| Rgba([1 + x as u8, 2 + y as u8, 3, if x == 0 { 0 } else { 128 }]));
        let dec = decode_rgb(&encode(img.into(), ImageFormat::Png), "a.png").unwrap();
        assert_eq!(dec.dimensions(), (2, 2));
        // Alpha is dropped, not composited: colour values stay as written even where alpha=0.
        assert_eq!(dec.get_pixel(0, 0), &Rgb([1, 2, 3]));
        assert_eq!(dec.get_pixel(1, 1), &Rgb([2, 3, 3]));
    }

    #[test]
    fn grey_png_expands_to_rgb() {
        let img = GrayImage::from_fn(2, 1, |x, _| Luma([if x == 0 { 7 } else { 250 }]));
        let dec = decode_rgb(&encode(img.into(), ImageFormat::Png), "g.png").unwrap();
        assert_eq!(dec.get_pixel(0, 0), &Rgb([7, 7, 7]));
        assert_eq!(dec.get_pixel(1, 0), &Rgb([250, 250, 250]));

        let img = GrayAlphaImage::from_fn(2, 1, |x, _| LumaA([if x == 0 { 9 } else { 99 }, 17]));
        let dec = decode_rgb(&encode(img.into(), ImageFormat::Png), "ga.png").unwrap();
        assert_eq!(dec.get_pixel(0, 0), &Rgb([9, 9, 9]));
        assert_eq!(dec.get_pixel(1, 0), &Rgb([99, 99, 99]));
    }

    #[test]
    fn rgb16_png_scaled_to_8bit() {
        let img: ImageBuffer<Rgb<u16>, Vec<u16>> =
            ImageBuffer::from_fn(2, 1, |x, _| if x == 0 { Rgb([0, 65535, 257 * 100]) } else { Rgb([257, 514, 65535]) });
        let dec = decode_rgb(&encode(DynamicImage::ImageRgb16(img), ImageFormat::Png), "c16.png").unwrap();
        assert_eq!(dec.get_pixel(0, 0), &Rgb([0, 255, 100]));
        assert_eq!(dec.get_pixel(1, 0), &Rgb([1, 2, 255]));
    }

    #[test]
    fn jpeg_decodes() {
        // JPEG is lossy: a flat colour survives to within a few levels.
        let img = RgbImage::from_pixel(16, 8, Rgb([200, 100, 50]));
        let dec = decode_rgb(&encode(img.into(), ImageFormat::Jpeg), "a.jpg").unwrap();
        assert_eq!(dec.dimensions(), (16, 8));
        for p in dec.pixels() {
            for (got, want) in p.0.iter().zip([200u8, 100, 50]) {
                assert!(got.abs_diff(want) <= 3, "{:?}", p);
            }
        }
    }

    #[test]
    fn rgb_errors() {
        let msg = err_text(decode_rgb(b"", "empty.png"));
        assert!(msg.starts_with("empty.png: ") && msg.contains("empty"), "{msg}");
        let msg = err_text(decode_rgb(b"this is not an image at all", "notes.txt"));
        assert!(msg.starts_with("notes.txt: ") && msg.contains("not a readable PNG/JPEG image"), "{msg}");
        // A truncated PNG: recognised but undecodable; the decoder's message is included.
        let mut png = encode(RgbImage::from_pixel(8, 8, Rgb([1, 2, 3])).into(), ImageFormat::Png);
        png.truncate(40);
        let msg = err_text(decode_rgb(&png, "cut.png"));
        assert!(msg.starts_with("cut.png: not a readable PNG/JPEG image: ") && msg.len() > 45, "{msg}");
    }

    fn depth_png(w: u32, h: u32, vals: &[u16]) -> Vec<u8> {
        let img: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_raw(w, h, vals.to_vec()).unwrap();
        encode(DynamicImage::ImageLuma16(img), ImageFormat::Png)
    }

    #[test]
    fn depth_l16_scaled() {
        let bytes = depth_png(3, 2, &[0, 1, 1000, 12345, 65535, 0]);
        let d = decode_depth(&bytes, 0.1, "d.png").unwrap();
        assert_eq!((d.width, d.height), (3, 2));
        assert_eq!(d.mm, vec![0.0, 0.1, 100.0, 1234.5, 6553.5, 0.0]);
        assert_eq!(d.at(1, 1), 6553.5);
        assert_eq!(d.at(2, 1), 0.0);
        let d = decode_depth(&bytes, 1.0, "d.png").unwrap();
        assert_eq!(d.mm, vec![0.0, 1.0, 1000.0, 12345.0, 65535.0, 0.0]);
    }

    #[test]
    fn depth_wrong_formats_rejected() {
        let expect = |bytes: Vec<u8>, found: &str| {
            let msg = err_text(decode_depth(&bytes, 1.0, "depth.png"));
            assert_eq!(msg, format!("depth.png: depth must be a single-channel 16-bit PNG, got {found}"));
        };
        expect(encode(GrayImage::new(2, 2).into(), ImageFormat::Png), "8-bit grey");
        expect(encode(RgbImage::new(2, 2).into(), ImageFormat::Png), "8-bit RGB");
        expect(encode(RgbaImage::new(2, 2).into(), ImageFormat::Png), "8-bit RGBA");
        let rgb16: ImageBuffer<Rgb<u16>, Vec<u16>> = ImageBuffer::new(2, 2);
        expect(encode(DynamicImage::ImageRgb16(rgb16), ImageFormat::Png), "16-bit RGB");
        let rgba16: ImageBuffer<Rgba<u16>, Vec<u16>> = ImageBuffer::new(2, 2);
        expect(encode(DynamicImage::ImageRgba16(rgba16), ImageFormat::Png), "16-bit RGBA");
        expect(encode(RgbImage::new(8, 8).into(), ImageFormat::Jpeg), "a JPEG image");
    }

    #[test]
    fn depth_other_errors() {
        let msg = err_text(decode_depth(b"", 1.0, "d.png"));
        assert!(msg.starts_with("d.png: ") && msg.contains("empty"), "{msg}");
        let msg = err_text(decode_depth(b"garbage", 1.0, "d.png"));
        assert!(msg.contains("not a readable PNG/JPEG image"), "{msg}");
        let msg = err_text(decode_depth(&depth_png(1, 1, &[5]), 0.0, "d.png"));
        assert!(msg.contains("depth_scale must be a positive number"), "{msg}");
        // A zero-sized PNG is invalid; whichever layer catches it, it must be an error.
        let zero: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::new(0, 0);
        let mut out = Cursor::new(Vec::new());
        if DynamicImage::ImageLuma16(zero).write_to(&mut out, ImageFormat::Png).is_ok() {
            assert!(decode_depth(&out.into_inner(), 1.0, "z.png").is_err());
        }
    }

    #[test]
    fn same_size_check() {
        let rgb = RgbImage::new(640, 480);
        let depth = DepthMm { width: 640, height: 480, mm: vec![0.0; 640 * 480] };
        check_same_size(&rgb, &depth).unwrap();
        let small = DepthMm { width: 320, height: 240, mm: vec![0.0; 320 * 240] };
        let msg = err_text(check_same_size(&rgb, &small));
        assert!(
            msg.contains(
                "RGB is 640x480 but depth is 320x240: they must be the same size \
                 (the depth must be registered to the colour image)"
            ),
            "{msg}"
        );
    }
}
