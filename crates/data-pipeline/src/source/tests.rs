use super::*;
use image::{ImageFormat, Luma, Rgb};

fn save(img: &DynamicImage, path: &Path, format: ImageFormat) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save_with_format(path, format).unwrap();
}

fn grey(v: u8) -> DynamicImage {
    DynamicImage::ImageLuma8(GrayImage::from_fn(8, 8, |x, y| {
        Luma([v.wrapping_add((x + y) as u8)])
    }))
}

#[test]
fn bundled_digits_are_5000_labelled_28px_images() {
    let d = SourceSpec::Digits.open(&OpenOptions::default()).unwrap();
    assert_eq!(d.len(), 5000);
    assert_eq!(d.size(0), (28, 28));
    assert_eq!(d.class_names().len(), 10);
    let mut counts = [0; 10];
    for i in 0..d.len() {
        counts[d.label(i).unwrap() as usize] += 1;
    }
    assert_eq!(counts, [500; 10]);
    let img = d.image(4321).unwrap();
    assert_eq!(img.color(), image::ColorType::L8);
    assert!(
        img.as_bytes().iter().any(|&v| v > 200),
        "a digit has bright strokes"
    );
}

#[test]
fn folder_reads_every_format_with_labels() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    save(&grey(10), &root.join("a/x.png"), ImageFormat::Png);
    save(&grey(20), &root.join("a/y.bmp"), ImageFormat::Bmp);
    save(&grey(30), &root.join("b/z.tiff"), ImageFormat::Tiff);
    save(&grey(40), &root.join("b/w.jpg"), ImageFormat::Jpeg);
    let rgb = DynamicImage::ImageRgb8(RgbImage::from_fn(8, 8, |x, _| Rgb([x as u8 * 30, 0, 0])));
    save(&rgb, &root.join("c/v.webp"), ImageFormat::WebP);
    let d = SourceSpec::Folder(root.to_path_buf())
        .open(&OpenOptions::default())
        .unwrap();
    assert_eq!(d.len(), 5);
    assert_eq!(d.class_names(), ["a", "b", "c"]);
    let labels: Vec<i64> = (0..5).map(|i| d.label(i).unwrap()).collect();
    assert_eq!(labels, [0, 0, 1, 1, 2]);
    // lossless formats decode to the exact pixels
    assert_eq!(d.image(0).unwrap(), grey(10));
    // (the BMP encoder stores grey as RGB; the values are exact all the same)
    assert_eq!(d.image(1).unwrap().to_luma8(), grey(20).to_luma8());
    assert!(d.skipped.is_empty());
    // the same files without the cache decode identically
    let lazy = SourceSpec::Folder(root.to_path_buf())
        .open(&OpenOptions {
            cache: Some(false),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(lazy.image(2).unwrap(), d.image(2).unwrap());
}

#[test]
fn sixteen_bit_files_keep_their_precision() {
    let dir = tempfile::tempdir().unwrap();
    let img = DynamicImage::ImageLuma16(ImageBuffer::from_fn(4, 4, |x, y| {
        Luma([(x * 4 + y) as u16 + 40_000])
    }));
    save(&img, &dir.path().join("s.png"), ImageFormat::Png);
    let d = SourceSpec::Folder(dir.path().to_path_buf())
        .open(&OpenOptions::default())
        .unwrap();
    let back = d.image(0).unwrap();
    assert_eq!(back, img);
    let chw = crate::preprocess::to_chw(&back);
    let expected = f32::from(40_000u16) / 65535.0 * 2.0 - 1.0;
    assert_eq!(chw.data[0], expected);
}

#[test]
fn unreadable_files_are_skipped_and_reported_or_fatal_when_strict() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    save(&grey(1), &root.join("good.png"), ImageFormat::Png);
    std::fs::write(root.join("zero.png"), b"").unwrap();
    std::fs::write(root.join("garbage.jpg"), b"definitely not a jpeg").unwrap();
    let mut png = Vec::new();
    grey(2)
        .write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
        .unwrap();
    std::fs::write(root.join("truncated.png"), &png[..png.len() / 2]).unwrap();

    let d = SourceSpec::Folder(root.to_path_buf())
        .open(&OpenOptions::default())
        .unwrap();
    assert_eq!(d.len(), 1);
    let mut names: Vec<String> = d
        .skipped
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["garbage.jpg", "truncated.png", "zero.png"]);

    // Strict: an error that names the first bad file once, decoded
    // eagerly (cached) or only its header read (lazy).
    for cache in [Some(true), Some(false)] {
        let err = SourceSpec::Folder(root.to_path_buf())
            .open(&OpenOptions {
                strict: true,
                cache,
            })
            .unwrap_err()
            .to_string();
        let named = ["garbage.jpg", "truncated.png", "zero.png"]
            .iter()
            .filter(|n| err.contains(*n))
            .count();
        assert_eq!(named, 1, "{err}");
        let root_text = root.display().to_string();
        assert_eq!(err.matches(&root_text).count(), 1, "the path twice: {err}");
        assert_eq!(err.matches("cannot read image").count(), 1, "{err}");
    }
}

