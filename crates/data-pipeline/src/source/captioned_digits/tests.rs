use std::collections::HashMap;
use std::sync::OnceLock;

use super::*;
use crate::source::{CaptionOptions, OpenOptions, SourceSpec};

fn generator() -> &'static CaptionedDigits {
    static GEN: OnceLock<CaptionedDigits> = OnceLock::new();
    GEN.get_or_init(|| CaptionedDigits::new().unwrap())
}

/// FNV-1a over bytes, to pin pixels.
fn fnv(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Reads (left, right) back from a caption, as a person would: the digits
/// (numerals or words) in the order named, swapped when the caption names
/// the right one first.
fn read_pair(caption: &str) -> (u8, u8) {
    let found: Vec<u8> = caption
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter_map(|w| {
            w.parse::<u8>()
                .ok()
                .or_else(|| WORDS.iter().position(|&n| n == w).map(|d| d as u8))
        })
        .collect();
    assert_eq!(found.len(), 2, "{caption:?} names two digits");
    let right_first = caption.contains("to the right of") || caption.contains("on the right,");
    if right_first {
        (found[1], found[0])
    } else {
        (found[0], found[1])
    }
}

/// The ink box of one half of a canvas, on the canvas.
fn half_box(img: &GrayImage, k: u32) -> Option<(u32, u32, u32, u32)> {
    let half = imageops::crop_imm(img, k * HALF, 0, HALF, CANVAS).to_image();
    ink_box(&half, 64).map(|(x, y, w, h)| (x + k * HALF, y, w, h))
}

#[test]
fn held_out_pairs_follow_the_rule_and_cover_each_digit_once_per_side() {
    let rule: Vec<(u8, u8)> = (0..10u8)
        .flat_map(|l| (0..10u8).map(move |r| (l, r)))
        .filter(|&(l, r)| (l + 3 * r) % 10 == 0)
        .collect();
    assert_eq!(rule, HELD_OUT_PAIRS);
    let mut lefts: Vec<u8> = HELD_OUT_PAIRS.iter().map(|p| p.0).collect();
    let mut rights: Vec<u8> = HELD_OUT_PAIRS.iter().map(|p| p.1).collect();
    lefts.sort_unstable();
    rights.sort_unstable();
    assert_eq!(lefts, (0..10).collect::<Vec<_>>());
    assert_eq!(rights, (0..10).collect::<Vec<_>>());
    assert_eq!(training_pairs().len(), 90);
    assert!(training_pairs().iter().all(|&(l, r)| !is_held_out(l, r)));
}

#[test]
fn training_never_shows_a_held_out_pair_and_test_shows_only_them() {
    let mut train = HashMap::new();
    for i in 0..TRAIN_LEN {
        let a = CaptionedDigits::attributes(Split::Train, i);
        assert!(!a.is_held_out(), "train item {i}: {a:?}");
        *train.entry(a.pair()).or_insert(0) += 1;
    }
    assert_eq!(train.len(), 90, "every training pair is used");
    assert!(train.values().all(|&n| n == 55 || n == 56), "{train:?}");
    let mut test = HashMap::new();
    for i in 0..TEST_LEN {
        let a = CaptionedDigits::attributes(Split::Test, i);
        assert!(a.is_held_out(), "test item {i}: {a:?}");
        *test.entry(a.pair()).or_insert(0) += 1;
    }
    assert_eq!(test.len(), 10);
    assert!(test.values().all(|&n| n == 100), "{test:?}");
    // The opened dataset agrees.
    let d = SourceSpec::CaptionedDigits(Split::Train)
        .open(&OpenOptions::default())
        .unwrap();
    assert!((0..d.len()).all(|i| !d.attributes(i).unwrap().is_held_out()));
}

#[test]
fn sizes_and_strokes_are_all_drawn() {
    let mut seen = HashMap::new();
    for i in 0..TRAIN_LEN {
        let a = CaptionedDigits::attributes(Split::Train, i);
        for s in [a.left, a.right] {
            *seen.entry((s.size, s.stroke)).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.len(), 6, "{seen:?}");
    // 10,000 sides over 6 combinations: each near 1,667.
    assert!(
        seen.values().all(|&n| (1450..1900).contains(&n)),
        "{seen:?}"
    );
}

#[test]
fn items_are_deterministic_and_pinned() {
    let again = CaptionedDigits::new().unwrap();
    for i in [0, 1, 77, 4999] {
        let (a, b) = (
            generator().item(Split::Train, i),
            again.item(Split::Train, i),
        );
        assert_eq!(a.image, b.image);
        assert_eq!((a.attributes, &a.captions), (b.attributes, &b.captions));
        assert_eq!(a.placements, b.placements);
    }
    // Pinned, so that a change of stream, resize or template is noticed:
    // the set must be the same on every machine and after upgrades.
    let first = generator().item(Split::Train, 0);
    assert_eq!(first.captions[0], "a large thin 0 to the left of a small 1");
    // The canvas drawn in the module docs.
    assert_eq!(
        generator().item(Split::Train, 4).captions[0],
        "a large 6 to the left of a small thick 4"
    );
    let hash = fnv((0..16).flat_map(|i| generator().item(Split::Train, i).image.into_raw()));
    assert_eq!(hash, PINNED_HASH, "pixels of the first 16 canvases changed");
}

/// `fnv` of the pixels of training canvases 0 to 15.
const PINNED_HASH: u64 = 15_266_412_072_706_693_128;

#[test]
fn opened_twice_gives_the_same_images_and_captions() {
    let open = || {
        SourceSpec::CaptionedDigits(Split::Test)
            .open_with_captions(&OpenOptions::default(), &CaptionOptions::default())
            .unwrap()
    };
    let (a, b) = (open(), open());
    assert_eq!(a.len(), TEST_LEN);
    for i in (0..a.len()).step_by(7) {
        assert_eq!(a.image(i).unwrap(), b.image(i).unwrap());
        assert_eq!(a.captions(i), b.captions(i));
        assert_eq!(a.attributes(i), b.attributes(i));
        assert_eq!(a.caption(i, 3, 42), b.caption(i, 3, 42));
    }
    // The dataset holds the generator's canvases.
    let item = generator().item(Split::Test, 123);
    assert_eq!(a.image(123).unwrap().to_luma8(), item.image);
    assert_eq!(a.captions(123), item.captions);
}

#[test]
fn captions_name_the_digits_in_order() {
    for i in (0..TRAIN_LEN).step_by(13) {
        let item = generator().item(Split::Train, i);
        let a = item.attributes;
        assert_eq!(item.captions.len(), 7);
        for c in &item.captions {
            assert_eq!(read_pair(c), a.pair(), "item {i}: {c:?}");
            assert!(c.split_whitespace().count() <= 14, "{c:?}");
            assert!(!c.contains("a 8") && !c.contains("a eight"), "{c:?}");
        }
        // The detailed captions carry every attribute of both sides.
        let words = |s: &Side| {
            let mut w = vec![s.size.word()];
            w.extend(s.stroke.word());
            w.join(" ")
        };
        let full = &item.captions[0];
        let (l, r) = full.split_once(" to the left of ").unwrap();
        assert!(l.contains(&words(&a.left)), "{full:?}");
        assert!(r.contains(&words(&a.right)), "{full:?}");
    }
}

#[test]
fn captions_example() {
    let a = Attributes {
        left: Side {
            digit: 3,
            size: Size::Small,
            stroke: Stroke::Thick,
        },
        right: Side {
            digit: 8,
            size: Size::Large,
            stroke: Stroke::Regular,
        },
    };
    assert_eq!(
        captions(&a),
        [
            "a small thick 3 to the left of a large 8",
            "a large 8 to the right of a small thick 3",
            "a 3 and an 8",
            "8 on the right, 3 on the left",
            "three and eight",
            "a small thick three next to a large eight",
            "the digits 3 and 8",
        ]
    );
}

#[test]
fn caption_choice_varies_by_epoch() {
    let d = SourceSpec::CaptionedDigits(Split::Test)
        .open_with_captions(&OpenOptions::default(), &CaptionOptions::default())
        .unwrap();
    assert!(d.has_captions());
    let picked: std::collections::HashSet<&str> =
        (0..40).filter_map(|e| d.caption(5, e, 0)).collect();
    assert!(picked.len() >= 4, "{picked:?}");
}

#[test]
fn a_thickened_digit_measures_thicker() {
    let g = generator();
    for digit in 0..10u8 {
        // The first thin source of each class, dilated (3 x 3 maximum),
        // which widens every stroke by about 2 px.
        let source = g.by_stroke[usize::from(digit)][Stroke::Thin as usize][0];
        let img = g.source(source);
        let dilated = GrayImage::from_fn(28, 28, |x, y| {
            let mut m = 0;
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (u, v) = (i64::from(x) + dx, i64::from(y) + dy);
                    if (0..28).contains(&u) && (0..28).contains(&v) {
                        m = m.max(img.get_pixel(u as u32, v as u32)[0]);
                    }
                }
            }
            image::Luma([m])
        });
        let (w0, w1) = (stroke_width(&img), stroke_width(&dilated));
        assert!(w1 > w0 + 1.0, "source {source}: {w0} -> dilated {w1}");
        assert_eq!(g.classify_stroke(digit, w0), Stroke::Thin);
        assert_eq!(
            g.classify_stroke(digit, w1),
            Stroke::Thick,
            "{digit}: {w0} -> {w1}"
        );
    }
    // A drawn bar of known width measures about that width.
    for width in [1, 2, 3, 5] {
        let bar = GrayImage::from_fn(28, 28, |x, y| {
            image::Luma([if (4..24).contains(&y) && x >= 10 && x < 10 + width {
                255
            } else {
                0
            }])
        });
        let w = stroke_width(&bar);
        assert!(
            (w - f64::from(width)).abs() < 0.3 * f64::from(width),
            "{width}: {w}"
        );
    }
    assert_eq!(stroke_width(&GrayImage::new(5, 5)), 0.0);
}

