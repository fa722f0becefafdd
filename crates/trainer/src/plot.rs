//! `loss.png`: the training loss against the step, redrawn as a run goes.

use std::io::Cursor;
use std::path::Path;

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};
use plotters::prelude::*;

use crate::run_dir::read_losses;
use crate::{Error, Result};

const W: u32 = 900;
const H: u32 = 480;

fn plot_error(e: impl std::fmt::Display) -> Error {
    Error::Setting {
        key: "loss.png".into(),
        reason: e.to_string(),
    }
}

/// Draws the losses of `metrics` (a `metrics.jsonl`) to `out`, atomically.
/// Nothing is written while there are fewer than two points.
pub fn loss_curve(metrics: &Path, out: &Path) -> Result<()> {
    let points = read_losses(metrics);
    if points.len() < 2 {
        return Ok(());
    }
    schedule::plot::register_font()?;
    let mut rgb = vec![0u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let max_step = points.last().map(|p| p.0).unwrap_or(1).max(1);
        let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
        let (lo, hi) = (lo.max(1e-6), hi.max(lo * 1.01).max(1e-5));
        let mut chart = ChartBuilder::on(&root)
            .caption("training loss", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0u64..max_step, (lo * 0.9..hi * 1.1).log_scale())
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss (log scale)")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                RGBColor(0, 114, 178).stroke_width(2),
            ))
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    let mut png = Vec::new();
    PngEncoder::new(Cursor::new(&mut png))
        .write_image(&rgb, W, H, ExtendedColorType::Rgb8)
        .map_err(plot_error)?;
    tensor::fs::write_bytes_atomic(out, &png)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_from_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("metrics.jsonl");
        let out = dir.path().join("loss.png");
        crate::run_dir::append_metrics(&m, &serde_json::json!({"step": 10, "loss": 0.5})).unwrap();
        loss_curve(&m, &out).unwrap();
        assert!(!out.exists(), "one point draws nothing");
        for s in 2..20 {
            crate::run_dir::append_metrics(
                &m,
                &serde_json::json!({"step": s * 10, "loss": 1.0 / s as f64}),
            )
            .unwrap();
        }
        loss_curve(&m, &out).unwrap();
        let img = image::open(&out).unwrap();
        assert_eq!((img.width(), img.height()), (W, H));
    }
}
