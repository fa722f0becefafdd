//! `captioned-digits`: a bundled text-to-image set for CPU demos. Each
//! canvas shows two of the bundled MNIST digits side by side, and its
//! captions say which digits, in which order, how large and how thick.
//!
//! Training canvas 4, every second row (`#` ink, `+` its edge):
//!
//! ```text
//!  x: 0              16              32     32 x 32, 8-bit grey, black ground
//! +----------------+----------------+
//! |                |                |
//! |                |                |       left half x < 16, right half x >= 16;
//! |      +##       |                |       each digit's ink box is centred in
//! |     ####       |                |       its half, scaled to 24 px high
//! |   +###+        |           #+   |       (large) or 14 px (small), and at
//! |  +###          |     +##   ##   |       most 14 px wide (wider digits are
//! | +##+      ++   |    +###  +##   |       narrowed)
//! | ##+    ++###+  |   ###+   ###   |
//! | #+    ######## | +############  |
//! | #+   +##++  ## | +#####+####++  |
//! | ###++##    +## |       +##+     |
//! | #############+ |       ##+      |
//! |  +##########+  |                |
//! |    +######+    |                |
//! |                |                |
//! |                |                |
//! +----------------+----------------+
//! ```
//!
//! Every canvas has seven captions (see [`captions`]), one picked per epoch by
//! [`Dataset::caption`](super::Dataset::caption); those of the canvas above:
//!
//! ```text
//! a large 6 to the left of a small thick 4
//! a small thick 4 to the right of a large 6
//! a 6 and a 4
//! 4 on the right, 6 on the left
//! six and four
//! a large six next to a small thick four
//! the digits 6 and 4
//! ```
//!
//! **Attributes.** Each side of a canvas ([`Side`]) has a digit, a [`Size`]
//! (the height its ink box is scaled to) and a [`Stroke`]: the stroke width of
//! the source digit, measured from its pixels by [`stroke_width`] (twice the
//! ink area over the ink perimeter, about the width in pixels of a long
//! stroke), compared with the other bundled digits of its class: the thinnest
//! third of a class is [`Stroke::Thin`], the thickest third
//! [`Stroke::Thick`], the rest [`Stroke::Regular`] (no word in the caption).
//! Sizes and strokes are drawn uniformly, then a source digit of that class
//! and stroke third is drawn, so every attribute is what the pixels show.
//!
//! **Splits.** The ten (left, right) pairs with `(left + 3 * right) % 10 == 0`
//! are held out ([`HELD_OUT_PAIRS`]): (0,0), (1,3), (2,6), (3,9), (4,2),
//! (5,5), (6,8), (7,1), (8,4), (9,7). Every digit is in exactly one of them on
//! each side, so the training split (`captioned-digits`, [`TRAIN_LEN`]
//! canvases of the other 90 pairs, each 55 or 56 times) shows every digit on
//! both sides, and a model that draws a held-out pair from its caption has
//! composed it. `captioned-digits:test` has [`TEST_LEN`] canvases of the
//! held-out pairs only (100 each). Both splits draw their digits from all 5,000
//! bundled images; the split is over pairs, not over handwriting.
//!
//! **Labels.** None: the pair is not a class. The structured attributes of a
//! dataset item are [`Dataset::attributes`](super::Dataset::attributes); any
//! canvas, held out or not, can be made with [`CaptionedDigits::compose`].
//!
//! Everything is a pure function of the split and index (SplitMix64 streams
//! of a fixed seed), so the set is the same on every machine. Do not train
//! with `random_flip`: a mirrored canvas contradicts its caption (and mirrors
//! the digits).
//!
//! ```no_run
//! use data_pipeline::source::captioned_digits::{CaptionedDigits, HELD_OUT_PAIRS};
//! use data_pipeline::source::{OpenOptions, SourceSpec, CaptionOptions};
//! let train = "captioned-digits".parse::<SourceSpec>()?
//!     .open_with_captions(&OpenOptions::default(), &CaptionOptions::default())?;
//! let (epoch, seed) = (0, 42);
//! println!("{}: {}", train.describe(0), train.caption(0, epoch, seed).unwrap());
//! let attrs = train.attributes(0).unwrap();
//! assert!(!HELD_OUT_PAIRS.contains(&attrs.pair()));
//! // a held-out canvas, for evaluation
//! let gen = CaptionedDigits::new()?;
//! let item = gen.item(data_pipeline::source::Split::Test, 7);
//! println!("{:?}: {:?}", item.attributes, item.captions);
//! # Ok::<(), data_pipeline::Error>(())
//! ```

