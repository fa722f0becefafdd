use super::*;
use crate::source::{Dataset, OpenOptions, SourceSpec};
use image::{DynamicImage, GrayImage, ImageFormat, Luma};

fn png(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    DynamicImage::ImageLuma8(GrayImage::from_pixel(4, 4, Luma([9])))
        .save_with_format(path, ImageFormat::Png)
        .unwrap();
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn open_with(root: &Path, opts: &OpenOptions) -> Result<Dataset> {
    SourceSpec::Folder(root.to_path_buf()).open_with_captions(opts, &CaptionOptions::default())
}

fn open_captions(root: &Path, captions: &CaptionOptions) -> Result<Dataset> {
    SourceSpec::Folder(root.to_path_buf()).open_with_captions(&OpenOptions::default(), captions)
}

fn open(root: &Path) -> Dataset {
    open_with(root, &OpenOptions::default()).unwrap()
}

fn strict_error(root: &Path) -> String {
    let opts = OpenOptions {
        strict: true,
        ..Default::default()
    };
    open_with(root, &opts).unwrap_err().to_string()
}

/// The file names of a dataset's images, in order.
fn names(d: &Dataset) -> Vec<String> {
    (0..d.len())
        .map(|i| file_name_of(Path::new(&d.describe(i))))
        .collect()
}

fn left_out(d: &Dataset) -> Vec<String> {
    d.skipped.iter().map(|(p, _)| file_name_of(p)).collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn jsonl_strings_lists_and_other_columns() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for n in ["a", "b", "c"] {
        png(&root.join(format!("{n}.png")));
    }
    write(
        &root.join("metadata.jsonl"),
        "{\"file_name\": \"a.png\", \"text\": \"a cat, sitting\", \"score\": 1}\r\n\
         \n\
         {\"file_name\": \"./b.png\", \"text\": [\"one\", \"two\", \"three\"]}\n\
         {\"text\": \"a \\\"quoted\\\" dog\", \"file_name\": \"c.png\"}",
    );
    let d = open(root);
    assert!(d.has_captions());
    assert_eq!(names(&d), ["a.png", "b.png", "c.png"]);
    assert_eq!(d.captions(0), ["a cat, sitting"]);
    assert_eq!(d.captions(1), ["one", "two", "three"]);
    assert_eq!(d.captions(2), ["a \"quoted\" dog"]);
    assert_eq!(d.caption(0, 5, 1), Some("a cat, sitting"));
    assert!(!d.has_labels());
    let report = d.caption_report().unwrap();
    assert_eq!(
        report.source,
        CaptionSource::Metadata(vec![root.join("metadata.jsonl")])
    );
    assert_eq!(report.column, "text");
    assert_eq!(
        (report.images_with_captions, report.images_left_out),
        (3, 0)
    );
    assert!(report.skipped.is_empty() && d.skipped.is_empty());
}

#[test]
fn csv_quotes_commas_line_breaks_and_list_cells() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for n in ["a", "b", "c", "d"] {
        png(&root.join(format!("{n}.png")));
    }
    write(
        &root.join("metadata.csv"),
        "\u{feff}file_name,text,extra\r\n\
         a.png,\"a cat, \"\"sitting\"\"\",x\r\n\
         b.png,\"[\"\"one\"\", \"\"two\"\"]\",y\n\
         c.png,\"two\nlines\",z\n\
         d.png,[sic] a plain caption,w\n",
    );
    let d = open(root);
    assert_eq!(d.captions(0), ["a cat, \"sitting\""]);
    assert_eq!(d.captions(1), ["one", "two"]);
    assert_eq!(d.captions(2), ["two\nlines"]);
    assert_eq!(d.captions(3), ["[sic] a plain caption"]);
    assert!(d.caption_report().unwrap().skipped.is_empty());
}

