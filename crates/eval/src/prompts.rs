//! Prompt following on `captioned-digits`: does a text-to-image model draw
//! the digits a prompt asks for, on the side it asks for, for pairs it saw
//! in training and for the held-out pairs it never saw together?
//!
//! A model trained on the `captioned-digits` source (32 x 32 grey canvases,
//! one digit in each 16-pixel half) is asked for "a L to the left of a R"
//! ([`prompt`]) for every held-out pair and as many seen ones
//! ([`default_pairs`]). Each sample is cut into its two halves, each half is
//! normalised as MNIST digits are (the ink box scaled to fit 20 x 20, its
//! centre of mass at the centre of 28 x 28; [`halves`]) and classified by
//! the bundled `digits` net (the classifier whose penultimate layer gives
//! the `FD-DIGITS` features; 98.4 % on held-out digits). [`Accuracy`]
//! counts the samples whose two digits are both right, whose left one is,
//! and whose right one is.
//!
//! The scorer itself is checked on real canvases (a test): the first 300
//! composed canvases of seen pairs score 94.0 % "both right" (97.3 % left,
//! 96.7 % right), of held-out pairs 96.7 % (99.3 %, 97.3 %); with their
//! halves swapped, only pairs of two equal digits stay right. The net gets
//! 99.6 % of the bundled digits as they are: scaling a digit into its half
//! (wide ones narrowed to 14 px) and back costs about 2 % a digit, so a
//! model's numbers are best read against these, not against 100 %.
//!
//! ```no_run
//! use eval::prompts::{default_pairs, evaluate, PairScorer, PromptOptions};
//! # fn sample(prompts: &[String], per_prompt: usize) -> eval::Result<tch::Tensor> { unimplemented!() }
//! let scorer = PairScorer::bundled(tch::Device::Cpu)?;
//! let (held_out, seen) = default_pairs();
//! let opts = PromptOptions { images_per_prompt: 8, ..PromptOptions::default() };
//! // `sample` returns [prompts x per_prompt, 1, 32, 32] in [-1, 1], p1, p1, p2, ...
//! let report = evaluate(&mut sample, &scorer, &seen, &held_out, &opts)?;
//! println!("{report}");
//! # Ok::<(), eval::Error>(())
//! ```

use std::fmt;

use data_pipeline::source::captioned_digits::{is_held_out, HELD_OUT_PAIRS};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::feature_net::FeatureNet;
use crate::{builtin, Error, Result};

/// Side of the classifier's input.
const NET_SIDE: i64 = 28;
/// Longest side of a digit's ink box in the classifier's input (MNIST's).
const BOX_SIDE: i64 = 20;
/// A pixel (in [-1, 1]) counts as ink from this value: a quarter of the way
/// from black to white, above a sample's background noise and below the
/// anti-aliased edge of a stroke.
pub const INK_THRESHOLD: f64 = -0.5;

/// A (left, right) pair of digits.
pub type Pair = (u8, u8);

/// The prompt for a (left, right) pair: `a 1 to the left of a 3`, `an 8 to
/// the left of a 4` (the article as the dataset's captions have it).
pub fn prompt(left: u8, right: u8) -> String {
    let article = |d: u8| if d == 8 { "an" } else { "a" };
    format!(
        "{} {left} to the left of {} {right}",
        article(left),
        article(right)
    )
}

/// The default pairs: the ten held-out pairs, and ten seen ones, `(d, d + 1
/// mod 10)`: every digit once on each side in both sets.
pub fn default_pairs() -> (Vec<Pair>, Vec<Pair>) {
    let seen = (0..10u8).map(|d| (d, (d + 1) % 10)).collect();
    (HELD_OUT_PAIRS.to_vec(), seen)
}

/// How often the digits of samples were right.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Accuracy {
    /// Samples scored.
    pub images: usize,
    /// Samples with both digits right.
    pub both: usize,
    /// Samples with the left digit right.
    pub left: usize,
    /// Samples with the right digit right.
    pub right: usize,
}

