//! The reverse process as pictures: for a few images, x_t (as the model saw
//! it) and the predicted x_0 at evenly spaced steps.
//!
//! A `.png` trajectory is one grid: per image a row of x_t and below it a
//! row of predicted x_0, one column per recorded step (noisiest on the
//! left). A `.gif` trajectory is an animation with one frame per recorded
//! step, each showing x_t and x_0 side by side for every image.

use std::io::Cursor;
use std::path::Path;

use image::codecs::gif::{GifEncoder, Repeat};
use image::{imageops, Delay, Frame};
use tch::{Device, Kind, Tensor};
use tensor::image::{make_grid, save_image, tensor_to_image, BitDepth};

use crate::sample::StepInfo;
use crate::{Error, Result};

/// The picture formats a trajectory can be written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Gif,
}

impl Format {
    /// The format of `path` by its extension.
    pub fn of(path: &Path) -> Result<Self> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("png") => Ok(Format::Png),
            Some("gif") => Ok(Format::Gif),
            _ => Err(Error::Output {
                path: path.to_path_buf(),
                reason: "a trajectory is written as .png or .gif".into(),
            }),
        }
    }
}

/// Collects x_t and x_0 of the first images at chosen steps.
#[derive(Debug)]
pub struct Recorder {
    images: i64,
    steps: Vec<usize>,
    model_inputs: Vec<Tensor>,
    predictions: Vec<Tensor>,
}

impl Recorder {
    /// Records the first `images` samples at `frames` positions evenly
    /// spaced over `total` model evaluations (the first and last included).
    pub fn new(images: usize, frames: usize, total: usize) -> Self {
        let frames = frames.clamp(1, total.max(1));
        let mut steps: Vec<usize> = if frames == 1 {
            vec![total.saturating_sub(1)]
        } else {
            (0..frames)
                .map(|j| ((j * (total - 1)) as f64 / (frames - 1) as f64).round() as usize)
                .collect()
        };
        steps.dedup();
        Recorder {
            images: images.max(1) as i64,
            steps,
            model_inputs: Vec::new(),
            predictions: Vec::new(),
        }
    }

    /// The positions it records.
    pub fn steps(&self) -> &[usize] {
        &self.steps
    }

    /// Call from the sampling loop's progress callback.
    pub fn record(&mut self, info: &StepInfo<'_>) {
        if self.steps.contains(&info.index) {
            let k = self.images.min(info.model_input.size()[0]);
            let take = |t: &Tensor| {
                t.narrow(0, 0, k)
                    .to_device(Device::Cpu)
                    .to_kind(Kind::Float)
            };
            self.model_inputs.push(take(info.model_input));
            self.predictions.push(take(info.pred_original));
        }
    }

    /// Writes the trajectory as `.png` or `.gif` (by the extension).
    pub fn save(&self, path: &Path) -> Result<()> {
        if self.model_inputs.is_empty() {
            return Err(Error::Output {
                path: path.to_path_buf(),
                reason: "no step was recorded".into(),
            });
        }
        match Format::of(path)? {
            Format::Png => self.save_png(path),
            Format::Gif => self.save_gif(path),
        }
    }

    fn save_png(&self, path: &Path) -> Result<()> {
        let k = self.model_inputs[0].size()[0];
        let frames = self.model_inputs.len() as i64;
        let mut cells = Vec::new();
        for img in 0..k {
            cells.extend(self.model_inputs.iter().map(|t| t.get(img)));
            cells.extend(self.predictions.iter().map(|t| t.get(img)));
        }
        let grid = make_grid(&Tensor::stack(&cells, 0), frames, 2, 0.0)?;
        save_image(path, &grid, BitDepth::Eight)?;
        Ok(())
    }

    fn save_gif(&self, path: &Path) -> Result<()> {
        let fail = |reason: String| Error::Output {
            path: path.to_path_buf(),
            reason,
        };
        let mut frames = Vec::new();
        for (x_t, x0) in self.model_inputs.iter().zip(&self.predictions) {
            let k = x_t.size()[0];
            let cells: Vec<Tensor> = (0..k).flat_map(|i| [x_t.get(i), x0.get(i)]).collect();
            let grid = make_grid(&Tensor::stack(&cells, 0), 2, 2, 0.0)?;
            let rgba = tensor_to_image(&grid.narrow(0, 0, grid.size()[0].min(3)), BitDepth::Eight)?
                .to_rgba8();
            let scale = (256 / rgba.width().max(1)).max(1);
            let big = imageops::resize(
                &rgba,
                rgba.width() * scale,
                rgba.height() * scale,
                imageops::FilterType::Nearest,
            );
            frames.push(Frame::from_parts(
                big,
                0,
                0,
                Delay::from_numer_denom_ms(250, 1),
            ));
        }
        // Hold the last frame.
        if let Some(last) = frames.last().cloned() {
            frames.extend(std::iter::repeat_n(last, 4));
        }
        let mut bytes = Cursor::new(Vec::new());
        {
            let mut encoder = GifEncoder::new(&mut bytes);
            encoder
                .set_repeat(Repeat::Infinite)
                .map_err(|e| fail(e.to_string()))?;
            encoder
                .encode_frames(frames)
                .map_err(|e| fail(e.to_string()))?;
        }
        tensor::fs::write_bytes_atomic(path, bytes.get_ref())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evenly_spaced_steps_and_both_formats() {
        assert_eq!(Recorder::new(2, 5, 9).steps(), &[0, 2, 4, 6, 8]);
        assert_eq!(Recorder::new(2, 50, 3).steps(), &[0, 1, 2]);
        assert!(Format::of(Path::new("t.jpg")).is_err());
        let mut r = Recorder::new(2, 3, 3);
        let x = Tensor::rand([3, 1, 4, 4], (Kind::Float, Device::Cpu));
        for i in 0..3 {
            r.record(&StepInfo {
                index: i,
                total: 3,
                timestep: 0.0,
                model_input: &x,
                pred_original: &x,
                sample: &x,
            });
        }
        let dir = tempfile::tempdir().unwrap();
        for name in ["t.png", "t.gif"] {
            let p = dir.path().join(name);
            r.save(&p).unwrap();
            let img = image::open(&p).unwrap();
            assert!(img.width() >= 3 * 4 && img.height() >= 4 * 4, "{name}");
        }
    }
}