#[test]
fn the_caption_column_is_chosen_by_the_caller_and_a_missing_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    png(&root.join("a.png"));
    png(&root.join("b.png"));
    write(
        &root.join("metadata.jsonl"),
        "{\"file_name\": \"a.png\", \"prompt\": \"x\"}\n{\"file_name\": \"b.png\", \"prompt\": \"y\"}\n",
    );
    let prompt = CaptionOptions {
        caption_column: Some("prompt".into()),
        ..Default::default()
    };
    let d = open_captions(root, &prompt).unwrap();
    assert_eq!(
        (d.captions(0), d.captions(1)),
        (&strings(&["x"])[..], &strings(&["y"])[..])
    );
    assert_eq!(d.caption_report().unwrap().column, "prompt");

    let meta = root.join("metadata.jsonl").display().to_string();
    let err = strict_error(root);
    assert_eq!(
        err,
        format!(
            "{meta}:1: no column \"text\" (columns: file_name, prompt); set caption_column to \
             the column that holds the captions"
        )
    );
    // Without strict every row is reported, and no image is left: an error all the same.
    let err = open_with(root, &OpenOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("none of the 2 images has a usable caption")
            && err.contains(&format!(
                "{meta}:1: no column \"text\" (columns: file_name, prompt)"
            )),
        "{err}"
    );

    // The same for a CSV header.
    std::fs::remove_file(root.join("metadata.jsonl")).unwrap();
    write(
        &root.join("metadata.csv"),
        "file_name,prompt\na.png,x\nb.png,y\n",
    );
    let err = strict_error(root);
    assert!(
        err.contains("metadata.csv:1: no column \"text\" (columns: file_name, prompt)"),
        "{err}"
    );
    assert_eq!(open_captions(root, &prompt).unwrap().captions(1), ["y"]);
    write(&root.join("metadata.csv"), "name,text\na.png,x\n");
    let err = strict_error(root);
    assert!(
        err.contains("metadata.csv:1: no column \"file_name\"") && err.contains("name, text"),
        "{err}"
    );
}

#[test]
fn sidecars_are_whole_trimmed_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for n in ["a", "b", "c"] {
        png(&root.join(format!("{n}.png")));
    }
    write(&root.join("a.txt"), "  a dog\non two lines \n\n");
    write(&root.join("b.txt"), "\u{feff}a bird");
    let d = open(root);
    assert_eq!(names(&d), ["a.png", "b.png"]);
    assert_eq!(d.captions(0), ["a dog\non two lines"]);
    assert_eq!(d.captions(1), ["a bird"]);
    let report = d.caption_report().unwrap();
    assert_eq!(report.source, CaptionSource::Sidecars);
    assert_eq!(
        (report.images_with_captions, report.images_left_out),
        (2, 1)
    );
    assert_eq!(left_out(&d), ["c.png"]);
    assert_eq!(d.skipped[0].1, "no caption: no c.txt beside it");
    assert_eq!(report.skipped[0].path, root.join("c.png"));

    let err = strict_error(root);
    assert_eq!(
        err,
        format!(
            "{}: no caption: no c.txt beside it",
            root.join("c.png").display()
        )
    );
}

#[test]
fn bad_sidecars_are_named_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    png(&root.join("a.png"));
    png(&root.join("b.png"));
    write(&root.join("a.txt"), "fine");
    for (bytes, expected) in [
        (&b"  \n\t"[..], "b.txt: empty caption"),
        (&b"first line\ncaf\xe9\n"[..], "b.txt:2: not valid UTF-8"),
    ] {
        write(&root.join("b.txt"), bytes);
        let err = strict_error(root);
        assert!(err.ends_with(expected), "{err}");
        let d = open(root);
        assert_eq!(
            (names(&d), left_out(&d)),
            (strings(&["a.png"]), strings(&["b.png"]))
        );
        let report = d.caption_report().unwrap();
        assert!(
            report.skipped[0].to_string().ends_with(expected),
            "{report:?}"
        );
        assert_eq!(
            report.skipped.len(),
            2,
            "the sidecar, then the image left out"
        );
    }
}

