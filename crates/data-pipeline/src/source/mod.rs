//! Where images come from.
//!
//! A [`SourceSpec`] names a source as a user writes it (`digits`,
//! `captioned-digits`, `fashion-mnist:test`, `path/to/folder`,
//! `idx:images.gz,labels.gz`, `cifar10`); [`SourceSpec::open`] turns it into
//! a [`Dataset`]: images by index, optional integer labels and the index ->
//! class-name map, and for an image folder with captions (a `metadata.jsonl`
//! / `metadata.csv`, or `.txt` files beside the images; see [`captions`]) or
//! the bundled [`captioned_digits`] the captions of each image.

mod bundled;
pub mod captioned_digits;
pub mod captions;
pub mod cifar;
mod csv;
pub mod folder;
pub mod idx;

pub use captions::{caption_dropout, CaptionOptions, CaptionProblem, CaptionReport, CaptionSource};

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use image::{DynamicImage, GrayImage, ImageBuffer, RgbImage};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Class names of Fashion-MNIST, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Train or test split of a benchmark set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

/// A data source as named on the command line or in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// The bundled 5,000 MNIST digits (`digits`).
    Digits,
    /// Two bundled digits side by side on a 32 x 32 canvas, with captions
    /// (`captioned-digits[:train|test]`); the test split holds the held-out
    /// digit pairs. See [`captioned_digits`].
    CaptionedDigits(Split),
    /// Fashion-MNIST from the system or the cache (`fashion-mnist[:train|test]`).
    FashionMnist(Split),
    /// MNIST from the cache (`mnist[:train|test]`).
    Mnist(Split),
    /// CIFAR-10 binary batches from the cache (`cifar10[:train|test]`) or a folder
    /// (`cifar10:PATH[:test]`).
    Cifar10 { dir: Option<PathBuf>, split: Split },
    /// IDX image file with optional labels (`idx:IMAGES[,LABELS]`).
    Idx {
        images: PathBuf,
        labels: Option<PathBuf>,
    },
    /// A folder of images (`folder:PATH`, or any existing folder path).
    Folder(PathBuf),
}

fn split_of(s: &str, spec: &str) -> Result<Split> {
    match s {
        "" | "train" => Ok(Split::Train),
        "test" => Ok(Split::Test),
        other => Err(Error::Spec {
            spec: spec.to_string(),
            reason: format!("split {other:?}: expected `train` or `test`"),
        }),
    }
}

impl FromStr for SourceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let (head, rest) = s.split_once(':').unwrap_or((s, ""));
        Ok(match head {
            "digits" | "default" if rest.is_empty() => SourceSpec::Digits,
            "captioned-digits" | "captioned_digits" => {
                SourceSpec::CaptionedDigits(split_of(rest, s)?)
            }
            "fashion-mnist" | "fashion_mnist" => SourceSpec::FashionMnist(split_of(rest, s)?),
            "mnist" => SourceSpec::Mnist(split_of(rest, s)?),
            "cifar10" | "cifar-10" => match rest {
                "" | "train" | "test" => SourceSpec::Cifar10 { dir: None, split: split_of(rest, s)? },
                path => {
                    let (path, split) = match path.rsplit_once(':') {
                        Some((p, sp @ ("train" | "test"))) => (p, split_of(sp, s)?),
                        _ => (path, Split::Train),
                    };
                    SourceSpec::Cifar10 { dir: Some(PathBuf::from(path)), split }
                }
            },
            "idx" if !rest.is_empty() => {
                let (images, labels) = match rest.split_once(',') {
                    Some((i, l)) => (i, Some(PathBuf::from(l))),
                    None => (rest, None),
                };
                SourceSpec::Idx { images: PathBuf::from(images), labels }
            }
            "folder" if !rest.is_empty() => SourceSpec::Folder(PathBuf::from(rest)),
            _ if Path::new(s).is_dir() => SourceSpec::Folder(PathBuf::from(s)),
            _ if Path::new(s).is_file() => SourceSpec::Idx { images: PathBuf::from(s), labels: None },
            _ => {
                return Err(Error::Spec {
                    spec: s.to_string(),
                    reason: "expected `digits`, `captioned-digits[:test]`, `fashion-mnist[:test]`, \
                             `mnist[:test]`, \
                             `cifar10[:test]`, `cifar10:DIR`, `idx:IMAGES[,LABELS]`, or an existing \
                             folder of images"
                        .to_string(),
                })
            }
        })
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let split = |s: &Split| if *s == Split::Test { ":test" } else { "" };
        match self {
            SourceSpec::Digits => f.write_str("digits"),
            SourceSpec::CaptionedDigits(s) => write!(f, "captioned-digits{}", split(s)),
            SourceSpec::FashionMnist(s) => write!(f, "fashion-mnist{}", split(s)),
            SourceSpec::Mnist(s) => write!(f, "mnist{}", split(s)),
            SourceSpec::Cifar10 {
                dir: None,
                split: s,
            } => write!(f, "cifar10{}", split(s)),
            SourceSpec::Cifar10 {
                dir: Some(d),
                split: s,
            } => {
                write!(f, "cifar10:{}{}", d.display(), split(s))
            }
            SourceSpec::Idx {
                images,
                labels: None,
            } => write!(f, "idx:{}", images.display()),
            SourceSpec::Idx {
                images,
                labels: Some(l),
            } => {
                write!(f, "idx:{},{}", images.display(), l.display())
            }
            SourceSpec::Folder(p) => write!(f, "folder:{}", p.display()),
        }
    }
}

