use super::*;
use crate::preprocess::Crop;
use crate::source::{OpenOptions, SourceSpec};

fn digits() -> Dataset {
    SourceSpec::Digits.open(&OpenOptions::default()).unwrap()
}

fn augmenting() -> Preprocess {
    Preprocess {
        resolution: Some(24),
        crop: Crop::Random,
        random_flip: true,
        ..Default::default()
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    Vec::<f32>::try_from(t.flatten(0, -1))
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

fn take(loader: &mut DataLoader, k: usize) -> Vec<(Vec<usize>, Vec<u32>, Position)> {
    (0..k)
        .map(|_| {
            let b = loader.next_batch().unwrap();
            (b.indices.clone(), bits(&b.images), b.next)
        })
        .collect()
}

#[test]
fn batches_have_the_right_shape_labels_and_range() {
    let cfg = LoaderConfig {
        batch_size: 16,
        ..Default::default()
    };
    let mut l = DataLoader::new(digits(), Preprocess::default(), cfg, Position::default()).unwrap();
    let b = l.next_batch().unwrap();
    assert_eq!(b.images.size(), [16, 1, 28, 28]);
    assert_eq!(b.labels.as_ref().unwrap().size(), [16]);
    assert!(b.images.min().double_value(&[]) >= -1.0 && b.images.max().double_value(&[]) <= 1.0);
    let ds = l.dataset();
    let want: Vec<i64> = b.indices.iter().map(|&i| ds.label(i).unwrap()).collect();
    assert_eq!(Vec::<i64>::try_from(b.labels.unwrap()).unwrap(), want);
    assert_eq!(l.batches_per_epoch(), 5000 / 16);
}

#[test]
fn same_seed_same_stream_other_seed_other_stream() {
    let cfg = LoaderConfig {
        batch_size: 32,
        seed: 5,
        ..Default::default()
    };
    let a = take(
        &mut DataLoader::new(digits(), augmenting(), cfg.clone(), Position::default()).unwrap(),
        3,
    );
    let b = take(
        &mut DataLoader::new(digits(), augmenting(), cfg.clone(), Position::default()).unwrap(),
        3,
    );
    assert_eq!(a, b);
    let other = LoaderConfig { seed: 6, ..cfg };
    let c = take(
        &mut DataLoader::new(digits(), augmenting(), other, Position::default()).unwrap(),
        1,
    );
    assert_ne!(a[0].0, c[0].0);
}

#[test]
fn every_epoch_visits_every_image_once_in_a_new_order() {
    let cfg = LoaderConfig {
        batch_size: 1000,
        drop_last: false,
        ..Default::default()
    };
    let mut l = DataLoader::new(digits(), Preprocess::default(), cfg, Position::default()).unwrap();
    let mut epochs = Vec::new();
    for _ in 0..2 {
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.extend(l.next_batch().unwrap().indices);
        }
        epochs.push(seen);
    }
    assert_ne!(epochs[0], epochs[1]);
    for mut e in epochs {
        e.sort_unstable();
        assert_eq!(e, (0..5000).collect::<Vec<_>>());
    }
    assert_eq!(l.position(), Position { epoch: 2, index: 0 });
}

#[test]
fn resume_at_a_position_yields_the_identical_remaining_stream() {
    // 5000 / 768 = 6 batches an epoch: 10 batches cross an epoch boundary.
    let cfg = LoaderConfig {
        batch_size: 768,
        seed: 11,
        ..Default::default()
    };
    let straight = take(
        &mut DataLoader::new(digits(), augmenting(), cfg.clone(), Position::default()).unwrap(),
        10,
    );
    for k in [1, 5, 6, 7] {
        let resume_at = straight[k - 1].2;
        let mut resumed = DataLoader::new(digits(), augmenting(), cfg.clone(), resume_at).unwrap();
        assert_eq!(resumed.position(), resume_at);
        assert_eq!(
            take(&mut resumed, 10 - k),
            straight[k..],
            "resumed after batch {k}"
        );
    }
    assert_eq!(straight[5].2, Position { epoch: 1, index: 0 });
}

#[test]
fn bad_settings_are_clear_errors() {
    let err = DataLoader::new(
        digits(),
        Preprocess::default(),
        LoaderConfig {
            batch_size: 0,
            ..Default::default()
        },
        Position::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("batch_size"), "{err}");
    let err = DataLoader::new(
        digits(),
        Preprocess::default(),
        LoaderConfig::default(),
        Position {
            epoch: 0,
            index: 5000,
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("resume position 5000"), "{err}");
}

#[test]
fn truncated_file_found_while_batching_is_replaced_and_recorded() {
    use image::{DynamicImage, GrayImage, ImageFormat, Luma};
    let dir = tempfile::tempdir().unwrap();
    for i in 0..4u8 {
        let img = DynamicImage::ImageLuma8(GrayImage::from_fn(6, 6, |x, _| Luma([x as u8 * i])));
        img.save_with_format(dir.path().join(format!("{i}.png")), ImageFormat::Png)
            .unwrap();
    }
    let bytes = std::fs::read(dir.path().join("2.png")).unwrap();
    std::fs::write(dir.path().join("2.png"), &bytes[..bytes.len() - 20]).unwrap();
    // lazy decoding: the header is fine, so the damage shows only at batch time
    let ds = SourceSpec::Folder(dir.path().to_path_buf())
        .open(&OpenOptions {
            cache: Some(false),
            strict: false,
        })
        .unwrap();
    assert_eq!(ds.len(), 4);
    let cfg = LoaderConfig {
        batch_size: 4,
        shuffle: false,
        ..Default::default()
    };
    let mut l =
        DataLoader::new(ds, Preprocess::default(), cfg.clone(), Position::default()).unwrap();
    let b = l.next_batch().unwrap();
    assert_eq!(b.indices, [0, 1, 3, 3]);
    let skipped = l.skipped();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].0.ends_with("2.png"));

    let strict = SourceSpec::Folder(dir.path().to_path_buf())
        .open(&OpenOptions {
            cache: Some(false),
            strict: true,
        })
        .unwrap();
    let mut l = DataLoader::new(strict, Preprocess::default(), cfg, Position::default()).unwrap();
    let err = l.next_batch().unwrap_err().to_string();
    assert_eq!(err.matches("2.png").count(), 1, "the path once: {err}");
    assert!(err.contains("cannot read image"), "{err}");
}