#[test]
fn a_metadata_file_wins_over_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    png(&root.join("a.png"));
    write(&root.join("a.txt"), "from the sidecar");
    write(
        &root.join("metadata.jsonl"),
        "{\"file_name\": \"a.png\", \"text\": \"from the metadata\"}\n",
    );
    let d = open(root);
    assert_eq!(d.captions(0), ["from the metadata"]);
    assert_eq!(d.caption_report().unwrap().sidecars_ignored, 1);
}

#[test]
fn several_captions_are_picked_per_epoch_deterministically_and_all_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    png(&root.join("a.png"));
    png(&root.join("b.png"));
    write(
        &root.join("metadata.jsonl"),
        "{\"file_name\": \"a.png\", \"text\": \"only\"}\n\
         {\"file_name\": \"b.png\", \"text\": [\"one\", \"two\", \"three\"]}\n",
    );
    let d = open(root);
    let picks = |seed: u64| -> Vec<&str> {
        (0..300)
            .map(|epoch| d.caption(1, epoch, seed).unwrap())
            .collect()
    };
    let first = picks(7);
    assert_eq!(first, picks(7), "the same seed picks the same");
    assert_ne!(first, picks(8), "another seed picks differently");
    for c in ["one", "two", "three"] {
        let count = first.iter().filter(|p| **p == c).count();
        assert!((70..130).contains(&count), "{c}: {count} of 300");
    }
    assert!((0..50).all(|e| d.caption(0, e, 7) == Some("only")));
    assert_eq!(pick(&[], 1, 2, 3), None);
    // The epoch changes the choice: not one caption for every epoch.
    assert!(first.windows(2).any(|w| w[0] != w[1]));
}

#[test]
fn caption_dropout_rate_matches_p_and_is_deterministic() {
    for p in [0.0, 0.05, 0.1, 0.5, 0.9, 1.0] {
        let drops = (0..10_000)
            .filter(|&i| caption_dropout(p, 11, 3, i))
            .count();
        let rate = drops as f64 / 10_000.0;
        assert!((rate - p).abs() <= 0.01, "p {p}: rate {rate}");
    }
    let draws = |epoch: u64| -> Vec<bool> {
        (0..1000)
            .map(|i| caption_dropout(0.5, 11, epoch, i))
            .collect()
    };
    assert_eq!(draws(3), draws(3));
    assert_ne!(draws(3), draws(4));
    assert!(!caption_dropout(f64::NAN, 1, 1, 1));
}

#[test]
fn training_caption_is_empty_with_the_dropout_probability() {
    let dir = tempfile::tempdir().unwrap();
    png(&dir.path().join("a.png"));
    write(&dir.path().join("a.txt"), "a fish");
    let d = open(dir.path());
    assert_eq!(d.training_caption(0, 0, 1, 0.0), Some("a fish"));
    assert_eq!(d.training_caption(0, 0, 1, 1.0), Some(""));
    let empty = (0..1000)
        .filter(|&e| d.training_caption(0, e, 1, 0.2) == Some(""))
        .count();
    assert!((150..250).contains(&empty), "{empty}");
}