impl Accuracy {
    fn rate(k: usize, n: usize) -> f64 {
        if n == 0 {
            f64::NAN
        } else {
            k as f64 / n as f64
        }
    }

    /// Fraction with both digits right (NaN for no samples).
    pub fn both_rate(&self) -> f64 {
        Self::rate(self.both, self.images)
    }

    /// Fraction with the left digit right.
    pub fn left_rate(&self) -> f64 {
        Self::rate(self.left, self.images)
    }

    /// Fraction with the right digit right.
    pub fn right_rate(&self) -> f64 {
        Self::rate(self.right, self.images)
    }

    /// The counts of two sets together.
    pub fn merged(&self, other: &Accuracy) -> Accuracy {
        Accuracy {
            images: self.images + other.images,
            both: self.both + other.both,
            left: self.left + other.left,
            right: self.right + other.right,
        }
    }

    /// Counts and rates, as in the JSON report.
    pub fn to_json(&self) -> serde_json::Value {
        let r = |x: f64| if x.is_nan() { None } else { Some(x) };
        serde_json::json!({
            "images": self.images,
            "both_right": self.both,
            "left_right": self.left,
            "right_right": self.right,
            "both_right_rate": r(self.both_rate()),
            "left_right_rate": r(self.left_rate()),
            "right_right_rate": r(self.right_rate()),
        })
    }
}

/// Each image's two halves, normalised for a digits classifier: images
/// `[N, C, H, W]` in [-1, 1] (channels averaged to grey; `W` even) become
/// `[2N, 1, 28, 28]`, the left half of image `i` at `2i`, its right half at
/// `2i + 1`. In each half the box of the pixels from [`INK_THRESHOLD`] is
/// cut out, scaled (bilinear, antialiased) so that its longer side is 20
/// pixels, its brightest pixel stretched to white, and placed on a black 28
/// x 28 square with its centre of mass at the centre, as MNIST's digits
/// are; a half without ink stays black.
pub fn halves(images: &Tensor) -> Result<Tensor> {
    let size = images.size();
    if size.len() != 4 || size[3] % 2 != 0 || size[2] == 0 || size[3] == 0 {
        return Err(Error::Features(format!(
            "images of shape {size:?}: expected [N, C, H, W] with an even width"
        )));
    }
    let (n, h, w) = (size[0], size[2], size[3]);
    let grey = images
        .f_to_kind(Kind::Float)?
        .f_to_device(Device::Cpu)?
        .f_mean_dim(1, false, Kind::Float)?
        .f_contiguous()?;
    let pixels: Vec<f32> = Vec::<f32>::try_from(grey.f_view([-1])?)?;
    let half = w / 2;
    let out = Tensor::full(
        [2 * n, 1, NET_SIDE, NET_SIDE],
        -1.0,
        (Kind::Float, Device::Cpu),
    );
    for i in 0..n {
        for side in 0..2 {
            let x0 = side * half;
            let ink = |x: i64, y: i64| {
                f64::from(pixels[((i * h + y) * w + x0 + x) as usize]) >= INK_THRESHOLD
            };
            let (mut bx0, mut by0, mut bx1, mut by1) = (i64::MAX, i64::MAX, -1, -1);
            for y in 0..h {
                for x in 0..half {
                    if ink(x, y) {
                        (bx0, by0) = (bx0.min(x), by0.min(y));
                        (bx1, by1) = (bx1.max(x), by1.max(y));
                    }
                }
            }
            if bx1 < 0 {
                continue;
            }
            let (bw, bh) = (bx1 - bx0 + 1, by1 - by0 + 1);
            let crop = grey
                .f_narrow(0, i, 1)?
                .f_narrow(1, by0, bh)?
                .f_narrow(2, x0 + bx0, bw)?
                .f_unsqueeze(0)?;
            let scale = BOX_SIDE as f64 / bw.max(bh) as f64;
            let tw = ((bw as f64 * scale).round() as i64).clamp(1, BOX_SIDE);
            let th = ((bh as f64 * scale).round() as i64).clamp(1, BOX_SIDE);
            let scaled = crop
                .f_internal_upsample_bilinear2d_aa([th, tw], false, None, None)?
                .f_clamp(-1.0, 1.0)?;
            // The brightest pixel to white, as MNIST's strokes are.
            let peak = scaled.f_max()?.double_value(&[]);
            let scaled =
                ((scaled + 1.0) * (2.0 / (peak + 1.0).max(1e-3)) - 1.0).f_clamp(-1.0, 1.0)?;
            // Placed with its centre of mass at the centre, as MNIST's.
            let mass = (&scaled + 1.0).f_clamp_min(0.0)?;
            let total = mass.f_sum(Kind::Float)?.double_value(&[]).max(1e-6);
            let coords =
                |n: i64, shape: [i64; 4]| Tensor::arange(n, (Kind::Float, Device::Cpu)).view(shape);
            let cy = (&mass * coords(th, [1, 1, th, 1]))
                .f_sum(Kind::Float)?
                .double_value(&[])
                / total;
            let cx = (&mass * coords(tw, [1, 1, 1, tw]))
                .f_sum(Kind::Float)?
                .double_value(&[])
                / total;
            let centre = NET_SIDE as f64 / 2.0 - 0.5;
            let oy = ((centre - cy).round() as i64).clamp(0, NET_SIDE - th);
            let ox = ((centre - cx).round() as i64).clamp(0, NET_SIDE - tw);
            tch::no_grad(|| -> Result<()> {
                out.f_narrow(0, 2 * i + side, 1)?
                    .f_narrow(2, oy, th)?
                    .f_narrow(3, ox, tw)?
                    .f_copy_(&scaled)?;
                Ok(())
            })?;
        }
    }
    Ok(out)
}