impl Serialize for SourceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SourceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// How to open a source.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Fail on the first unreadable image, or the first caption problem of a
    /// folder (a bad metadata row or sidecar file, an image without a
    /// caption), instead of skipping it with a warning.
    pub strict: bool,
    /// Keep decoded images of a folder in memory: `None` decides by size
    /// (folders under 256 MB of files are cached).
    pub cache: Option<bool>,
}

/// Folders whose files add up to less than this are decoded once, up front.
const AUTO_CACHE_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug)]
enum Items {
    /// Same-size 8-bit images in one buffer, `[N, H, W, C]` (IDX, CIFAR, bundled).
    Packed {
        pixels: Arc<Vec<u8>>,
        height: u32,
        width: u32,
        channels: u8,
    },
    /// Image files, decoded on demand unless cached.
    Files {
        paths: Vec<PathBuf>,
        sizes: Vec<(u32, u32)>,
        cache: Option<Vec<DynamicImage>>,
    },
}

/// An indexable set of images with optional labels.
#[derive(Debug)]
pub struct Dataset {
    /// The spec this dataset was opened from.
    pub spec: String,
    items: Items,
    labels: Option<Vec<i64>>,
    class_names: Vec<String>,
    /// Captions per image, for a folder with captions.
    captions: Option<Vec<Vec<String>>>,
    caption_report: Option<CaptionReport>,
    /// What each canvas of `captioned-digits` shows.
    attributes: Option<Vec<captioned_digits::Attributes>>,
    /// Files left out when the dataset was opened (unreadable, or without a
    /// usable caption), with why.
    pub skipped: Vec<(PathBuf, String)>,
    pub(crate) strict: bool,
}

impl SourceSpec {
    /// Opens the source as images (and class labels) only: captions are not
    /// read, so every image is kept whether or not it has one. Use
    /// [`SourceSpec::open_with_captions`] to read them (see [`captions`]).
    pub fn open(&self, opts: &OpenOptions) -> Result<Dataset> {
        let no_captions = CaptionOptions {
            enabled: Some(false),
            ..CaptionOptions::default()
        };
        self.open_with_captions(opts, &no_captions)
    }