/// Every bad row, strict (an error naming file and line) and not (a
/// warning, the row reported, the image left out and the next rows read).
#[test]
fn bad_metadata_rows_are_errors_when_strict_and_reported_otherwise() {
    let jsonl: &[(&[u8], &str)] = &[
        (
            b"{\"file_name\": \"zzz.png\", \"text\": \"x\"}",
            "file_name \"zzz.png\": no such file",
        ),
        (
            b"{\"file_name\": \"b.png\", \"prompt\": \"x\"}",
            "no column \"text\" (columns: file_name, prompt)",
        ),
        (
            b"{\"file_name\": \"b.png\", \"text\": \"caf\xe9\"}",
            "not valid UTF-8 (byte 36 of the line)",
        ),
        (
            b"{\"file_name\": \"b.png\", \"text\": \"  \"}",
            "column \"text\": empty caption",
        ),
        (
            b"{\"file_name\": \"b.png\", \"text\": []}",
            "column \"text\": an empty list",
        ),
        (
            b"{\"file_name\": \"b.png\", \"text\": [\"ok\", \"\"]}",
            "caption 2 of the list is empty",
        ),
        (
            b"{\"file_name\": \"b.png\", \"text\": [\"ok\", null]}",
            "item 2 of the list is null; expected a string",
        ),
        (
            b"{\"file_name\": \"b.png\", \"text\": 3}",
            "column \"text\": a number; expected a string or a list of strings",
        ),
        (
            b"{\"file_name\": \"b.png\", \"text\": \"x\"",
            "not valid JSON at column",
        ),
        (b"[\"b.png\", \"x\"]", "a list; expected a JSON object"),
        (b"{\"text\": \"x\"}", "no column \"file_name\""),
        (
            b"{\"file_name\": 7, \"text\": \"x\"}",
            "column \"file_name\": a number",
        ),
        (
            b"{\"file_name\": \"notes.txt\", \"text\": \"x\"}",
            "\"notes.txt\" is not one of the folder's images",
        ),
        (
            b"{\"file_name\": \"/elsewhere/b.png\", \"text\": \"x\"}",
            "is absolute",
        ),
        (
            b"{\"file_name\": \"a.png\", \"text\": \"again\"}",
            "a second row for \"a.png\" (the first is",
        ),
    ];
    let csv: &[(&[u8], &str, usize)] = &[
        (b"zzz.png,x", "file_name \"zzz.png\": no such file", 2),
        (b"b.png,\"caf\xe9\"", "column \"text\": not valid UTF-8", 2),
        (b"b.png,", "column \"text\": empty caption", 2),
        (b"b.png,[]", "an empty list", 2),
        (
            b"b.png,\"[\"\"ok\"\", 3]\"",
            "item 2 of the list is a number",
            2,
        ),
        (b"b.png,x,more", "3 fields, but the header row has 2", 2),
        (b"b.png,\"x\"y", "text after the closing quote", 2),
        (b"a.png,again", "a second row for \"a.png\"", 2),
        // an open quote swallows the rest of the file, c.png's row too
        (
            b"b.png,\"never closed",
            "opened on line 3 is never closed",
            1,
        ),
    ];
    let cases = jsonl
        .iter()
        .map(|&(row, why)| {
            let mut text = b"{\"file_name\": \"a.png\", \"text\": \"first\"}\n".to_vec();
            text.extend(row);
            text.extend(b"\n{\"file_name\": \"c.png\", \"text\": \"third\"}\n");
            ("metadata.jsonl", text, why, 2)
        })
        .chain(csv.iter().map(|&(row, why, kept)| {
            let mut text = b"file_name,text\na.png,first\n".to_vec();
            text.extend(row);
            text.extend(b"\nc.png,third\n");
            ("metadata.csv", text, why, kept)
        }));
    for (meta, text, why, kept) in cases {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for n in ["a", "b", "c"] {
            png(&root.join(format!("{n}.png")));
        }
        write(&root.join("notes.txt"), "not an image");
        write(&root.join(meta), &text);
        let line = if meta.ends_with("csv") { 3 } else { 2 };
        let at = format!("{}:{line}: ", root.join(meta).display());

        let err = strict_error(root);
        assert!(
            err.starts_with(&at) && err.contains(why),
            "{meta} {why}: {err}"
        );

        let d = open(root);
        let context = format!("{meta} {why}: {:?}", d.caption_report());
        assert_eq!(d.len(), kept, "{context}");
        assert_eq!(d.captions(0), ["first"], "{context}");
        if kept == 2 {
            assert_eq!(d.captions(1), ["third"], "{context}");
        }
        assert!(left_out(&d).contains(&"b.png".to_string()), "{context}");
        let report = d.caption_report().unwrap();
        let problem = &report.skipped[0];
        assert_eq!(
            (&problem.path, problem.line),
            (&root.join(meta), Some(line)),
            "{context}"
        );
        assert!(problem.to_string().starts_with(&at), "{context}");
        assert!(problem.reason.contains(why), "{context}");
        assert_eq!(report.images_left_out, 3 - kept, "{context}");
    }
}