#[test]
fn attributes_are_what_the_pixels_show() {
    let g = generator();
    let mut canvas_width = HashMap::<Stroke, Vec<f64>>::new();
    for i in (0..TRAIN_LEN).step_by(5) {
        let item = g.item(Split::Train, i);
        let sides = [item.attributes.left, item.attributes.right];
        for (k, (side, place)) in sides.into_iter().zip(item.placements).enumerate() {
            // The source digit is of the named class and stroke third.
            assert_eq!(
                g.classify_stroke(side.digit, place.stroke_width),
                side.stroke
            );
            assert_eq!(place.stroke_width, stroke_width(&g.source(place.source)));
            // The ink on the canvas has the named size and sits in its half.
            let (_, _, w, h) = place.bbox;
            assert_eq!(h, side.size.height());
            assert!(w <= MAX_WIDTH);
            let (x, _, w, h) = half_box(&item.image, k as u32).expect("ink in each half");
            assert!(
                h.abs_diff(side.size.height()) <= 2,
                "item {i} side {k}: {h}"
            );
            assert!(x >= k as u32 * HALF && x + w <= (k as u32 + 1) * HALF);
            let half = imageops::crop_imm(&item.image, k as u32 * HALF, 0, HALF, CANVAS);
            let scale = 20.0 / f64::from(side.size.height());
            canvas_width
                .entry(side.stroke)
                .or_default()
                .push(stroke_width(&half.to_image()) * scale);
        }
    }
    // Measured on the canvas too (rescaled to the source's 20 px digit
    // height), thick digits are thicker than regular ones, and those than
    // thin ones, on average.
    let mean = |s| {
        let v = &canvas_width[&s];
        v.iter().sum::<f64>() / v.len() as f64
    };
    let (thin, regular, thick) = (
        mean(Stroke::Thin),
        mean(Stroke::Regular),
        mean(Stroke::Thick),
    );
    assert!(
        thin < regular && regular < thick,
        "{thin} {regular} {thick}"
    );
}