/// A folder of `n` 4x4 grey images with a `metadata.jsonl`: image `k` has
/// the captions `["k a", "k b"]` (two, so the choice per epoch shows).
fn captioned_folder(dir: &std::path::Path, n: usize) -> Dataset {
    use std::io::Write;
    let mut meta = std::fs::File::create(dir.join("metadata.jsonl")).unwrap();
    for k in 0..n {
        let img = image::GrayImage::from_pixel(4, 4, image::Luma([(k * 7 % 256) as u8]));
        img.save(dir.join(format!("{k:03}.png"))).unwrap();
        writeln!(
            meta,
            "{{\"file_name\": \"{k:03}.png\", \"text\": [\"{k} a\", \"{k} b\"]}}"
        )
        .unwrap();
    }
    let captions = crate::source::CaptionOptions {
        enabled: Some(true),
        ..Default::default()
    };
    SourceSpec::Folder(dir.to_path_buf())
        .open_with_captions(
            &OpenOptions {
                strict: true,
                ..Default::default()
            },
            &captions,
        )
        .unwrap()
}

#[test]
fn batches_carry_the_epochs_caption_of_each_image() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LoaderConfig {
        batch_size: 5,
        seed: 11,
        ..Default::default()
    };
    let mut l = DataLoader::new(
        captioned_folder(dir.path(), 20),
        Preprocess::default(),
        cfg.clone(),
        Position::default(),
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut resume_at = None;
    for k in 0..12 {
        let b = l.next_batch().unwrap();
        let captions = b
            .captions
            .clone()
            .expect("a captioned source gives captions");
        assert_eq!(captions.len(), b.indices.len());
        for (&i, c) in b.indices.iter().zip(&captions) {
            assert_eq!(Some(c.as_str()), l.dataset().caption(i, b.start.epoch, 11));
            assert!(l.dataset().captions(i).contains(c), "{c}");
        }
        if k == 5 {
            resume_at = Some(b.next);
        }
        seen.push((b.indices, captions, b.start.epoch));
    }
    // Both captions of an image turn up over the epochs.
    let of_image_0: std::collections::BTreeSet<&String> = seen
        .iter()
        .flat_map(|(i, c, _)| i.iter().zip(c).filter(|(i, _)| **i == 0).map(|(_, c)| c))
        .collect();
    assert_eq!(of_image_0.len(), 2, "{of_image_0:?}");
    // A loader resumed mid-stream hands out the same captions.
    let mut resumed = DataLoader::new(
        captioned_folder(dir.path(), 20),
        Preprocess::default(),
        cfg,
        resume_at.unwrap(),
    )
    .unwrap();
    for (indices, captions, _) in &seen[6..] {
        let b = resumed.next_batch().unwrap();
        assert_eq!((&b.indices, b.captions.as_ref()), (indices, Some(captions)));
    }
    // Sources without captions give none.
    let mut plain = DataLoader::new(
        digits(),
        Preprocess::default(),
        LoaderConfig::default(),
        Position::default(),
    )
    .unwrap();
    assert!(plain.next_batch().unwrap().captions.is_none());
}

#[test]
fn caption_dropout_empties_that_share_of_captions() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = captioned_folder(dir.path(), 50);
    let mut l = DataLoader::new(
        dataset,
        Preprocess::default(),
        LoaderConfig {
            batch_size: 50,
            caption_dropout: 0.25,
            ..Default::default()
        },
        Position::default(),
    )
    .unwrap();
    // 20 epochs of 50 images: 1000 draws, standard deviation about 14.
    let empty: usize = (0..20)
        .map(|_| {
            let b = l.next_batch().unwrap();
            b.captions.unwrap().iter().filter(|c| c.is_empty()).count()
        })
        .sum();
    assert!((200..=300).contains(&empty), "{empty} of 1000 dropped");
    for (p, want) in [(0.0, 0), (1.0, 50)] {
        let mut l = DataLoader::new(
            captioned_folder(dir.path(), 50),
            Preprocess::default(),
            LoaderConfig {
                batch_size: 50,
                caption_dropout: p,
                ..Default::default()
            },
            Position::default(),
        )
        .unwrap();
        let b = l.next_batch().unwrap();
        assert_eq!(
            b.captions.unwrap().iter().filter(|c| c.is_empty()).count(),
            want
        );
    }
    let err = DataLoader::new(
        captioned_folder(dir.path(), 50),
        Preprocess::default(),
        LoaderConfig {
            caption_dropout: 1.5,
            ..Default::default()
        },
        Position::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("caption_dropout 1.5"), "{err}");
}