#[test]
fn an_image_without_a_row_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    png(&root.join("a.png"));
    png(&root.join("b.png"));
    write(
        &root.join("metadata.jsonl"),
        "{\"file_name\": \"a.png\", \"text\": \"x\"}\n",
    );
    let err = strict_error(root);
    assert_eq!(
        err,
        format!(
            "{}: no caption: not listed in metadata.jsonl",
            root.join("b.png").display()
        )
    );
    let d = open(root);
    assert_eq!(
        (names(&d), left_out(&d)),
        (strings(&["a.png"]), strings(&["b.png"]))
    );
    let report = d.caption_report().unwrap();
    assert_eq!(
        (report.images_with_captions, report.images_left_out),
        (1, 1)
    );
}

#[test]
fn a_rejected_row_is_named_by_the_image_it_leaves_out() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    png(&root.join("a.png"));
    png(&root.join("b.png"));
    write(
        &root.join("metadata.jsonl"),
        "{\"file_name\": \"a.png\", \"text\": \"x\"}\n{\"file_name\": \"b.png\", \"text\": \"\"}\n",
    );
    let d = open(root);
    let meta = root.join("metadata.jsonl");
    assert_eq!(
        d.skipped,
        [(
            root.join("b.png"),
            format!(
                "no usable caption: its row {}:2 was rejected",
                meta.display()
            )
        )]
    );
}

#[test]
fn two_metadata_files_in_one_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    png(&root.join("a.png"));
    write(
        &root.join("metadata.jsonl"),
        "{\"file_name\": \"a.png\", \"text\": \"from jsonl\"}\n",
    );
    write(
        &root.join("metadata.csv"),
        "file_name,text\na.png,from csv\n",
    );
    let err = strict_error(root);
    assert!(
        err.starts_with(&root.join("metadata.csv").display().to_string())
            && err.contains("keep one metadata file per folder"),
        "{err}"
    );
    let d = open(root);
    assert_eq!(d.captions(0), ["from jsonl"]);
    assert_eq!(d.caption_report().unwrap().skipped.len(), 1);
}

#[test]
fn captions_and_label_folders_together() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for f in ["cat/a.png", "cat/b.png", "dog/c.png", "dog/d.png"] {
        png(&root.join(f));
    }
    // One metadata file at the root, one inside a label folder.
    write(
        &root.join("metadata.csv"),
        "file_name,text\ncat/b.png,a grey cat\ncat/a.png,a small cat\n",
    );
    write(
        &root.join("dog/metadata.jsonl"),
        "{\"file_name\": \"c.png\", \"text\": [\"a dog\", \"a puppy\"]}\n",
    );
    let d = open(root);
    assert_eq!(d.class_names(), ["cat", "dog"]);
    assert_eq!(names(&d), ["a.png", "b.png", "c.png"]);
    let labels: Vec<i64> = (0..d.len()).map(|i| d.label(i).unwrap()).collect();
    assert_eq!(labels, [0, 0, 1]);
    assert_eq!(d.captions(0), ["a small cat"]);
    assert_eq!(d.captions(1), ["a grey cat"]);
    assert_eq!(d.captions(2), ["a dog", "a puppy"]);
    assert_eq!(left_out(&d), ["d.png"]);
    assert_eq!(
        d.caption_report().unwrap().source,
        CaptionSource::Metadata(vec![
            root.join("dog/metadata.jsonl"),
            root.join("metadata.csv")
        ])
    );
    assert_eq!(
        d.skipped[0].1,
        "no caption: not listed in any of 2 metadata files"
    );
}

