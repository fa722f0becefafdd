//! Captions of an image folder, for text-to-image training, read the way
//! Hugging Face `datasets`' imagefolder and kohya's trainers read them.
//!
//! **Metadata files** (imagefolder): a `metadata.jsonl` (one JSON object per
//! line) or `metadata.csv` (a header row, then one row per image) in the
//! folder, or in any folder below it, next to the images it describes. Its
//! `file_name` column is the image's path relative to the metadata file's
//! folder; the caption column (`text` unless
//! [`CaptionOptions::caption_column`] names another, as diffusers'
//! `--caption_column` does) holds a string or a list
//! of strings (several captions of one image). In a CSV file a cell that
//! holds a JSON list, `["a cat","a kitten"]`, is a list. Other columns are
//! ignored.
//!
//! **Sidecar files** (kohya): `img001.txt` beside `img001.png`; the whole
//! file, trimmed, is the caption.
//!
//! ```text
//! photos/                        photos/
//!   metadata.jsonl                 img001.png
//!   img001.png                     img001.txt   "a red bicycle"
//!   img002.png                     img002.png
//!                                  img002.txt
//! metadata.jsonl:
//!   {"file_name": "img001.png", "text": "a red bicycle"}
//!   {"file_name": "img002.png", "text": ["a cat", "a kitten on a sofa"]}
//! metadata.csv, the same:
//!   file_name,text
//!   img001.png,a red bicycle
//!   img002.png,"[""a cat"", ""a kitten on a sofa""]"
//! ```
//!
//! A folder with a metadata file or sidecar files has captions; when it has
//! both, the metadata file wins (with a warning). Captions and class labels
//! (first-level subfolders) can be used together; `file_name` then includes
//! the subfolder (`cat/img001.png`) or the metadata file sits in it.
//!
//! Nothing is dropped silently. A row naming a missing file, a missing
//! column, a caption that is not a string or list of strings, an empty
//! caption, invalid UTF-8, a second row for one image, a malformed line and
//! an image without a caption are each an error naming the file and line
//! with [`OpenOptions::strict`](super::OpenOptions::strict); otherwise each
//! is a warning, listed in the
//! [`CaptionReport`], and images without a usable caption are left out of
//! the dataset (also listed in `Dataset::skipped`).
//!
//! When an image has several captions, [`Dataset::caption`](super::Dataset::caption)
//! picks one per epoch with a generator seeded from (seed, epoch, image),
//! and [`caption_dropout`] decides the same way whether to train on the
//! empty caption instead, so a resumed run sees the same captions.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{csv, folder};
use crate::rng::SplitMix64;
use crate::{Error, Result};

/// The caption column when none is named (diffusers' `--caption_column`).
pub const DEFAULT_CAPTION_COLUMN: &str = "text";
/// The column of a metadata file that names the image.
pub const FILE_NAME_COLUMN: &str = "file_name";
/// Metadata file names, in order of preference when a folder has both.
pub const METADATA_FILES: [&str; 2] = ["metadata.jsonl", "metadata.csv"];

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Which captions of an image folder to read, for
/// [`SourceSpec::open_with_captions`](super::SourceSpec::open_with_captions).
/// Whether a problem is an error is [`OpenOptions::strict`](super::OpenOptions::strict).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CaptionOptions {
    /// `None`: read captions when the folder has them (a metadata file or
    /// `.txt` sidecars); `Some(true)`: require them (a folder without is an
    /// error); `Some(false)`: ignore them.
    pub enabled: Option<bool>,
    /// The metadata column that holds the captions; `None` is
    /// [`DEFAULT_CAPTION_COLUMN`] (`text`, as diffusers' `--caption_column`).
    /// Naming one requires captions unless `enabled` is `Some(false)`.
    pub caption_column: Option<String>,
}

impl CaptionOptions {
    /// The caption column to read.
    pub fn column(&self) -> &str {
        self.caption_column
            .as_deref()
            .unwrap_or(DEFAULT_CAPTION_COLUMN)
    }

    /// Whether a source without captions is an error.
    pub fn required(&self) -> bool {
        match self.enabled {
            Some(on) => on,
            None => self.caption_column.is_some(),
        }
    }
}

/// Where a folder's captions come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptionSource {
    /// `metadata.jsonl` / `metadata.csv` files, sorted (one per folder that has one).
    Metadata(Vec<PathBuf>),
    /// A `.txt` file beside each image.
    Sidecars,
}

