//! A built-in 5×7 bitmap font (digits, upper-case letters, a little punctuation) for labels
//! on overlays: no font files or crates, and the same pixels on every machine.
use image::{Rgb, RgbImage};

/// Glyph cell: 5 columns × 7 rows, plus one blank column between characters.
pub const GLYPH_W: u32 = 5;
pub const GLYPH_H: u32 = 7;
const ADVANCE: u32 = GLYPH_W + 1;

/// Rows top to bottom; bit 4 is the leftmost column. Lower-case letters use the upper-case
/// glyphs; anything else is drawn as '?'.
pub fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        ' ' => [0; 7],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '#' => [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04],
    }
}

/// Size in pixels of `text` drawn at integer `scale` (one glyph pixel = scale × scale).
pub fn text_size(text: &str, scale: u32) -> (u32, u32) {
    let n = text.chars().count() as u32;
    let w = if n == 0 { 0 } else { n * ADVANCE - 1 };
    (w * scale, GLYPH_H * scale)
}

/// Draws `text` with its top-left corner at (x, y); whatever falls outside the image is
/// clipped, so any position is safe.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32, color: Rgb<u8>) {
    let s = scale.max(1) as i64;
    let (w, h) = (img.width() as i64, img.height() as i64);
    for (i, c) in text.chars().enumerate() {
        let gx = x + i as i64 * ADVANCE as i64 * s;
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..GLYPH_W as i64 {
                if bits & (0x10 >> col) == 0 {
                    continue;
                }
                for dy in 0..s {
                    for dx in 0..s {
                        let (px, py) = (gx + col * s + dx, y + row as i64 * s + dy);
                        if px >= 0 && py >= 0 && px < w && py < h {
                            img.put_pixel(px as u32, py as u32, color);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INK: Rgb<u8> = Rgb([255, 255, 255]);

    /// The drawn pixels as '#'/'.' rows, for readable comparisons.
    fn ascii(img: &RgbImage) -> Vec<String> {
        (0..img.height()).map(|y| (0..img.width()).map(|x| if img.get_pixel(x, y).0 == INK.0 { '#' } else { '.' }).collect()).collect()
    }

    #[test]
    fn digits_render_pixel_exact() {
        let (w, h) = text_size("0.67", 1);
        assert_eq!((w, h), (23, 7));
        let mut img = RgbImage::new(w, h);
        draw_text(&mut img, 0, 0, "0.67", 1, INK);
        let expected = [
            ".###..........##..#####",
            "#...#........#........#",
            "#..##.......#........#.",
            "#.#.#.......####....#..",
            "##..#.......#...#..#...",
            "#...#..##...#...#..#...",
            ".###...##....###...#...",
        ];
        assert_eq!(ascii(&img), expected);
    }

    #[test]
    fn every_digit_has_its_own_bitmap_and_scale_multiplies_pixels() {
        let digits: Vec<[u8; 7]> = ('0'..='9').map(glyph).collect();
        for i in 0..10 {
            assert!(digits[i].iter().any(|&r| r != 0), "digit {i} is blank");
            for j in i + 1..10 {
                assert_ne!(digits[i], digits[j], "digits {i} and {j} look the same");
            }
        }
        let mut one = RgbImage::new(5, 7);
        draw_text(&mut one, 0, 0, "8", 1, INK);
        let mut two = RgbImage::new(10, 14);
        draw_text(&mut two, 0, 0, "8", 2, INK);
        let count = |img: &RgbImage| img.pixels().filter(|p| p.0 == INK.0).count();
        assert_eq!(count(&two), 4 * count(&one));
        assert!(count(&one) > 10);
    }

    #[test]
    fn text_outside_the_image_is_clipped_without_panicking() {
        let mut img = RgbImage::new(8, 8);
        for (x, y) in [(-3, -3), (6, 6), (-1000, 5), (i64::MAX / 4, 0), (i64::MIN / 4, i64::MIN / 4)] {
            draw_text(&mut img, x, y, "0.99 OK?", 2, INK);
        }
        assert!(img.pixels().any(|p| p.0 == INK.0));
    }
}
