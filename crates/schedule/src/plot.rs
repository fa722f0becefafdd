//! A picture of noise schedules: alpha_bar_t (how much of the clean signal
//! x_t still carries) and log-SNR_t against the timestep t, one curve per
//! schedule, side by side, as a PNG.
//!
//! Text is drawn with the DejaVu Sans font bundled in `assets/fonts` (no
//! system fonts needed); the file is written atomically.

use std::io::Cursor;
use std::path::Path;
use std::sync::OnceLock;

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{imageops, ExtendedColorType, ImageEncoder, RgbImage};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use crate::schedule::Schedule;
use crate::{Error, Result};

/// DejaVu Sans 2.37 (Bitstream Vera licence; see `assets/README.md`).
static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// The font family name every text element uses.
const FAMILY: &str = "sans-serif";

/// The picture is drawn this many times larger and scaled down, which
/// smooths the lines (the bitmap backend does not anti-alias them).
const SUPERSAMPLE: u32 = 2;

/// Okabe & Ito's colour-blind-safe palette (without its yellow).
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// Size and title of a schedule plot.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotOptions {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The title above both panels; `None` names the number of timesteps.
    pub title: Option<String>,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            width: 1280,
            height: 520,
            title: None,
        }
    }
}

/// Draws `schedules` (label, schedule) as a PNG and returns its bytes.
pub fn render_png(schedules: &[(String, Schedule)], options: &PlotOptions) -> Result<Vec<u8>> {
    if schedules.is_empty() {
        return Err(Error::Plot("no schedule to draw".to_string()));
    }
    if options.width < 400 || options.height < 250 {
        return Err(Error::Plot(format!(
            "{}x{} pixels is too small: at least 400x250",
            options.width, options.height
        )));
    }
    register_font()?;
    let (w, h) = (options.width, options.height);
    let (big_w, big_h) = (w * SUPERSAMPLE, h * SUPERSAMPLE);
    let mut big = vec![0u8; big_w as usize * big_h as usize * 3];
    draw(&mut big, (big_w, big_h), schedules, options).map_err(|e| Error::Plot(e.to_string()))?;
    let big = RgbImage::from_raw(big_w, big_h, big)
        .ok_or_else(|| Error::Plot("drawing buffer has the wrong size".to_string()))?;
    let rgb = imageops::resize(&big, w, h, imageops::FilterType::Triangle).into_raw();
    let mut png = Vec::new();
    PngEncoder::new_with_quality(
        Cursor::new(&mut png),
        CompressionType::Best,
        FilterType::Adaptive,
    )
    .write_image(&rgb, w, h, ExtendedColorType::Rgb8)
    .map_err(|e| Error::Plot(format!("encoding the PNG: {e}")))?;
    Ok(png)
}

/// Draws `schedules` and writes the PNG to `path` atomically.
pub fn save_png(
    path: impl AsRef<Path>,
    schedules: &[(String, Schedule)],
    options: &PlotOptions,
) -> Result<()> {
    let png = render_png(schedules, options)?;
    tensor::fs::write_bytes_atomic(path.as_ref(), &png)?;
    tracing::info!(path = %path.as_ref().display(), bytes = png.len(), "wrote schedule plot");
    Ok(())
}

/// Registers the bundled font as plotters' `sans-serif` (once per process),
/// for other plots of the toolkit (e.g. the trainer's loss curve).
pub fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::Plot(
            "the bundled font could not be read".to_string(),
        ))
    }
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Scales a size given for the final picture to the drawing buffer.
fn px(v: u32) -> u32 {
    v * SUPERSAMPLE
}