/// One problem with a folder's captions: a metadata row, a sidecar file, or
/// an image left out for want of a caption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionProblem {
    /// The metadata file, sidecar file or image at fault.
    pub path: PathBuf,
    /// The 1-based line, for a metadata row or a sidecar's bad line.
    pub line: Option<usize>,
    /// What is wrong, and what was expected.
    pub reason: String,
}

impl fmt::Display for CaptionProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl From<CaptionProblem> for Error {
    fn from(p: CaptionProblem) -> Self {
        Error::Caption {
            path: p.path,
            line: p.line,
            reason: p.reason,
        }
    }
}

/// What reading a folder's captions found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionReport {
    /// Where the captions come from.
    pub source: CaptionSource,
    /// The metadata column read (also set for sidecars, where it is unused).
    pub column: String,
    /// Images of the folder with at least one usable caption.
    pub images_with_captions: usize,
    /// Images left out because they have no usable caption.
    pub images_left_out: usize,
    /// Sidecar `.txt` files not read because a metadata file exists.
    pub sidecars_ignored: usize,
    /// Every problem found, in the order found (rows, then images left out).
    pub skipped: Vec<CaptionProblem>,
}

/// How to read captions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings<'a> {
    /// The caption column of metadata files.
    pub column: &'a str,
    /// Whether a folder without captions is an error.
    pub required: bool,
    /// Whether the first problem is an error.
    pub strict: bool,
}

/// The captions of a folder's images.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// Per listed image, in listing order: its captions, or why it has none.
    pub per_file: Vec<std::result::Result<Vec<String>, String>>,
    pub report: CaptionReport,
}

/// Problems seen so far: the first is an error in strict mode, otherwise
/// each is logged and kept.
#[derive(Debug)]
struct Problems {
    strict: bool,
    list: Vec<CaptionProblem>,
}

impl Problems {
    fn add(&mut self, path: &Path, line: Option<usize>, reason: impl Into<String>) -> Result<()> {
        let problem = CaptionProblem {
            path: path.to_path_buf(),
            line,
            reason: reason.into(),
        };
        if self.strict {
            return Err(problem.into());
        }
        tracing::warn!("captions: {problem}");
        self.list.push(problem);
        Ok(())
    }
}

/// One caption of several, the same for the same (seed, epoch, image).
pub(crate) fn pick(captions: &[String], seed: u64, epoch: u64, index: usize) -> Option<&str> {
    let k = match captions.len() {
        0 => return None,
        1 => 0,
        n => {
            let seed = tensor::seed::derive_seed(seed, "caption");
            SplitMix64::for_item(seed, epoch, index as u64).below(n as u64) as usize
        }
    };
    Some(&captions[k])
}

/// Whether image `index` trains on the empty caption in `epoch`, with
/// probability `p` (diffusers' `proportion_empty_prompts`, for
/// classifier-free guidance), decided by a generator seeded from
/// (seed, epoch, index) so that a resumed run decides the same. `p <= 0`
/// never drops and `p >= 1` always does.
pub fn caption_dropout(p: f64, seed: u64, epoch: u64, index: usize) -> bool {
    let seed = tensor::seed::derive_seed(seed, "caption-dropout");
    SplitMix64::for_item(seed, epoch, index as u64).unit() < p
}

/// The sidecar caption file of an image.
fn sidecar_of(image: &Path) -> PathBuf {
    image.with_extension("txt")
}

/// A path with `.` components removed, so that `dir/./a.png` finds `dir/a.png`.
fn normalize(path: &Path) -> PathBuf {
    path.components().collect()
}

fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The metadata files in `root` and the folders below it, sorted.
fn find_metadata(root: &Path, problems: &mut Problems) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let [jsonl, csv] = METADATA_FILES.map(|name| dir.join(name));
        match (jsonl.is_file(), csv.is_file()) {
            (true, true) => {
                problems.add(
                    &csv,
                    None,
                    format!(
                        "{} is in the same folder and is the one read; keep one metadata file \
                         per folder",
                        METADATA_FILES[0]
                    ),
                )?;
                found.push(jsonl);
            }
            (true, false) => found.push(jsonl),
            (false, true) => found.push(csv),
            (false, false) => {}
        }
        dirs.extend(folder::entries(&dir)?.into_iter().filter(|p| p.is_dir()));
    }
    found.sort();
    Ok(found)
}

