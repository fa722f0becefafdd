//! Draws the first 16 canvases of the `captioned-digits` training split as a
//! 4 x 4 grid (each canvas 4x enlarged) and prints their captions:
//!
//! ```text
//! cargo run -p data-pipeline --example captioned_digits_grid -- assets/docs/captioned-digits.png
//! ```

use data_pipeline::source::{CaptionOptions, OpenOptions, SourceSpec};
use image::{imageops, GrayImage, Luma};

const COLUMNS: u32 = 4;
const ZOOM: u32 = 4;
const GAP: u32 = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "captioned-digits.png".to_string());
    let dataset = "captioned-digits"
        .parse::<SourceSpec>()?
        .open_with_captions(&OpenOptions::default(), &CaptionOptions::default())?;
    let (w, h) = dataset.size(0);
    let (tw, th) = (w * ZOOM, h * ZOOM);
    let count: u32 = 16;
    let rows = count.div_ceil(COLUMNS);
    let mut grid = GrayImage::from_pixel(
        COLUMNS * (tw + GAP) + GAP,
        rows * (th + GAP) + GAP,
        Luma([96]),
    );
    for i in 0..count {
        let tile = dataset.image(i as usize)?.to_luma8();
        let tile = imageops::resize(&tile, tw, th, imageops::FilterType::Nearest);
        let (x, y) = (
            GAP + (i % COLUMNS) * (tw + GAP),
            GAP + (i / COLUMNS) * (th + GAP),
        );
        imageops::replace(&mut grid, &tile, i64::from(x), i64::from(y));
        // The most detailed caption (template 0) names sizes and strokes.
        println!("{i:2}: {}", dataset.captions(i as usize)[0]);
    }
    grid.save(&out)?;
    println!("wrote {out}");
    Ok(())
}