#[test]
fn compose_draws_any_pair_including_held_out_ones() {
    let a = Attributes {
        left: Side {
            digit: 1,
            size: Size::Large,
            stroke: Stroke::Thick,
        },
        right: Side {
            digit: 3,
            size: Size::Small,
            stroke: Stroke::Thin,
        },
    };
    assert!(a.is_held_out());
    let item = generator().compose(&a, 9);
    assert_eq!(item.attributes, a);
    assert_eq!(
        item.captions[0],
        "a large thick 1 to the left of a small thin 3"
    );
    assert_eq!(item.image.dimensions(), (CANVAS, CANVAS));
    assert_eq!(item.image, generator().compose(&a, 9).image);
    assert_ne!(
        item.placements[0].source,
        generator().compose(&a, 10).placements[0].source
    );
}

#[test]
fn spec_parses_displays_and_opens() {
    for (s, split) in [
        ("captioned-digits", Split::Train),
        ("captioned-digits:train", Split::Train),
        ("captioned_digits", Split::Train),
        ("captioned-digits:test", Split::Test),
    ] {
        assert_eq!(
            s.parse::<SourceSpec>().unwrap(),
            SourceSpec::CaptionedDigits(split)
        );
    }
    let spec = SourceSpec::CaptionedDigits(Split::Test);
    assert_eq!(spec.to_string(), "captioned-digits:test");
    assert_eq!(spec.to_string().parse::<SourceSpec>().unwrap(), spec);
    assert_eq!(
        SourceSpec::CaptionedDigits(Split::Train).to_string(),
        "captioned-digits"
    );
    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(serde_json::from_str::<SourceSpec>(&json).unwrap(), spec);
    let err = "captioned-digits:val"
        .parse::<SourceSpec>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected `train` or `test`"), "{err}");
    let err = "no-such-source"
        .parse::<SourceSpec>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("captioned-digits"), "{err}");

    // Opened as training data: 5,000 grey 32 x 32 canvases, captions, no labels.
    let d = "captioned-digits"
        .parse::<SourceSpec>()
        .unwrap()
        .open_with_captions(
            &OpenOptions::default(),
            &CaptionOptions {
                enabled: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(d.len(), TRAIN_LEN);
    assert_eq!(d.size(0), (CANVAS, CANVAS));
    assert_eq!(d.image(0).unwrap().color(), image::ColorType::L8);
    assert!(d.has_captions() && !d.has_labels() && d.class_names().is_empty());
    assert_eq!(d.captions(0).len(), 7);
    assert!(d.caption(0, 0, 0).is_some());
    assert_eq!(d.spec, "captioned-digits");
    // Plain `open` (images only) keeps the attributes but not the captions.
    let plain = SourceSpec::CaptionedDigits(Split::Train)
        .open(&OpenOptions::default())
        .unwrap();
    assert!(!plain.has_captions());
    assert_eq!(plain.attributes(42), d.attributes(42));
    // Other sources have no attributes.
    let digits = SourceSpec::Digits.open(&OpenOptions::default()).unwrap();
    assert!(digits.attributes(0).is_none());
}