/// Reads the captions of `files` (a folder listing, below `root`). `None`
/// when the folder has no captions and none are required.
pub(crate) fn load(
    root: &Path,
    files: &[PathBuf],
    settings: &Settings<'_>,
) -> Result<Option<Loaded>> {
    let mut problems = Problems {
        strict: settings.strict,
        list: Vec::new(),
    };
    let metadata = find_metadata(root, &mut problems)?;
    let sidecars = files.iter().filter(|f| sidecar_of(f).is_file()).count();
    let (source, per_file, sidecars_ignored) = if !metadata.is_empty() {
        if sidecars > 0 {
            tracing::warn!(
                "{}: {sidecars} .txt caption file(s) beside images are ignored: the metadata file \
                 ({}) has the captions",
                root.display(),
                metadata
                    .iter()
                    .map(|m| m.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let mut rows = Rows::new(files, settings.column, &mut problems);
        for meta in &metadata {
            rows.read(meta)?;
        }
        let per_file = rows.finish(&metadata);
        (CaptionSource::Metadata(metadata), per_file, sidecars)
    } else if sidecars > 0 {
        (
            CaptionSource::Sidecars,
            from_sidecars(files, &mut problems)?,
            0,
        )
    } else if settings.required {
        return Err(Error::Caption {
            path: root.to_path_buf(),
            line: None,
            reason: format!(
                "no captions found: expected {} or {} with the columns {FILE_NAME_COLUMN} and \
                 {:?}, or a .txt file beside each image",
                METADATA_FILES[0], METADATA_FILES[1], settings.column
            ),
        });
    } else {
        return Ok(None);
    };
    // Images without a usable caption: an error when strict, else left out.
    for (path, captions) in files.iter().zip(&per_file) {
        if let Err(reason) = captions {
            problems.add(path, None, reason.clone())?;
        }
    }
    let with = per_file.iter().filter(|c| c.is_ok()).count();
    if with == 0 {
        let first = problems
            .list
            .first()
            .map(|p| format!("; first problem: {p}"))
            .unwrap_or_default();
        return Err(Error::Caption {
            path: root.to_path_buf(),
            line: None,
            reason: format!(
                "none of the {} images has a usable caption{first}",
                files.len()
            ),
        });
    }
    let report = CaptionReport {
        source,
        column: settings.column.to_string(),
        images_with_captions: with,
        images_left_out: files.len() - with,
        sidecars_ignored,
        skipped: problems.list,
    };
    Ok(Some(Loaded { per_file, report }))
}

/// Captions from `.txt` files beside the images.
fn from_sidecars(
    files: &[PathBuf],
    problems: &mut Problems,
) -> Result<Vec<std::result::Result<Vec<String>, String>>> {
    let mut out = Vec::with_capacity(files.len());
    for image in files {
        let side = sidecar_of(image);
        let name = file_name_of(&side);
        let bytes = match std::fs::read(&side) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                out.push(Err(format!("no caption: no {name} beside it")));
                continue;
            }
            Err(e) => return Err(Error::io(&side, e)),
        };
        let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(&bytes);
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t.trim(),
            Err(e) => {
                let line = 1 + bytes[..e.valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                problems.add(&side, Some(line), "not valid UTF-8")?;
                out.push(Err(format!("no usable caption: {name} is not valid UTF-8")));
                continue;
            }
        };
        if text.is_empty() {
            problems.add(&side, None, "empty caption")?;
            out.push(Err(format!("no usable caption: {name} is empty")));
            continue;
        }
        out.push(Ok(vec![text.to_string()]));
    }
    Ok(out)
}

/// How a JSON value is called in messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The captions in a caption cell: a string or a non-empty list of
/// non-empty strings.
fn captions_of(column: &str, value: &Value) -> std::result::Result<Vec<String>, String> {
    let list = match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if items.is_empty() => {
            return Err(format!(
                "column {column:?}: an empty list; expected at least one caption"
            ))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(k, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "column {column:?}: item {} of the list is {}; expected a string",
                    k + 1,
                    kind(other)
                )),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?,
        other => {
            return Err(format!(
                "column {column:?}: {}; expected a string or a list of strings",
                kind(other)
            ))
        }
    };
    match list.iter().position(|c| c.trim().is_empty()) {
        Some(_) if list.len() == 1 => Err(format!("column {column:?}: empty caption")),
        Some(k) => Err(format!(
            "column {column:?}: caption {} of the list is empty",
            k + 1
        )),
        None => Ok(list),
    }
}