    /// Opens the source, reading an image folder's captions as `captions`
    /// says. Only image folders and `captioned-digits` have captions:
    /// requiring them of another source is an error. `captioned-digits`
    /// has its captions unless `captions.enabled` is `Some(false)` (as
    /// [`SourceSpec::open`] passes); its attributes are always there.
    pub fn open_with_captions(
        &self,
        opts: &OpenOptions,
        captions: &CaptionOptions,
    ) -> Result<Dataset> {
        let spec = self.to_string();
        if captions.required()
            && !matches!(self, SourceSpec::Folder(_) | SourceSpec::CaptionedDigits(_))
        {
            return Err(Error::Spec {
                spec,
                reason: "captions were asked for, but only an image folder has captions (a \
                         metadata.jsonl or metadata.csv, or .txt files beside the images), or \
                         the bundled `captioned-digits`"
                    .to_string(),
            });
        }
        match self {
            SourceSpec::Digits => {
                let (images, labels) = bundled::digits()?;
                let names = (0..10).map(|d| d.to_string()).collect();
                Dataset::from_idx(spec, images, Some(labels), names, Path::new("digits"))
            }
            SourceSpec::CaptionedDigits(split) => {
                Dataset::captioned_digits(spec, *split, captions.enabled != Some(false))
            }
            SourceSpec::FashionMnist(split) | SourceSpec::Mnist(split) => {
                let name = if matches!(self, SourceSpec::Mnist(_)) {
                    "mnist"
                } else {
                    "fashion-mnist"
                };
                let dir = locate_dataset(name)?;
                let prefix = if *split == Split::Test {
                    "t10k"
                } else {
                    "train"
                };
                let images = find_file(&dir, &format!("{prefix}-images-idx3-ubyte"))?;
                let labels = find_file(&dir, &format!("{prefix}-labels-idx1-ubyte"))?;
                let names = if name == "mnist" {
                    (0..10).map(|d| d.to_string()).collect()
                } else {
                    FASHION_MNIST_CLASSES
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                };
                Dataset::from_idx(
                    spec,
                    idx::read(&images)?,
                    Some(idx::read(&labels)?),
                    names,
                    &images,
                )
            }
            SourceSpec::Cifar10 { dir, split } => {
                let dir = match dir {
                    Some(d) => d.clone(),
                    None => locate_dataset("cifar10")?,
                };
                let dir = if dir.join("cifar-10-batches-bin").is_dir() {
                    dir.join("cifar-10-batches-bin")
                } else {
                    dir
                };
                let split = if *split == Split::Test {
                    cifar::Split::Test
                } else {
                    cifar::Split::Train
                };
                let (pixels, labels) = cifar::read(&cifar::batch_files(&dir, split))?;
                Ok(Dataset {
                    spec,
                    items: Items::Packed {
                        pixels: Arc::new(pixels),
                        height: 32,
                        width: 32,
                        channels: 3,
                    },
                    labels: Some(labels),
                    class_names: cifar::CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
                    captions: None,
                    caption_report: None,
                    attributes: None,
                    skipped: Vec::new(),
                    strict: false,
                })
            }
            SourceSpec::Idx { images, labels } => {
                let labels = labels.as_deref().map(idx::read).transpose()?;
                let names = match &labels {
                    Some(l) => {
                        let max = l.data.iter().copied().max().unwrap_or(0);
                        (0..=max).map(|d| d.to_string()).collect()
                    }
                    None => Vec::new(),
                };
                Dataset::from_idx(spec, idx::read(images)?, labels, names, images)
            }
            SourceSpec::Folder(root) => Dataset::from_folder(spec, root, opts, captions),
        }
    }
}

/// Where benchmark sets live: `$LMZH_DATA_DIR/<name>`, the cache
/// (`$LMZH_CACHE_DIR/data/<name>`, as `cargo xtask data` writes it), and for
/// Fashion-MNIST the Debian package's `/usr/share/datasets/fashion-mnist`.
pub fn dataset_dirs(name: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("LMZH_DATA_DIR").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d).join(name));
    }
    dirs.push(cache_dir().join("data").join(name));
    dirs.push(Path::new("/usr/share/datasets").join(name));
    dirs
}