use image::imageops::{self, FilterType};
use image::GrayImage;
use serde::{Deserialize, Serialize};

use super::{bundled, Split};
use crate::rng::SplitMix64;
use crate::Result;

/// Width and height of a canvas, in pixels.
pub const CANVAS: u32 = 32;
/// Width of one half of a canvas: the left digit is centred in `x < HALF`,
/// the right one in `x >= HALF`.
pub const HALF: u32 = CANVAS / 2;
/// Height of a large digit's ink box on the canvas.
pub const LARGE_HEIGHT: u32 = 24;
/// Height of a small digit's ink box on the canvas.
pub const SMALL_HEIGHT: u32 = 14;
/// The widest a digit's ink box may be on the canvas (wider ones are
/// narrowed), leaving at least two pixels between the digits.
pub const MAX_WIDTH: u32 = HALF - 2;
/// Canvases in the training split (`captioned-digits`).
pub const TRAIN_LEN: usize = 5000;
/// Canvases in the held-out split (`captioned-digits:test`).
pub const TEST_LEN: usize = 1000;
/// Grey level from which a pixel counts as ink when measuring.
pub const INK: u8 = 128;

/// The (left, right) pairs never in the training split: `(l + 3 r) % 10 == 0`.
pub const HELD_OUT_PAIRS: [(u8, u8); 10] = [
    (0, 0),
    (1, 3),
    (2, 6),
    (3, 9),
    (4, 2),
    (5, 5),
    (6, 8),
    (7, 1),
    (8, 4),
    (9, 7),
];

/// The seed of every stream of this set.
const SEED: u64 = 0x19_c4b7_1d16_175e;
/// The source digits' ink box is found with this threshold (faint
/// anti-aliasing at the edges is kept inside it).
const BOX_THRESHOLD: u8 = 16;
/// Consecutive training items step through the 90 pairs by this stride
/// (coprime with 90), so that neighbours differ.
const TRAIN_STRIDE: usize = 37;
/// Same for the 10 held-out pairs.
const TEST_STRIDE: usize = 3;

const WORDS: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// Whether (left, right) is one of the [`HELD_OUT_PAIRS`].
pub fn is_held_out(left: u8, right: u8) -> bool {
    (u32::from(left) + 3 * u32::from(right)) % 10 == 0
}

/// The 90 (left, right) pairs of the training split, in order.
pub fn training_pairs() -> Vec<(u8, u8)> {
    (0..10u8)
        .flat_map(|l| (0..10u8).map(move |r| (l, r)))
        .filter(|&(l, r)| !is_held_out(l, r))
        .collect()
}

/// How tall a digit is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    /// Ink box [`SMALL_HEIGHT`] px high.
    Small,
    /// Ink box [`LARGE_HEIGHT`] px high.
    Large,
}

impl Size {
    /// The height of the ink box on the canvas.
    pub fn height(self) -> u32 {
        match self {
            Size::Small => SMALL_HEIGHT,
            Size::Large => LARGE_HEIGHT,
        }
    }

    /// The caption word.
    pub fn word(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }
}

/// How thick a digit's strokes are, relative to the bundled digits of its
/// class (by [`stroke_width`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stroke {
    /// The thinnest third of the class.
    Thin,
    /// The middle third (not mentioned in captions).
    Regular,
    /// The thickest third of the class.
    Thick,
}

impl Stroke {
    /// The caption word (`None` for [`Stroke::Regular`]).
    pub fn word(self) -> Option<&'static str> {
        match self {
            Stroke::Thin => Some("thin"),
            Stroke::Regular => None,
            Stroke::Thick => Some("thick"),
        }
    }
}