/// The captions in a CSV cell: a JSON list of strings when it parses as
/// one, else the text itself.
fn cell_captions(column: &str, cell: &str) -> std::result::Result<Vec<String>, String> {
    if cell.trim_start().starts_with('[') {
        if let Ok(list @ Value::Array(_)) = serde_json::from_str::<Value>(cell) {
            return captions_of(column, &list);
        }
    }
    captions_of(column, &Value::String(cell.to_string()))
}

/// The column names of a row or header, for messages.
fn columns<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

fn missing_column(column: &str, present: &str) -> String {
    if column == FILE_NAME_COLUMN {
        format!("no column {column:?} naming the image (columns: {present})")
    } else {
        format!(
            "no column {column:?} (columns: {present}); set caption_column to the column that \
             holds the captions"
        )
    }
}

/// Metadata rows matched to the listed images.
#[derive(Debug)]
struct Rows<'a, 'p> {
    /// Listed image (normalised) -> index.
    index: HashMap<PathBuf, usize>,
    column: &'a str,
    /// The first row naming each image: (metadata file, line).
    first_row: Vec<Option<(PathBuf, usize)>>,
    captions: Vec<Option<Vec<String>>>,
    problems: &'p mut Problems,
}

impl<'a, 'p> Rows<'a, 'p> {
    fn new(files: &[PathBuf], column: &'a str, problems: &'p mut Problems) -> Self {
        Rows {
            index: files
                .iter()
                .enumerate()
                .map(|(i, f)| (normalize(f), i))
                .collect(),
            column,
            first_row: vec![None; files.len()],
            captions: vec![None; files.len()],
            problems,
        }
    }

    fn read(&mut self, meta: &Path) -> Result<()> {
        let bytes = std::fs::read(meta).map_err(|e| Error::io(meta, e))?;
        let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(&bytes);
        if meta.extension().is_some_and(|e| e == "csv") {
            self.read_csv(meta, bytes)
        } else {
            self.read_jsonl(meta, bytes)
        }
    }

