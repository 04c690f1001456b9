//! A 3x5 pixel font for the digits and a few signs, enough to label charts and legends
//! without a font file.

/// Rows of a glyph, 3 bits each (the high bit is the left pixel).
fn glyph(ch: char) -> Option<[u8; 5]> {
    Some(match ch {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        ' ' => [0, 0, 0, 0, 0],
        _ => return None,
    })
}

/// Draws `text` with its top-left corner at (x, y), each font pixel `scale` pixels wide.
/// Characters the font lacks are skipped.
pub fn draw_text(
    img: &mut image::RgbImage,
    x: u32,
    y: u32,
    text: &str,
    colour: image::Rgb<u8>,
    scale: u32,
) {
    for (i, ch) in text.chars().enumerate() {
        let Some(rows) = glyph(ch) else { continue };
        let x0 = x + i as u32 * 4 * scale;
        for (r, bits) in rows.iter().enumerate() {
            for c in 0..3 {
                if bits & (4 >> c) != 0 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let (px, py) = (x0 + c * scale + dx, y + r as u32 * scale + dy);
                            if px < img.width() && py < img.height() {
                                img.put_pixel(px, py, colour);
                            }
                        }
                    }
                }
            }
        }
    }
}