fn locate_dataset(name: &str) -> Result<PathBuf> {
    let dirs = dataset_dirs(name);
    dirs.iter()
        .find(|d| d.is_dir())
        .cloned()
        .ok_or_else(|| Error::Spec {
            spec: name.to_string(),
            reason: format!(
                "not found in {}; run `cargo xtask data {name}` to install it",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

/// An image file that `tensor::image::decode` could not read, as this
/// crate's error, naming the file once.
fn unreadable(path: &Path, e: tensor::Error) -> Error {
    match e {
        tensor::Error::ImageDecode { path, reason } => Error::BadImage { path, reason },
        tensor::Error::Io { path, error } => Error::Io { path, error },
        other => Error::BadImage {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

fn find_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::io(dir.join(stem), std::io::ErrorKind::NotFound.into()))
}

/// The per-machine cache folder (`$LMZH_CACHE_DIR`, else `$XDG_CACHE_HOME/lmzh`
/// or `~/.cache/lmzh`), the same one `cargo xtask` uses.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LMZH_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("lmzh")
}

impl Dataset {
    fn from_idx(
        spec: String,
        images: idx::IdxArray,
        labels: Option<idx::IdxArray>,
        class_names: Vec<String>,
        path: &Path,
    ) -> Result<Dataset> {
        let bad = |reason: String| Error::Format {
            path: path.to_path_buf(),
            format: "IDX",
            reason,
        };
        let (n, h, w, c) = match images.dims[..] {
            [n, h, w] => (n, h, w, 1),
            [n, h, w, c @ (1 | 3 | 4)] => (n, h, w, c),
            ref d => {
                return Err(bad(format!(
                    "image dimensions {d:?}: expected [N, H, W] or [N, H, W, C]"
                )))
            }
        };
        if h == 0 || w == 0 {
            return Err(bad(format!(
                "image dimensions {:?}: height and width must be at least 1",
                images.dims
            )));
        }
        let labels = match labels {
            Some(l) if l.dims != [n] => {
                return Err(bad(format!(
                    "{} labels for {n} images",
                    l.dims.iter().product::<usize>()
                )))
            }
            Some(l) => Some(l.data.iter().map(|&v| i64::from(v)).collect()),
            None => None,
        };
        Ok(Dataset {
            spec,
            items: Items::Packed {
                pixels: Arc::new(images.data),
                height: h as u32,
                width: w as u32,
                channels: c as u8,
            },
            labels,
            class_names,
            captions: None,
            caption_report: None,
            attributes: None,
            skipped: Vec::new(),
            strict: false,
        })
    }

    fn from_folder(
        spec: String,
        root: &Path,
        opts: &OpenOptions,
        caption_opts: &CaptionOptions,
    ) -> Result<Dataset> {
        let listing = folder::list(root)?;
        let loaded = if caption_opts.enabled == Some(false) {
            None
        } else {
            let column = caption_opts.column();
            if column.trim().is_empty() {
                return Err(Error::Spec {
                    spec,
                    reason: "caption_column is empty; expected the name of the metadata column \
                             that holds the captions, such as \"text\""
                        .to_string(),
                });
            }
            let settings = captions::Settings {
                column,
                required: caption_opts.required(),
                strict: opts.strict,
            };
            captions::load(root, &listing.files, &settings)?
        };
        let (per_file, caption_report) = match loaded {
            Some(l) => (Some(l.per_file), Some(l.report)),
            None => (None, None),
        };
        // Images without a usable caption are left out (already reported).
        let mut skipped = Vec::new();
        let mut candidates = Vec::with_capacity(listing.files.len());
        let mut per_file = per_file.map(Vec::into_iter);
        for (i, path) in listing.files.into_iter().enumerate() {
            let label = listing.labels.as_ref().map(|l| l[i]);
            let captions = match per_file.as_mut().and_then(Iterator::next) {
                Some(Err(reason)) => {
                    skipped.push((path, reason));
                    continue;
                }
                Some(Ok(c)) => c,
                None => Vec::new(),
            };
            candidates.push((path, label, captions));
        }
        let total: u64 = candidates
            .iter()
            .filter_map(|(p, ..)| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        let cache = opts.cache.unwrap_or(total < AUTO_CACHE_BYTES);
        // Decode everything (cached) or read every header (lazy), in parallel.
        type Probe = Result<(DynamicImage, (u32, u32))>;
        let probed: Vec<Probe> = candidates
            .par_iter()
            .map(|(p, ..)| {
                if cache {
                    let img = tensor::image::decode(p).map_err(|e| unreadable(p, e))?;
                    let size = (img.width(), img.height());
                    Ok((img, size))
                } else {
                    let bad = |reason: String| Error::BadImage {
                        path: p.clone(),
                        reason,
                    };
                    let size = image::ImageReader::open(p)
                        .and_then(|r| r.with_guessed_format())
                        .map_err(|e| Error::io(p, e))?
                        .into_dimensions()
                        .map_err(|e| bad(e.to_string()))?;
                    Ok((DynamicImage::new_luma8(0, 0), size))
                }
            })
            .collect();
        let mut paths = Vec::new();
        let mut sizes = Vec::new();
        let mut images = Vec::new();
        let mut labels = Vec::new();
        let mut captions = Vec::new();
        for ((path, label, caps), probe) in candidates.into_iter().zip(probed) {
            match probe {
                Ok((img, size)) => {
                    paths.push(path);
                    sizes.push(size);
                    if cache {
                        images.push(img);
                    }
                    labels.extend(label);
                    captions.push(caps);
                }
                Err(e) if opts.strict => return Err(e),
                Err(e) => {
                    tracing::warn!("skipping {e}");
                    skipped.push((path, e.to_string()));
                }
            }
        }
        if paths.is_empty() {
            return Err(Error::EmptyFolder {
                path: root.to_path_buf(),
            });
        }
        Ok(Dataset {
            spec,
            items: Items::Files {
                paths,
                sizes,
                cache: cache.then_some(images),
            },
            labels: listing.labels.map(|_| labels),
            class_names: listing.class_names,
            captions: caption_report.is_some().then_some(captions),
            caption_report,
            attributes: None,
            skipped,
            strict: opts.strict,
        })
    }

    /// The canvases of `captioned-digits`, composed in parallel and packed.
    fn captioned_digits(spec: String, split: Split, with_captions: bool) -> Result<Dataset> {
        let generator = captioned_digits::CaptionedDigits::new()?;
        let n = captioned_digits::CaptionedDigits::len(split);
        let items: Vec<captioned_digits::Item> = (0..n)
            .into_par_iter()
            .map(|i| generator.item(split, i))
            .collect();
        let side = captioned_digits::CANVAS;
        let mut pixels = Vec::with_capacity(n * (side * side) as usize);
        let mut captions = Vec::with_capacity(n);
        let mut attributes = Vec::with_capacity(n);
        for item in items {
            pixels.extend_from_slice(item.image.as_raw());
            captions.push(item.captions);
            attributes.push(item.attributes);
        }
        Ok(Dataset {
            spec,
            items: Items::Packed {
                pixels: Arc::new(pixels),
                height: side,
                width: side,
                channels: 1,
            },
            labels: None,
            class_names: Vec::new(),
            captions: with_captions.then_some(captions),
            caption_report: None,
            attributes: Some(attributes),
            skipped: Vec::new(),
            strict: false,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        match &self.items {
            Items::Packed {
                pixels,
                height,
                width,
                channels,
            } => pixels.len() / (*height as usize * *width as usize * usize::from(*channels)),
            Items::Files { paths, .. } => paths.len(),
        }
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Label of image `i`, when the source has labels.
    pub fn label(&self, i: usize) -> Option<i64> {
        self.labels.as_ref().map(|l| l[i])
    }

    /// Whether the source has labels.
    pub fn has_labels(&self) -> bool {
        self.labels.is_some()
    }

    /// Class names by label index (empty when unlabelled).
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Whether the source has captions (an image folder with a metadata
    /// file or `.txt` sidecars).
    pub fn has_captions(&self) -> bool {
        self.captions.is_some()
    }

    /// All captions of image `i` (empty when the source has none).
    pub fn captions(&self, i: usize) -> &[String] {
        self.captions.as_ref().map_or(&[], |c| &c[i])
    }

    /// One caption of image `i` for `epoch`: when it has several, the choice
    /// is made by a generator seeded from (`seed`, `epoch`, `i`), so it is the
    /// same on every run and after a resume. `None` without captions.
    pub fn caption(&self, i: usize, epoch: u64, seed: u64) -> Option<&str> {
        captions::pick(self.captions(i), seed, epoch, i)
    }

    /// The caption to train image `i` on in `epoch`: the empty caption with
    /// probability `proportion_empty` (diffusers' `proportion_empty_prompts`,
    /// decided by [`caption_dropout`]), else [`Dataset::caption`].
    pub fn training_caption(
        &self,
        i: usize,
        epoch: u64,
        seed: u64,
        proportion_empty: f64,
    ) -> Option<&str> {
        let caption = self.caption(i, epoch, seed)?;
        Some(if caption_dropout(proportion_empty, seed, epoch, i) {
            ""
        } else {
            caption
        })
    }

    /// What canvas `i` of `captioned-digits` shows (digits, sizes, strokes),
    /// to score samples of its captions; `None` for other sources.
    pub fn attributes(&self, i: usize) -> Option<&captioned_digits::Attributes> {
        self.attributes.as_ref().map(|a| &a[i])
    }

    /// What reading an image folder's captions found: their source, counts
    /// and every problem (`None` without captions, and for
    /// `captioned-digits`, whose captions are generated).
    pub fn caption_report(&self) -> Option<&CaptionReport> {
        self.caption_report.as_ref()
    }

    /// Where image `i` comes from, for messages.
    pub fn describe(&self, i: usize) -> String {
        match &self.items {
            Items::Packed { .. } => format!("{}[{i}]", self.spec),
            Items::Files { paths, .. } => paths[i].display().to_string(),
        }
    }

    /// Width and height of image `i` (without decoding it).
    pub fn size(&self, i: usize) -> (u32, u32) {
        match &self.items {
            Items::Packed { height, width, .. } => (*width, *height),
            Items::Files { sizes, .. } => sizes[i],
        }
    }

    /// Checks that all images share one size; needed when there is no resize.
    pub fn check_uniform_size(&self) -> Result<()> {
        if let Items::Files { paths, sizes, .. } = &self.items {
            if let Some(j) = sizes.iter().position(|s| *s != sizes[0]) {
                return Err(Error::MixedSizes {
                    first: paths[0].clone(),
                    first_size: sizes[0],
                    other: paths[j].clone(),
                    other_size: sizes[j],
                });
            }
        }
        Ok(())
    }

    /// Decodes image `i`.
    pub fn image(&self, i: usize) -> Result<DynamicImage> {
        match &self.items {
            Items::Packed {
                pixels,
                height,
                width,
                channels,
            } => {
                let px = *height as usize * *width as usize * usize::from(*channels);
                let data = pixels[i * px..(i + 1) * px].to_vec();
                let (w, h) = (*width, *height);
                let bad = || Error::Format {
                    path: PathBuf::from(&self.spec),
                    format: "packed image",
                    reason: format!("image {i} does not fit {w}x{h}x{channels}"),
                };
                Ok(match channels {
                    1 => DynamicImage::ImageLuma8(GrayImage::from_raw(w, h, data).ok_or_else(bad)?),
                    3 => DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, data).ok_or_else(bad)?),
                    _ => {
                        DynamicImage::ImageRgba8(ImageBuffer::from_raw(w, h, data).ok_or_else(bad)?)
                    }
                })
            }
            Items::Files {
                paths,
                cache: Some(images),
                ..
            } => {
                debug_assert_eq!(paths.len(), images.len());
                Ok(images[i].clone())
            }
            Items::Files {
                paths, cache: None, ..
            } => tensor::image::decode(&paths[i]).map_err(|e| unreadable(&paths[i], e)),
        }
    }
}

#[cfg(test)]
mod tests;