    fn read_jsonl(&mut self, meta: &Path, bytes: &[u8]) -> Result<()> {
        let column = self.column;
        for (k, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = k + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let text = match std::str::from_utf8(raw) {
                Ok(t) => t,
                Err(e) => {
                    let reason =
                        format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to() + 1);
                    self.problems.add(meta, Some(line), reason)?;
                    continue;
                }
            };
            let object = match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(m)) => m,
                Ok(other) => {
                    let reason = format!("{}; expected a JSON object", kind(&other));
                    self.problems.add(meta, Some(line), reason)?;
                    continue;
                }
                Err(e) => {
                    let full = e.to_string();
                    let at = format!(" at line {} column {}", e.line(), e.column());
                    let what = full.strip_suffix(&at).unwrap_or(&full);
                    let reason = format!("not valid JSON at column {}: {what}", e.column());
                    self.problems.add(meta, Some(line), reason)?;
                    continue;
                }
            };
            let present = || columns(object.keys().map(String::as_str));
            let file_name = match object.get(FILE_NAME_COLUMN) {
                Some(Value::String(s)) => s.as_str(),
                Some(other) => {
                    let reason = format!(
                        "column {FILE_NAME_COLUMN:?}: {}; expected the image's path",
                        kind(other)
                    );
                    self.problems.add(meta, Some(line), reason)?;
                    continue;
                }
                None => {
                    let reason = missing_column(FILE_NAME_COLUMN, &present());
                    self.problems.add(meta, Some(line), reason)?;
                    continue;
                }
            };
            let captions = match object.get(column) {
                Some(v) => captions_of(column, v),
                None => Err(missing_column(column, &present())),
            };
            self.row(meta, line, file_name, captions)?;
        }
        Ok(())
    }

    fn read_csv(&mut self, meta: &Path, bytes: &[u8]) -> Result<()> {
        let column = self.column;
        let mut records = csv::parse(bytes).into_iter().filter(|r| !r.is_blank());
        let Some(header) = records.next() else {
            let reason = format!(
                "empty file; expected a header row naming the columns {FILE_NAME_COLUMN} and \
                 {column}"
            );
            return self.problems.add(meta, None, reason);
        };
        if let Some(e) = header.error {
            return self.problems.add(meta, Some(header.line), e);
        }
        let names: Vec<String> = match header
            .fields
            .iter()
            .map(|f| std::str::from_utf8(f).map(|s| s.trim().to_string()))
            .collect()
        {
            Ok(n) => n,
            Err(_) => {
                return self
                    .problems
                    .add(meta, Some(header.line), "header row: not valid UTF-8")
            }
        };
        let present = columns(names.iter().map(String::as_str));
        let position = |c: &str| names.iter().position(|n| n == c);
        let (Some(fi), Some(ci)) = (position(FILE_NAME_COLUMN), position(column)) else {
            let missing = if position(FILE_NAME_COLUMN).is_none() {
                FILE_NAME_COLUMN
            } else {
                column
            };
            let reason = missing_column(missing, &present);
            return self.problems.add(meta, Some(header.line), reason);
        };
        for r in records {
            if let Some(e) = r.error {
                self.problems.add(meta, Some(r.line), e)?;
                continue;
            }
            if r.fields.len() != names.len() {
                let reason = format!(
                    "{} fields, but the header row has {} ({present})",
                    r.fields.len(),
                    names.len()
                );
                self.problems.add(meta, Some(r.line), reason)?;
                continue;
            }
            let Ok(file_name) = std::str::from_utf8(&r.fields[fi]) else {
                let reason = format!("column {FILE_NAME_COLUMN:?}: not valid UTF-8");
                self.problems.add(meta, Some(r.line), reason)?;
                continue;
            };
            let captions = match std::str::from_utf8(&r.fields[ci]) {
                Ok(cell) => cell_captions(column, cell),
                Err(_) => Err(format!("column {column:?}: not valid UTF-8")),
            };
            self.row(meta, r.line, file_name, captions)?;
        }
        Ok(())
    }

    /// The listed image a row names, or `None` (reported) when it names none.
    fn resolve(&mut self, meta: &Path, line: usize, file_name: &str) -> Result<Option<usize>> {
        let dir = meta.parent().unwrap_or(Path::new(""));
        let reason = if file_name.trim().is_empty() {
            format!("column {FILE_NAME_COLUMN:?} is empty; expected the image's path")
        } else if Path::new(file_name).is_absolute() {
            format!(
                "{FILE_NAME_COLUMN} {file_name:?} is absolute; expected a path relative to {}",
                dir.display()
            )
        } else {
            let path = normalize(&dir.join(file_name));
            if let Some(&i) = self.index.get(&path) {
                return Ok(Some(i));
            }
            if path.is_file() {
                format!(
                    "{FILE_NAME_COLUMN} {file_name:?} is not one of the folder's images (PNG, \
                     JPEG, BMP, TIFF or WebP, not hidden)"
                )
            } else {
                format!(
                    "{FILE_NAME_COLUMN} {file_name:?}: no such file ({})",
                    path.display()
                )
            }
        };
        self.problems.add(meta, Some(line), reason)?;
        Ok(None)
    }

    /// One row: the first row naming an image decides its captions.
    fn row(
        &mut self,
        meta: &Path,
        line: usize,
        file_name: &str,
        captions: std::result::Result<Vec<String>, String>,
    ) -> Result<()> {
        let Some(i) = self.resolve(meta, line, file_name)? else {
            return Ok(());
        };
        if let Some((first, first_line)) = &self.first_row[i] {
            let reason = format!(
                "a second row for {file_name:?} (the first is {}:{first_line}); this row is \
                 ignored",
                first.display()
            );
            return self.problems.add(meta, Some(line), reason);
        }
        self.first_row[i] = Some((meta.to_path_buf(), line));
        match captions {
            Ok(c) => self.captions[i] = Some(c),
            Err(reason) => self.problems.add(meta, Some(line), reason)?,
        }
        Ok(())
    }

    /// Per image: its captions, or why it has none.
    fn finish(self, metadata: &[PathBuf]) -> Vec<std::result::Result<Vec<String>, String>> {
        let listed_in = match metadata {
            [one] => file_name_of(one),
            more => format!("any of {} metadata files", more.len()),
        };
        self.captions
            .into_iter()
            .zip(self.first_row)
            .map(|(captions, row)| match (captions, row) {
                (Some(c), _) => Ok(c),
                (None, Some((meta, line))) => Err(format!(
                    "no usable caption: its row {}:{line} was rejected",
                    meta.display()
                )),
                (None, None) => Err(format!("no caption: not listed in {listed_in}")),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