/// Scores two-digit canvases with a digits classifier.
#[derive(Debug)]
pub struct PairScorer {
    net: FeatureNet,
}

impl PairScorer {
    /// The bundled `digits` net (on `device`).
    pub fn bundled(device: Device) -> Result<Self> {
        let name = "digits";
        let bytes = builtin::bytes(name).expect("the digits net is bundled");
        Self::new(FeatureNet::from_bytes(
            bytes,
            std::path::Path::new(name),
            device,
        )?)
    }

    /// A digits classifier: a feature net with ten classes, 0 to 9.
    pub fn new(net: FeatureNet) -> Result<Self> {
        let info = net.info();
        if info.num_classes != 10 || info.channels != 1 {
            return Err(Error::Parameter {
                name: "feature_net",
                value: info.name.clone(),
                expected: format!(
                    "a grey digits classifier with 10 classes (this one has {} channel(s), {} \
                     classes)",
                    info.channels, info.num_classes
                ),
            });
        }
        Ok(PairScorer { net })
    }

    /// The (left, right) digit the classifier sees in each image (`[N, C,
    /// H, W]` in [-1, 1]); `None` for a half without ink.
    pub fn classify(&self, images: &Tensor) -> Result<Vec<(Option<u8>, Option<u8>)>> {
        let x = halves(images)?;
        let n = x.size()[0];
        let mut predicted = Vec::with_capacity(n as usize);
        let device = self.net.var_store().device();
        // Batches of 512 halves keep memory flat for large sets.
        for start in (0..n).step_by(512) {
            let len = 512.min(n - start);
            let batch = x.f_narrow(0, start, len)?.f_to_device(device)?;
            let logits = tch::no_grad(|| self.net.forward_t(&batch, false).1);
            let arg = logits.f_argmax(1, false)?.f_to_device(Device::Cpu)?;
            predicted.extend(Vec::<i64>::try_from(arg)?);
        }
        let blank = x.f_amax([1, 2, 3], false)?.f_le(-1.0 + 1e-6)?;
        let blank = Vec::<bool>::try_from(blank)?;
        let digit = |k: usize| (!blank[k]).then_some(predicted[k] as u8);
        Ok((0..n as usize / 2)
            .map(|i| (digit(2 * i), digit(2 * i + 1)))
            .collect())
    }

