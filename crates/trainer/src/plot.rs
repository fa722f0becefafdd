//! `loss.png`: the training loss against the step, redrawn as a run goes;
//! once evaluation has run, a second panel beside it shows the FD of each
//! evaluation against the step (lower is better).

use std::io::Cursor;
use std::ops::Range;
use std::path::Path;

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};
use plotters::coord::combinators::{LogCoord, WithKeyPoints};
use plotters::prelude::*;

use crate::run_dir::{read_fd, read_losses};
use crate::{Error, Result};

/// The size of one panel; with FD, two panels side by side.
const W: u32 = 900;
const H: u32 = 480;

const BLUE: RGBColor = RGBColor(0, 114, 178);
const ORANGE: RGBColor = RGBColor(213, 94, 0);

fn plot_error(e: impl std::fmt::Display) -> Error {
    Error::Setting {
        key: "loss.png".into(),
        reason: e.to_string(),
    }
}

/// Draws the losses of `metrics` (a `metrics.jsonl`) to `out`, atomically,
/// with the FD of its evaluations in a second panel when there are any.
/// Nothing is written while there are fewer than two loss points.
pub fn loss_curve(metrics: &Path, out: &Path) -> Result<()> {
    let points = read_losses(metrics);
    if points.len() < 2 {
        return Ok(());
    }
    let (fd, label) = read_fd(metrics);
    let width = if fd.is_empty() { W } else { 2 * W };
    schedule::plot::register_font()?;
    let mut rgb = vec![0u8; (width * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, H)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let max_step = points
            .iter()
            .chain(&fd)
            .map(|p| p.0)
            .max()
            .unwrap_or(1)
            .max(1);
        let steps = 0..max_step;
        if fd.is_empty() {
            panel(
                &root,
                "training loss",
                "loss (log scale)",
                steps,
                &points,
                BLUE,
            )?;
        } else {
            let panels = root.split_evenly((1, 2));
            panel(
                &panels[0],
                "training loss",
                "loss (log scale)",
                steps.clone(),
                &points,
                BLUE,
            )?;
            let name = format!("FD-{}", label.as_deref().unwrap_or("?"));
            let caption = format!("{name} of samples (lower is better)");
            let y_desc = format!("{name} (log scale)");
            panel(&panels[1], &caption, &y_desc, steps, &fd, ORANGE)?;
        }
        root.present().map_err(plot_error)?;
    }
    let mut png = Vec::new();
    PngEncoder::new(Cursor::new(&mut png))
        .write_image(&rgb, width, H, ExtendedColorType::Rgb8)
        .map_err(plot_error)?;
    tensor::fs::write_bytes_atomic(out, &png)?;
    Ok(())
}

/// One panel: `points` (step, value > 0) on a log-scale value axis, as a
/// line with a dot at each point when there are few.
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    steps: Range<u64>,
    points: &[(u64, f64)],
    colour: RGBColor,
) -> Result<()> {
    let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let lo = lo.max(1e-6);
    let hi = hi.max(lo * 1.01).max(1e-5);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(steps, y_axis(lo * 0.9, hi * 1.1))
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(y_desc)
        .y_label_formatter(&|v| tick_label(*v))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(plot_error)?;
    let clamped = points.iter().map(|&(s, v)| (s, v.max(lo)));
    chart
        .draw_series(LineSeries::new(clamped.clone(), colour.stroke_width(2)))
        .map_err(plot_error)?;
    if points.len() <= 50 {
        chart
            .draw_series(clamped.map(|p| Circle::new(p, 4, colour.filled())))
            .map_err(plot_error)?;
    }
    Ok(())
}

/// A log-scale axis over `lo..hi` with ticks at round values
/// ([`log_ticks`]; plotters' own log axis puts ticks only at powers of ten,
/// so a range within one decade had none).
fn y_axis(lo: f64, hi: f64) -> WithKeyPoints<LogCoord<f64>> {
    let ticks = log_ticks(lo, hi);
    let light = decade_steps(lo, hi, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    (lo..hi)
        .log_scale()
        .with_key_points(ticks)
        .with_light_points(if light.len() <= 100 {
            light
        } else {
            Vec::new()
        })
}

/// Round values in `lo..=hi` (0 < lo < hi) for the ticks of a log axis,
/// 3 to 12 of them: powers of ten, else 1-2-5 steps, else 1..9 steps,
/// else (a range within two neighbouring such values) a linear 1-2-5 step.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    for mantissas in [
        &[1.0][..],
        &[1.0, 2.0, 5.0],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
    ] {
        let ticks = decade_steps(lo, hi, mantissas);
        if ticks.len() >= 3 {
            let every = ticks.len().div_ceil(12);
            return ticks.into_iter().step_by(every).collect();
        }
    }
    let raw = (hi - lo) / 4.0;
    let unit = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * unit)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * unit);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// `m * 10^k` for each mantissa `m` and every `k`, within `lo..=hi`, in order.