/// One side of a canvas: what is drawn there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Side {
    /// 0 to 9.
    pub digit: u8,
    pub size: Size,
    pub stroke: Stroke,
}

/// What a canvas shows, for captions and for scoring samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attributes {
    pub left: Side,
    pub right: Side,
}

impl Attributes {
    /// The (left, right) digits.
    pub fn pair(&self) -> (u8, u8) {
        (self.left.digit, self.right.digit)
    }

    /// Whether the pair is held out of training.
    pub fn is_held_out(&self) -> bool {
        is_held_out(self.left.digit, self.right.digit)
    }
}

/// Where one digit of a composed canvas comes from and where it went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Index of the source image in the bundled digits (`digits`).
    pub source: usize,
    /// [`stroke_width`] of the source image (28 x 28, ink box 20 px high).
    pub stroke_width: f64,
    /// The ink box on the canvas: x, y, width, height.
    pub bbox: (u32, u32, u32, u32),
}

/// One composed canvas.
#[derive(Debug, Clone)]
pub struct Item {
    /// [`CANVAS`] x [`CANVAS`] grey.
    pub image: GrayImage,
    pub attributes: Attributes,
    /// Left, then right.
    pub placements: [Placement; 2],
    /// Every caption of the canvas ([`captions`]).
    pub captions: Vec<String>,
}

/// Stroke width in pixels of the ink (pixels `>= INK`) of `img`: twice the
/// ink area over the length of the ink's outline (4-neighbour edges between
/// ink and background, the image border counting as background). For a long
/// stroke of width w this is about w; 0 for an image without ink.
pub fn stroke_width(img: &GrayImage) -> f64 {
    let (w, h) = img.dimensions();
    let ink = |x: i64, y: i64| {
        x >= 0
            && y >= 0
            && x < i64::from(w)
            && y < i64::from(h)
            && img.get_pixel(x as u32, y as u32)[0] >= INK
    };
    let (mut area, mut outline) = (0u64, 0u64);
    for y in 0..i64::from(h) {
        for x in 0..i64::from(w) {
            if ink(x, y) {
                area += 1;
                outline += [(-1, 0), (1, 0), (0, -1), (0, 1)]
                    .iter()
                    .filter(|(dx, dy)| !ink(x + dx, y + dy))
                    .count() as u64;
            }
        }
    }
    if outline == 0 {
        0.0
    } else {
        2.0 * area as f64 / outline as f64
    }
}

/// The smallest box (x, y, width, height) holding every pixel `>= threshold`,
/// or `None` for a blank image.
pub fn ink_box(img: &GrayImage, threshold: u8) -> Option<(u32, u32, u32, u32)> {
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in img.enumerate_pixels() {
        if p[0] >= threshold {
            (x0, y0) = (x0.min(x), y0.min(y));
            (x1, y1) = (x1.max(x), y1.max(y));
        }
    }
    (x0 != u32::MAX).then(|| (x0, y0, x1 - x0 + 1, y1 - y0 + 1))
}

/// Every caption of a canvas, in a fixed order of templates:
///
/// 0. `a small thick 3 to the left of a large 7` (sizes and strokes)
/// 1. `a large 7 to the right of a small thick 3`
/// 2. `a 3 and a 7`
/// 3. `7 on the right, 3 on the left`
/// 4. `three and seven`
/// 5. `a small thick three next to a large seven`
/// 6. `the digits 3 and 7`
///
/// All but 1 and 3 name the left digit first. A [`Stroke::Regular`] digit
/// has no stroke word. The longest is 14 words, well under CLIP's 77 tokens.
pub fn captions(a: &Attributes) -> Vec<String> {
    let (l, r) = (a.left.digit, a.right.digit);
    let (ln, rn) = (l.to_string(), r.to_string());
    let (lw, rw) = (WORDS[usize::from(l)], WORDS[usize::from(r)]);
    let described = |s: &Side, noun: &str| {
        let mut words = vec![s.size.word()];
        words.extend(s.stroke.word());
        words.push(noun);
        with_article(&words.join(" "))
    };
    vec![
        format!(
            "{} to the left of {}",
            described(&a.left, &ln),
            described(&a.right, &rn)
        ),
        format!(
            "{} to the right of {}",
            described(&a.right, &rn),
            described(&a.left, &ln)
        ),
        format!("{} and {}", with_article(&ln), with_article(&rn)),
        format!("{rn} on the right, {ln} on the left"),
        format!("{lw} and {rw}"),
        format!(
            "{} next to {}",
            described(&a.left, lw),
            described(&a.right, rw)
        ),
        format!("the digits {ln} and {rn}"),
    ]
}