    /// How many of `images` (`[N, C, H, W]` in [-1, 1]) show `pairs[i]`
    /// (left, right), on the left and on the right.
    pub fn score_pairs(&self, images: &Tensor, pairs: &[(u8, u8)]) -> Result<Accuracy> {
        let predicted = self.classify(images)?;
        if predicted.len() != pairs.len() {
            return Err(Error::Features(format!(
                "{} images but {} pairs",
                predicted.len(),
                pairs.len()
            )));
        }
        let mut acc = Accuracy::default();
        for (&(l, r), &(pl, pr)) in pairs.iter().zip(&predicted) {
            let (left, right) = (pl == Some(l), pr == Some(r));
            acc.images += 1;
            acc.left += usize::from(left);
            acc.right += usize::from(right);
            acc.both += usize::from(left && right);
        }
        Ok(acc)
    }
}

/// Draws samples for prompts: `[prompts.len() x images_per_prompt, C, H,
/// W]` in [-1, 1], each prompt's images together (p1, p1, p2, p2, ...).
/// Closures implement it.
pub trait PromptSampler {
    fn sample(&mut self, prompts: &[String], images_per_prompt: usize) -> Result<Tensor>;
}

impl<F: FnMut(&[String], usize) -> Result<Tensor>> PromptSampler for F {
    fn sample(&mut self, prompts: &[String], images_per_prompt: usize) -> Result<Tensor> {
        self(prompts, images_per_prompt)
    }
}

/// How a prompt evaluation samples (what the sampler was told; recorded
/// in the report).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptOptions {
    pub images_per_prompt: usize,
    pub guidance_scale: f64,
    pub seed: u64,
    /// The solver and its steps, as words (`dpm++2m, 25 steps`).
    pub solver: String,
}

impl Default for PromptOptions {
    fn default() -> Self {
        PromptOptions {
            images_per_prompt: 8,
            guidance_scale: 3.0,
            seed: 0,
            solver: "dpm++2m, 25 steps".into(),
        }
    }
}

/// The score of one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct PairScore {
    pub pair: (u8, u8),
    pub prompt: String,
    pub held_out: bool,
    pub accuracy: Accuracy,
}

/// What [`evaluate`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptReport {
    pub options: PromptOptions,
    /// Over the seen pairs' samples.
    pub seen: Accuracy,
    /// Over the held-out pairs' samples.
    pub held_out: Accuracy,
    /// Per prompt, seen pairs first.
    pub per_pair: Vec<PairScore>,
}

impl PromptReport {
    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "options": self.options,
            "seen": self.seen.to_json(),
            "held_out": self.held_out.to_json(),
            "all": self.seen.merged(&self.held_out).to_json(),
            "per_pair": self.per_pair.iter().map(|p| serde_json::json!({
                "left": p.pair.0,
                "right": p.pair.1,
                "prompt": p.prompt,
                "held_out": p.held_out,
                "accuracy": p.accuracy.to_json(),
            })).collect::<Vec<_>>(),
        })
    }
}

