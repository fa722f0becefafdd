//! Writes `assets/captions-tiny/`, the captioned image folder of the
//! `captions-tiny` training preset: 96 pictures of 16x16 pixels, a red,
//! green, blue or yellow square, circle or triangle on black at one of
//! eight places and sizes, with a `metadata.jsonl` whose captions name the
//! colour and the shape (two wordings each, one picked per epoch).
//!
//! ```sh
//! cargo run -p trainer --example make_captions_tiny            # into assets/captions-tiny
//! cargo run -p trainer --example make_captions_tiny -- OUT_DIR
//! ```
//!
//! The output is a pure function of this file (no random numbers), so the
//! committed folder is reproduced byte for byte.

use std::io::Write;
use std::path::PathBuf;

const COLOURS: [(&str, [u8; 3]); 4] = [
    ("red", [220, 40, 40]),
    ("green", [40, 190, 60]),
    ("blue", [50, 80, 230]),
    ("yellow", [230, 210, 40]),
];
const SHAPES: [&str; 3] = ["square", "circle", "triangle"];
const SIZE: u32 = 16;

/// Whether pixel (x, y) is inside `shape` of half-width `r` centred at (cx, cy).
fn inside(shape: &str, x: f64, y: f64, cx: f64, cy: f64, r: f64) -> bool {
    let (dx, dy) = (x - cx, y - cy);
    match shape {
        "square" => dx.abs() <= r && dy.abs() <= r,
        "circle" => dx * dx + dy * dy <= r * r,
        // pointing up: the half-width grows from 0 at the top to r at the bottom
        _ => dy.abs() <= r && dx.abs() <= (dy + r) / 2.0,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/captions-tiny")
        });
    std::fs::create_dir_all(&out)?;
    let mut meta = std::fs::File::create(out.join("metadata.jsonl"))?;
    let mut n = 0;
    for (colour, rgb) in COLOURS {
        for shape in SHAPES {
            for k in 0..8u32 {
                // eight placements: the centre moves on a 3x3 lattice (minus
                // one), the size alternates between 4.5 and 5.5 px half-width
                let (cx, cy) = (5.5 + 2.5 * (k % 3) as f64, 5.5 + 2.5 * (k / 3 % 3) as f64);
                let r = if k % 2 == 0 { 4.5 } else { 3.5 };
                let img = image::RgbImage::from_fn(SIZE, SIZE, |x, y| {
                    let on = inside(shape, x as f64 + 0.5, y as f64 + 0.5, cx, cy, r);
                    image::Rgb(if on { rgb } else { [0, 0, 0] })
                });
                let name = format!("{colour}-{shape}-{k}.png");
                img.save(out.join(&name))?;
                writeln!(
                    meta,
                    "{{\"file_name\": \"{name}\", \"text\": [\"a {colour} {shape}\", \"{colour} {shape} on black\"]}}"
                )?;
                n += 1;
            }
        }
    }
    println!("wrote {n} images and metadata.jsonl to {}", out.display());
    Ok(())
}