fn decade_steps(lo: f64, hi: f64, mantissas: &[f64]) -> Vec<f64> {
    let (k0, k1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    (k0..=k1)
        .flat_map(|k| mantissas.iter().map(move |m| m * 10f64.powi(k)))
        .filter(|v| (lo..=hi).contains(v))
        .collect()
}

/// A short axis label: at most three significant digits, no trailing
/// zeros, in scientific notation below 0.01 and from 100000 on: `0.6`,
/// `0.04`, `0.125`, `1500`, `1e-3`, `2.5e-4`, `1.2e5`.
pub(crate) fn tick_label(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v == 0.0 {
        return "0".into();
    }
    let exp = v.abs().log10().floor() as i32;
    if (-2..5).contains(&exp) {
        let decimals = (2 - exp).max(0) as usize;
        return trim_zeros(&format!("{v:.decimals$}"));
    }
    let text = format!("{v:.2e}");
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    format!("{}e{exponent}", trim_zeros(mantissa))
}

/// `0.600` -> `0.6`, `2.50` -> `2.5`, `10.00` -> `10`; integers unchanged.
fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_short() {
        let cases = [
            (0.6000000001, "0.6"),
            (0.6, "0.6"),
            (0.04, "0.04"),
            (0.04000000004, "0.04"),
            (0.05, "0.05"),
            (0.125, "0.125"),
            (0.1234567, "0.123"),
            (0.01, "0.01"),
            (0.001, "1e-3"),
            (0.0009999999, "1e-3"),
            (0.00025, "2.5e-4"),
            (1.0, "1"),
            (2.0000000001, "2"),
            (9.996, "10"),
            (12.5, "12.5"),
            (1500.0, "1500"),
            (123456.0, "1.23e5"),
            (0.0, "0"),
            (-0.5, "-0.5"),
        ];
        for (v, want) in cases {
            assert_eq!(tick_label(v), want, "{v}");
        }
        for k in -8..8 {
            let v = 3.0 * 10f64.powi(k) * (1.0 + 1e-10);
            assert!(tick_label(v).len() <= 5, "{v} -> {}", tick_label(v));
        }
    }

    #[test]
    fn log_axes_get_round_ticks_in_every_range() {
        let labels =
            |lo, hi| -> Vec<String> { log_ticks(lo, hi).into_iter().map(tick_label).collect() };
        // within one decade (where plotters' log axis drew no tick at all)
        assert_eq!(
            labels(0.149, 0.71),
            ["0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]
        );
        assert_eq!(labels(0.03, 0.7), ["0.05", "0.1", "0.2", "0.5"]);
        assert_eq!(labels(5e-5, 2.0), ["1e-4", "1e-3", "0.01", "0.1", "1"]);
        assert_eq!(labels(494.0, 611.0), ["500", "550", "600"]);
        assert_eq!(labels(0.612, 0.645), ["0.62", "0.63", "0.64"]);
        let many = log_ticks(1e-12, 1e12);
        assert!((3..=12).contains(&many.len()), "{many:?}");
    }

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
        // Evaluations add the FD panel beside the loss.
        for (s, fd) in [(100, 80.0), (190, 35.5)] {
            crate::run_dir::append_metrics(
                &m,
                &serde_json::json!({"step": s, "eval": {"feature_net": "DIGITS", "fd": fd}}),
            )
            .unwrap();
        }
        loss_curve(&m, &out).unwrap();
        let img = image::open(&out).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (2 * W, H));
        let orange = img.pixels().filter(|p| p.0 == [213, 94, 0]).count();
        assert!(orange > 100, "the FD curve is drawn ({orange} pixels)");
    }
}