/// `a` or `an` before a phrase, by how its first word sounds ("an 8",
/// "an eight", "a 1").
fn with_article(phrase: &str) -> String {
    let article = if phrase.starts_with('8') || phrase.starts_with("eight") {
        "an"
    } else {
        "a"
    };
    format!("{article} {phrase}")
}

/// The generator: the bundled digits, each one's stroke width, and per class
/// the source images of each stroke third.
#[derive(Debug, Clone)]
pub struct CaptionedDigits {
    /// `[5000, 28, 28]` grey.
    pixels: Vec<u8>,
    widths: Vec<f64>,
    /// `by_stroke[digit][stroke]`: indices of the bundled images of that
    /// class and stroke third (by [`CaptionedDigits::classify_stroke`]), in
    /// index order.
    by_stroke: [[Vec<usize>; 3]; 10],
    /// Per class, the widths that end the thin third and start the thick one.
    cuts: [(f64, f64); 10],
}

const SRC: usize = 28;

impl CaptionedDigits {
    /// Reads the bundled digits and measures their strokes.
    pub fn new() -> Result<Self> {
        let (images, labels) = bundled::digits()?;
        let pixels = images.data;
        let widths: Vec<f64> = pixels
            .chunks_exact(SRC * SRC)
            .map(|p| stroke_width(&source_image(p)))
            .collect();
        let by_stroke: [[Vec<usize>; 3]; 10] = Default::default();
        let mut cuts = [(0.0, 0.0); 10];
        for digit in 0..10u8 {
            let mut class: Vec<usize> = (0..labels.data.len())
                .filter(|&i| labels.data[i] == digit)
                .collect();
            class.sort_by(|&a, &b| widths[a].total_cmp(&widths[b]));
            let n = class.len();
            let d = usize::from(digit);
            // The widest of the thinnest third, the thinnest of the thickest.
            cuts[d] = (widths[class[n / 3 - 1]], widths[class[n - n / 3]]);
        }
        let mut generator = CaptionedDigits {
            pixels,
            widths,
            by_stroke,
            cuts,
        };
        // Grouped by the cuts (not by rank), so that ties fall on one side
        // and every source's stroke is what `classify_stroke` says.
        for (i, &label) in labels.data.iter().enumerate() {
            let stroke = generator.classify_stroke(label, generator.widths[i]);
            generator.by_stroke[usize::from(label)][stroke as usize].push(i);
        }
        Ok(generator)
    }

    /// Number of canvases in a split.
    pub fn len(split: Split) -> usize {
        match split {
            Split::Train => TRAIN_LEN,
            Split::Test => TEST_LEN,
        }
    }

    /// The bundled digit `source` (28 x 28 grey).
    pub fn source(&self, source: usize) -> GrayImage {
        source_image(&self.pixels[source * SRC * SRC..(source + 1) * SRC * SRC])
    }

    /// The stroke third of a bundled-digit stroke width within a class: what
    /// [`Stroke`] a digit of that class measuring `width` would get.
    pub fn classify_stroke(&self, digit: u8, width: f64) -> Stroke {
        let (thin, thick) = self.cuts[usize::from(digit)];
        if width <= thin {
            Stroke::Thin
        } else if width >= thick {
            Stroke::Thick
        } else {
            Stroke::Regular
        }
    }

    /// What canvas `i` of `split` shows, without drawing it.
    pub fn attributes(split: Split, i: usize) -> Attributes {
        Self::plan(split, i).0
    }