#[test]
fn unreadable_images_keep_captions_aligned() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    png(&root.join("a.png"));
    write(&root.join("b.png"), "not a png");
    png(&root.join("c.png"));
    for (n, caption) in [("a", "first"), ("b", "second"), ("c", "third")] {
        write(&root.join(format!("{n}.txt")), caption);
    }
    for cache in [Some(true), Some(false)] {
        let d = open_with(
            root,
            &OpenOptions {
                cache,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(names(&d), ["a.png", "c.png"]);
        assert_eq!(
            (d.captions(0), d.captions(1)),
            (&strings(&["first"])[..], &strings(&["third"])[..])
        );
        assert_eq!(left_out(&d), ["b.png"]);
    }
}

#[test]
fn options_turn_captions_off_or_require_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    png(&root.join("a.png"));
    png(&root.join("b.png"));

    // No captions anywhere: a plain folder, unless captions are required.
    let d = open(root);
    assert!(!d.has_captions() && d.caption_report().is_none());
    assert_eq!((d.caption(0, 0, 0), d.captions(0)), (None, &[][..]));
    for opts in [
        CaptionOptions {
            enabled: Some(true),
            ..Default::default()
        },
        CaptionOptions {
            caption_column: Some("prompt".into()),
            ..Default::default()
        },
    ] {
        let err = open_captions(root, &opts).unwrap_err().to_string();
        assert!(
            err.starts_with(&root.display().to_string()) && err.contains("no captions found"),
            "{err}"
        );
    }
    let err = open_captions(
        root,
        &CaptionOptions {
            caption_column: Some(" ".into()),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("caption_column is empty"), "{err}");

    // Captions off: the metadata file is not read, every image stays.
    write(
        &root.join("metadata.jsonl"),
        "{\"file_name\": \"a.png\", \"text\": \"x\"}\n",
    );
    let d = open_captions(
        root,
        &CaptionOptions {
            enabled: Some(false),
            caption_column: Some("prompt".into()),
        },
    )
    .unwrap();
    assert_eq!((d.len(), d.has_captions()), (2, false));
    assert!(d.skipped.is_empty());

    // Other sources have no captions; requiring them is an error.
    let required = CaptionOptions {
        enabled: Some(true),
        ..Default::default()
    };
    let err = SourceSpec::Digits
        .open_with_captions(&OpenOptions::default(), &required)
        .unwrap_err()
        .to_string();
    assert!(err.contains("only an image folder has captions"), "{err}");
    let d = SourceSpec::Digits.open(&OpenOptions::default()).unwrap();
    assert!(!d.has_captions());
}

#[test]
fn caption_options_load_from_json_with_defaults() {
    let o: CaptionOptions = serde_json::from_str(r#"{"caption_column": "prompt"}"#).unwrap();
    assert_eq!(
        (o.column(), o.required(), o.enabled),
        ("prompt", true, None)
    );
    let o: CaptionOptions = serde_json::from_str("{}").unwrap();
    assert_eq!((o.column(), o.required()), ("text", false));
}

#[test]
fn problems_and_errors_print_file_and_line() {
    let p = CaptionProblem {
        path: PathBuf::from("data/metadata.jsonl"),
        line: Some(4),
        reason: "column \"text\": empty caption".into(),
    };
    assert_eq!(
        p.to_string(),
        "data/metadata.jsonl:4: column \"text\": empty caption"
    );
    assert_eq!(Error::from(p.clone()).to_string(), p.to_string());
    let p = CaptionProblem { line: None, ..p };
    assert_eq!(
        Error::from(p).to_string(),
        "data/metadata.jsonl: column \"text\": empty caption"
    );
}

/// `SourceSpec::open` (what class and unconditional training use) ignores
/// captions: an image without a caption row is kept.
#[test]
fn plain_open_keeps_images_without_captions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for n in ["a", "b"] {
        png(&root.join(format!("{n}.png")));
    }
    write(
        &root.join("metadata.jsonl"),
        "{\"file_name\": \"a.png\", \"text\": \"a cat\"}\n",
    );
    let d = SourceSpec::Folder(root.to_path_buf())
        .open(&OpenOptions::default())
        .unwrap();
    assert_eq!(d.len(), 2);
    assert!(!d.has_captions());
    assert_eq!(open(root).len(), 1);
}