fn draw(
    rgb: &mut [u8],
    (w, h): (u32, u32),
    schedules: &[(String, Schedule)],
    options: &PlotOptions,
) -> DrawResult {
    let root = BitMapBackend::with_buffer(rgb, (w, h)).into_drawing_area();
    root.fill(&WHITE)?;
    let lengths: Vec<usize> = schedules
        .iter()
        .map(|(_, s)| s.num_train_timesteps())
        .collect();
    let t_max = lengths.iter().copied().max().unwrap_or(2);
    let title = options.title.clone().unwrap_or_else(|| {
        if lengths.iter().all(|&n| n == t_max) {
            format!("Noise schedules over T = {t_max} training steps")
        } else {
            "Noise schedules".to_string()
        }
    });
    // The title gets a band of its own, centred in it.
    let (header, body) = root.split_vertically(px(46));
    let style = (FAMILY, px(26))
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Center));
    header.draw_text(&title, &style, ((w / 2) as i32, px(26) as i32))?;
    let (left, right) = body.split_horizontally(w / 2);

    let alpha_bar: Vec<(String, &[f64])> = schedules
        .iter()
        .map(|(label, s)| (label.clone(), s.alphas_cumprod()))
        .collect();
    panel(
        &left,
        &alpha_bar,
        t_max,
        "Signal kept: ᾱ_t, in x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε",
        "ᾱ_t  (1 = all signal, 0 = pure noise)",
        0.0..1.01,
        None,
    )?;

    let (lo, hi) = finite_range(schedules.iter().flat_map(|(_, s)| s.log_snr().iter()));
    let pad = 0.05 * (hi - lo).max(1.0);
    // Zero terminal SNR puts the last step at -inf, off any chart: say so.
    let log_snr: Vec<(String, &[f64])> = schedules
        .iter()
        .map(|(label, s)| {
            let v = s.log_snr();
            let label = match v.iter().rposition(|x| *x == f64::NEG_INFINITY) {
                Some(t) => format!("{label} (−∞ at t = {t})"),
                None => label.clone(),
            };
            (label, v)
        })
        .collect();
    panel(
        &right,
        &log_snr,
        t_max,
        "Signal-to-noise ratio: log SNR_t = ln(ᾱ_t / (1−ᾱ_t))",
        "log SNR_t",
        (lo - pad).min(-1.0)..(hi + pad).max(1.0),
        Some((0.0, "SNR = 1: as much noise as signal")),
    )?;
    root.present()?;
    Ok(())
}

/// One chart: a curve per (label, values over t), and an optional dashed
/// reference line at a y value.
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    series: &[(String, &[f64])],
    t_max: usize,
    caption: &str,
    y_desc: &str,
    y_range: std::ops::Range<f64>,
    reference: Option<(f64, &str)>,
) -> DrawResult {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, px(18)))
        .margin(px(18))
        .x_label_area_size(px(48))
        .y_label_area_size(px(64))
        .build_cartesian_2d(0.0..(t_max - 1) as f64, y_range)?;
    chart
        .configure_mesh()
        .x_desc("timestep t  (0 = clean data, T−1 = noise)")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{}", (y * 100.0).round() / 100.0))
        .label_style((FAMILY, px(14)))
        .axis_desc_style((FAMILY, px(16)))
        .axis_style(BLACK.mix(0.8).stroke_width(px(1)))
        .bold_line_style(BLACK.mix(0.12).stroke_width(px(1)))
        .light_line_style(BLACK.mix(0.04))
        .draw()?;
    if let Some((y, label)) = reference {
        let grey = BLACK.mix(0.45);
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, y), ((t_max - 1) as f64, y)],
                px(6),
                px(4),
                grey.stroke_width(px(1)),
            ))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + px(24) as i32, y)],
                    grey.stroke_width(px(1)),
                )
            });
    }
    for (i, (label, values)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points = values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(t, &v)| (t as f64, v));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(px(2))))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + px(24) as i32, y)],
                    color.stroke_width(px(3)),
                )
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .margin(px(10))
        .legend_area_size(px(30))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .label_font((FAMILY, px(14)))
        .draw()?;
    Ok(())
}

/// The smallest and largest finite values (0 and 1 when there are none).
fn finite_range<'a>(values: impl Iterator<Item = &'a f64>) -> (f64, f64) {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc: Option<(f64, f64)>, &v| {
            Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
        })
        .unwrap_or((0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BetaSchedule;

    #[test]
    fn draws_a_png_with_every_schedule() {
        let lin = Schedule::new(BetaSchedule::Linear, 200, 1e-4, 0.02).unwrap();
        let cos = Schedule::new(BetaSchedule::SquaredcosCapV2, 200, 1e-4, 0.02).unwrap();
        let zero = lin.rescaled_zero_terminal_snr().unwrap();
        let series = vec![
            ("linear".to_string(), lin),
            ("cosine".to_string(), cos),
            ("linear, zero terminal SNR".to_string(), zero),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.png");
        save_png(&path, &series, &PlotOptions::default()).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (1280, 520));
        // Curves in the palette's first colours were drawn, and text (dark
        // anti-aliased pixels) too.
        let has = |c: RGBColor| img.pixels().any(|p| p.0 == [c.0, c.1, c.2]);
        assert!(has(PALETTE[0]) && has(PALETTE[1]) && has(PALETTE[2]));
        let dark = img.pixels().filter(|p| p.0.iter().all(|&v| v < 60)).count();
        assert!(dark > 2000, "{dark} dark pixels: no text?");
    }

    #[test]
    fn empty_and_tiny_plots_are_errors() {
        assert!(render_png(&[], &PlotOptions::default()).is_err());
        let s = Schedule::new(BetaSchedule::Linear, 10, 1e-4, 0.02).unwrap();
        let tiny = PlotOptions {
            width: 10,
            height: 10,
            title: None,
        };
        assert!(render_png(&[("a".into(), s)], &tiny).is_err());
    }
}