    /// Attributes of canvas `i` and the seed its source digits are drawn with.
    fn plan(split: Split, i: usize) -> (Attributes, u64) {
        let (pair, stream) = match split {
            Split::Train => {
                let pairs = training_pairs();
                (pairs[(i * TRAIN_STRIDE) % pairs.len()], 0)
            }
            Split::Test => (HELD_OUT_PAIRS[(i * TEST_STRIDE) % HELD_OUT_PAIRS.len()], 1),
        };
        let mut g = SplitMix64::for_item(SEED, stream, i as u64);
        let mut side = |digit: u8| Side {
            digit,
            size: [Size::Small, Size::Large][g.below(2) as usize],
            stroke: [Stroke::Thin, Stroke::Regular, Stroke::Thick][g.below(3) as usize],
        };
        let attributes = Attributes {
            left: side(pair.0),
            right: side(pair.1),
        };
        (attributes, g.next_u64())
    }

    /// Canvas `i` of `split` (`i < CaptionedDigits::len(split)`).
    pub fn item(&self, split: Split, i: usize) -> Item {
        let (attributes, seed) = Self::plan(split, i);
        self.compose(&attributes, seed)
    }

    /// A canvas showing `attributes`, held-out pair or not: the source digits
    /// (of each side's class and stroke third) are drawn with `seed`.
    pub fn compose(&self, attributes: &Attributes, seed: u64) -> Item {
        let mut g = SplitMix64::new(seed);
        let mut pick = |s: &Side| {
            assert!(s.digit < 10, "digit {} is not 0 to 9", s.digit);
            let group = &self.by_stroke[usize::from(s.digit)][s.stroke as usize];
            group[g.below(group.len() as u64) as usize]
        };
        let sources = [pick(&attributes.left), pick(&attributes.right)];
        self.compose_sources(attributes, sources)
    }

    /// A canvas of the two given bundled digits (left, right) at the sizes of
    /// `attributes`; its digits and strokes are those of the sources.
    fn compose_sources(&self, attributes: &Attributes, sources: [usize; 2]) -> Item {
        let mut canvas = GrayImage::new(CANVAS, CANVAS);
        let sides = [attributes.left, attributes.right];
        let placements = [0, 1].map(|k| {
            let src = self.source(sources[k]);
            let bbox = place(&mut canvas, &src, sides[k].size.height(), k as u32 * HALF);
            Placement {
                source: sources[k],
                stroke_width: self.widths[sources[k]],
                bbox,
            }
        });
        Item {
            captions: captions(attributes),
            image: canvas,
            attributes: *attributes,
            placements,
        }
    }
}

fn source_image(pixels: &[u8]) -> GrayImage {
    GrayImage::from_raw(SRC as u32, SRC as u32, pixels.to_vec()).expect("28 x 28 digit")
}

/// Draws the ink box of `src` scaled to `height` (and at most [`MAX_WIDTH`]
/// wide) centred in the half of `canvas` starting at `x_half`, keeping the
/// brighter pixel; returns the box on the canvas.
fn place(
    canvas: &mut GrayImage,
    src: &GrayImage,
    height: u32,
    x_half: u32,
) -> (u32, u32, u32, u32) {
    let Some((x, y, w, h)) = ink_box(src, BOX_THRESHOLD) else {
        return (x_half, 0, 0, 0);
    };
    let crop = imageops::crop_imm(src, x, y, w, h).to_image();
    let width =
        ((f64::from(w) * f64::from(height) / f64::from(h)).round() as u32).clamp(1, MAX_WIDTH);
    let scaled = imageops::resize(&crop, width, height, FilterType::Triangle);
    let (x0, y0) = (x_half + (HALF - width) / 2, (CANVAS - height) / 2);
    for (dx, dy, p) in scaled.enumerate_pixels() {
        let q = canvas.get_pixel_mut(x0 + dx, y0 + dy);
        q[0] = q[0].max(p[0]);
    }
    (x0, y0, width, height)
}

#[cfg(test)]
mod tests;