impl fmt::Display for PromptReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "{} prompts \"a L to the left of a R\", {} image(s) each, seed {}, {}, guidance {}",
            self.per_pair.len(),
            o.images_per_prompt,
            o.seed,
            o.solver,
            o.guidance_scale
        )?;
        let pct = |x: f64| {
            if x.is_nan() {
                "-".to_string()
            } else {
                format!("{:.1} %", 100.0 * x)
            }
        };
        let row = |f: &mut fmt::Formatter<'_>, name: &str, a: &Accuracy| {
            writeln!(
                f,
                "{name:<24}{:>7}{:>12}{:>12}{:>12}",
                a.images,
                pct(a.both_rate()),
                pct(a.left_rate()),
                pct(a.right_rate())
            )
        };
        writeln!(
            f,
            "{:<24}{:>7}{:>12}{:>12}{:>12}",
            "pairs", "images", "both right", "left right", "right right"
        )?;
        for p in &self.per_pair {
            let tag = if p.held_out { "held out" } else { "seen" };
            row(
                f,
                &format!("  ({}, {}) {tag}", p.pair.0, p.pair.1),
                &p.accuracy,
            )?;
        }
        row(f, "seen", &self.seen)?;
        row(f, "held out", &self.held_out)?;
        let all = self.seen.merged(&self.held_out);
        write!(
            f,
            "{:<24}{:>7}{:>12}{:>12}{:>12}",
            "all",
            all.images,
            pct(all.both_rate()),
            pct(all.left_rate()),
            pct(all.right_rate())
        )
    }
}