#[test]
fn a_missing_or_non_folder_source_is_named_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let open = |p: &Path| {
        SourceSpec::Folder(p.to_path_buf())
            .open(&OpenOptions::default())
            .unwrap_err()
            .to_string()
    };
    let missing = dir.path().join("no-such-folder");
    assert_eq!(
        open(&missing),
        format!("no such file or folder: {}", missing.display())
    );
    let file = dir.path().join("file.png");
    save(&grey(1), &file, ImageFormat::Png);
    assert_eq!(open(&file), format!("{}: not a folder", file.display()));
}

#[test]
fn mixed_sizes_are_reported_with_both_files() {
    let dir = tempfile::tempdir().unwrap();
    save(&grey(1), &dir.path().join("a.png"), ImageFormat::Png);
    let big = DynamicImage::ImageLuma8(GrayImage::new(9, 8));
    save(&big, &dir.path().join("b.png"), ImageFormat::Png);
    let d = SourceSpec::Folder(dir.path().to_path_buf())
        .open(&OpenOptions::default())
        .unwrap();
    let err = d.check_uniform_size().unwrap_err().to_string();
    assert!(
        err.contains("a.png") && err.contains("b.png") && err.contains("resolution"),
        "{err}"
    );
}

#[test]
fn idx_and_cifar_specs_open_files() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("img-idx3-ubyte");
    let labels = dir.path().join("lab-idx1-ubyte");
    std::fs::write(
        &images,
        idx::encode(&[3, 2, 2], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
    )
    .unwrap();
    std::fs::write(&labels, idx::encode(&[3], &[2, 0, 1])).unwrap();
    let spec: SourceSpec = format!("idx:{},{}", images.display(), labels.display())
        .parse()
        .unwrap();
    let d = spec.open(&OpenOptions::default()).unwrap();
    assert_eq!(
        (d.len(), d.label(0), d.class_names().len()),
        (3, Some(2), 3)
    );
    assert_eq!(d.image(2).unwrap().as_bytes(), [8, 9, 10, 11]);

    std::fs::write(&labels, idx::encode(&[2], &[0, 1])).unwrap();
    let err = spec.open(&OpenOptions::default()).unwrap_err().to_string();
    assert!(err.contains("2 labels for 3 images"), "{err}");

    // Zero-width images: an error, not a division by zero in `len`.
    std::fs::write(&images, idx::encode(&[3, 2, 0], &[])).unwrap();
    std::fs::write(&labels, idx::encode(&[3], &[2, 0, 1])).unwrap();
    let err = spec.open(&OpenOptions::default()).unwrap_err().to_string();
    assert!(err.contains("height and width must be at least 1"), "{err}");

    let cifar = dir.path().join("cifar");
    std::fs::create_dir_all(&cifar).unwrap();
    let mut record = vec![3u8];
    record.extend(vec![128u8; 3072]);
    std::fs::write(cifar.join("test_batch.bin"), &record).unwrap();
    let spec: SourceSpec = format!("cifar10:{}:test", cifar.display()).parse().unwrap();
    let d = spec.open(&OpenOptions::default()).unwrap();
    assert_eq!((d.len(), d.label(0), d.size(0)), (1, Some(3), (32, 32)));
    assert_eq!(d.class_names()[3], "cat");
}

#[test]
fn specs_parse_print_and_explain_errors() {
    for s in [
        "digits",
        "fashion-mnist",
        "fashion-mnist:test",
        "mnist:test",
        "cifar10",
        "idx:a.gz,b.gz",
    ] {
        assert_eq!(s.parse::<SourceSpec>().unwrap().to_string(), s);
    }
    let err = "no-such-thing"
        .parse::<SourceSpec>()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no-such-thing") && err.contains("digits"),
        "{err}"
    );
    let err = "mnist:validation"
        .parse::<SourceSpec>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("validation"), "{err}");
}

#[test]
fn fashion_mnist_is_found_where_the_package_puts_it() {
    let system = Path::new("/usr/share/datasets/fashion-mnist");
    if !system.join("t10k-images-idx3-ubyte.gz").exists() {
        return; // the Debian package dataset-fashion-mnist is not installed here
    }
    let d = SourceSpec::FashionMnist(Split::Test)
        .open(&OpenOptions::default())
        .unwrap();
    assert_eq!(d.len(), 10_000);
    assert_eq!(d.class_names()[9], "Ankle boot");
}