/// Samples `options.images_per_prompt` images for the [`prompt`] of each
/// seen and held-out pair (in one call to `sampler`, seen pairs first) and
/// scores them. Whether a pair is held out is decided by the data set
/// (`(left + 3 right) % 10 == 0`), whatever list it is given in.
pub fn evaluate(
    sampler: &mut dyn PromptSampler,
    scorer: &PairScorer,
    seen: &[(u8, u8)],
    held_out: &[(u8, u8)],
    options: &PromptOptions,
) -> Result<PromptReport> {
    let pairs: Vec<(u8, u8)> = seen.iter().chain(held_out).copied().collect();
    if pairs.is_empty() || options.images_per_prompt == 0 {
        return Err(Error::Parameter {
            name: "images_per_prompt",
            value: options.images_per_prompt.to_string(),
            expected: "at least one pair and one image per prompt".into(),
        });
    }
    if let Some(&(l, r)) = pairs.iter().find(|(l, r)| *l > 9 || *r > 9) {
        return Err(Error::Parameter {
            name: "pairs",
            value: format!("({l}, {r})"),
            expected: "digits 0 to 9".into(),
        });
    }
    let prompts: Vec<String> = pairs.iter().map(|&(l, r)| prompt(l, r)).collect();
    let k = options.images_per_prompt;
    let images = sampler.sample(&prompts, k)?;
    let expected = (pairs.len() * k) as i64;
    if images.size().first() != Some(&expected) {
        return Err(Error::Features(format!(
            "the sampler returned images of shape {:?} for {} prompts x {k}: expected {expected} \
             images",
            images.size(),
            pairs.len()
        )));
    }
    let mut report = PromptReport {
        options: options.clone(),
        seen: Accuracy::default(),
        held_out: Accuracy::default(),
        per_pair: Vec::with_capacity(pairs.len()),
    };
    for (j, (&pair, prompt)) in pairs.iter().zip(prompts).enumerate() {
        let batch = images.f_narrow(0, (j * k) as i64, k as i64)?;
        let accuracy = scorer.score_pairs(&batch, &vec![pair; k])?;
        let held_out = is_held_out(pair.0, pair.1);
        let total = if held_out {
            &mut report.held_out
        } else {
            &mut report.seen
        };
        *total = total.merged(&accuracy);
        report.per_pair.push(PairScore {
            pair,
            prompt,
            held_out,
            accuracy,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use data_pipeline::source::captioned_digits::{
        Attributes, CaptionedDigits, Side, Size, Stroke,
    };
    use data_pipeline::source::Split;

    /// Canvases `[N, 1, 32, 32]` in [-1, 1].
    fn to_tensor(images: &[image::GrayImage]) -> Tensor {
        let data: Vec<f32> = images
            .iter()
            .flat_map(|im| im.as_raw().iter().map(|&p| f32::from(p) / 127.5 - 1.0))
            .collect();
        Tensor::from_slice(&data).view([images.len() as i64, 1, 32, 32])
    }

    /// The first `n` canvases of a split and their pairs.
    fn canvases(g: &CaptionedDigits, split: Split, n: usize) -> (Tensor, Vec<(u8, u8)>) {
        let items: Vec<_> = (0..n).map(|i| g.item(split, i)).collect();
        let images: Vec<_> = items.iter().map(|it| it.image.clone()).collect();
        let pairs = items.iter().map(|it| it.attributes.pair()).collect();
        (to_tensor(&images), pairs)
    }

    #[test]
    fn prompts_and_default_pairs() {
        assert_eq!(prompt(1, 3), "a 1 to the left of a 3");
        assert_eq!(prompt(8, 4), "an 8 to the left of a 4");
        let (held_out, seen) = default_pairs();
        assert_eq!(held_out.len(), 10);
        assert_eq!(seen.len(), 10);
        assert!(held_out.iter().all(|&(l, r)| is_held_out(l, r)));
        assert!(seen.iter().all(|&(l, r)| !is_held_out(l, r)));
        for pairs in [&held_out, &seen] {
            let mut lefts: Vec<u8> = pairs.iter().map(|p| p.0).collect();
            let mut rights: Vec<u8> = pairs.iter().map(|p| p.1).collect();
            lefts.sort_unstable();
            rights.sort_unstable();
            assert_eq!(lefts, (0..10).collect::<Vec<u8>>());
            assert_eq!(rights, (0..10).collect::<Vec<u8>>());
        }
    }

    #[test]
    fn halves_are_centred_digits_and_blank_halves_stay_black() {
        // A 6 x 10 white block in the right half only.
        let mut img = image::GrayImage::new(32, 32);
        for y in 11..21 {
            for x in 21..27 {
                img.put_pixel(x, y, image::Luma([255]));
            }
        }
        let h = halves(&to_tensor(&[img])).unwrap();
        assert_eq!(h.size(), [2, 1, 28, 28]);
        assert_eq!(h.get(0).max().double_value(&[]), -1.0, "left is blank");
        // The block becomes 12 x 20, centred: columns 8..20, rows 4..24.
        let right = h.get(1).get(0);
        let ink = right.gt(0.0).to_kind(Kind::Float);
        assert_eq!(ink.sum(Kind::Float).double_value(&[]), 12.0 * 20.0);
        assert!(right.double_value(&[14, 14]) > 0.99);
        assert_eq!(right.double_value(&[3, 14]), -1.0);
        assert_eq!(right.double_value(&[14, 7]), -1.0);
        assert!(halves(&Tensor::zeros([1, 1, 32, 31], (Kind::Float, Device::Cpu))).is_err());
    }

    /// The scorer on real canvases: the first 300 of each split (seen pairs:
    /// the training split; held-out pairs: the test split), every size and
    /// stroke. Their digits are what the canvas says, so a correct scorer
    /// finds almost all; swapping the halves must break it.
    #[test]
    fn real_canvases_score_high_and_swapped_ones_do_not() {
        let g = CaptionedDigits::new().unwrap();
        let scorer = PairScorer::bundled(Device::Cpu).unwrap();
        for (split, name) in [(Split::Train, "seen"), (Split::Test, "held out")] {
            let (images, pairs) = canvases(&g, split, 300);
            let acc = scorer.score_pairs(&images, &pairs).unwrap();
            eprintln!(
                "real canvases, {name}: both {:.4}, left {:.4}, right {:.4} of {}",
                acc.both_rate(),
                acc.left_rate(),
                acc.right_rate(),
                acc.images
            );
            assert_eq!(acc.images, 300);
            assert!(acc.both_rate() >= 0.9, "{name}: {acc:?}");
            // The halves swapped: digits on the wrong side.
            let swapped = Tensor::cat(&[images.narrow(3, 16, 16), images.narrow(3, 0, 16)], 3);
            let bad = scorer.score_pairs(&swapped, &pairs).unwrap();
            let same = pairs.iter().filter(|(l, r)| l == r).count() as f64 / 300.0;
            assert!(bad.both_rate() <= same + 0.05, "{name} swapped: {bad:?}");
            // Blank canvases get nothing right.
            let blank = Tensor::full([3, 1, 32, 32], -1.0, (Kind::Float, Device::Cpu));
            let none = scorer.score_pairs(&blank, &pairs[..3]).unwrap();
            assert_eq!((none.both, none.left, none.right), (0, 0, 0));
        }
        let (images, pairs) = canvases(&g, Split::Test, 2);
        assert!(scorer.score_pairs(&images, &pairs[..1]).is_err());
    }

    /// A "model" that composes a real canvas of the pair its prompt names
    /// (sizes and strokes varied) scores near 100 % on seen and held-out
    /// pairs; one that ignores the prompt scores near chance.
    #[test]
    fn evaluate_splits_seen_and_held_out_and_can_fail() {
        let g = CaptionedDigits::new().unwrap();
        let scorer = PairScorer::bundled(Device::Cpu).unwrap();
        let by_prompt = |p: &str| {
            (0..100u8)
                .map(|k| (k / 10, k % 10))
                .find(|&(l, r)| prompt(l, r) == p)
                .unwrap()
        };
        let draw = |(l, r): (u8, u8), k: usize| {
            let side = |digit, j: usize| Side {
                digit,
                size: [Size::Large, Size::Small][j % 2],
                stroke: [Stroke::Thin, Stroke::Regular, Stroke::Thick][j % 3],
            };
            let a = Attributes {
                left: side(l, k),
                right: side(r, k + 1),
            };
            g.compose(&a, k as u64).image
        };
        let mut calls = 0;
        let mut faithful = |prompts: &[String], k: usize| -> Result<Tensor> {
            calls += 1;
            let images: Vec<_> = prompts
                .iter()
                .flat_map(|p| (0..k).map(move |j| (by_prompt(p), j)))
                .map(|(pair, j)| draw(pair, j))
                .collect();
            Ok(to_tensor(&images))
        };
        let (held_out, seen) = default_pairs();
        let opts = PromptOptions {
            images_per_prompt: 6,
            ..PromptOptions::default()
        };
        let report = evaluate(&mut faithful, &scorer, &seen, &held_out, &opts).unwrap();
        assert_eq!(calls, 1);
        assert_eq!((report.seen.images, report.held_out.images), (60, 60));
        assert_eq!(report.per_pair.len(), 20);
        assert!(report.per_pair[..10].iter().all(|p| !p.held_out));
        assert!(report.per_pair[10..].iter().all(|p| p.held_out));
        assert!(report.seen.both_rate() >= 0.9, "{report}");
        assert!(report.held_out.both_rate() >= 0.9, "{report}");
        let json = report.to_json();
        assert_eq!(json["held_out"]["images"], 60);
        assert_eq!(json["per_pair"][10]["prompt"], "a 0 to the left of a 0");
        let table = report.to_string();
        assert!(
            table.contains("held out") && table.contains("both right"),
            "{table}"
        );

        // Always a 2 then a 7, whatever the prompt: only the pairs with a 2
        // on the left or a 7 on the right get a side right.
        let mut stubborn = |prompts: &[String], k: usize| -> Result<Tensor> {
            let images: Vec<_> = (0..prompts.len() * k).map(|j| draw((2, 7), j)).collect();
            Ok(to_tensor(&images))
        };
        let report = evaluate(&mut stubborn, &scorer, &seen, &held_out, &opts).unwrap();
        assert!(report.held_out.both_rate() <= 0.05, "{report}");
        assert!(report.seen.both_rate() <= 0.05, "{report}");
        assert!(report.seen.left_rate() <= 0.2, "{report}");

        // A sampler returning the wrong number of images is an error.
        let mut short = |_: &[String], _: usize| -> Result<Tensor> {
            Ok(Tensor::zeros([3, 1, 32, 32], (Kind::Float, Device::Cpu)))
        };
        let err = evaluate(&mut short, &scorer, &seen, &held_out, &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected 120 images"), "{err}");
    }
}
