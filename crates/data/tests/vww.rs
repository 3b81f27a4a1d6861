//! `vww` loader on fixture trees in the visual wake words layout written here with the
//! `image` crate (PNG and JPEG of several sizes, so the resize is exercised): shapes, labels,
//! the seeded split, per-class selection, hand-checked pixel values after the resize, an
//! archive source, and every broken input with an error naming the file or folder.

mod common;

use std::path::Path;

use image::{Rgb, RgbImage};
use whittle_data::vww::{VwwParams, decode, to_planes};
use whittle_data::{Dataset, DatasetSpec, FetchParams, build};

/// A deterministic image of `w` × `h` whose colours depend on `k`.
fn picture(w: u32, h: u32, k: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            ((x * 7 + k * 31) % 256) as u8,
            ((y * 5 + k * 17) % 256) as u8,
            ((x + y + k * 53) % 256) as u8,
        ])
    })
}

/// person/ and non_person/ with 5 images each: PNG 20×30 and JPEG 120×100, mixed-case
/// extensions, plus a text file and a hidden file that are skipped.
fn tree(root: &Path) {
    for (c, class) in ["non_person", "person"].iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..5u32 {
            let k = c as u32 * 10 + i;
            let (name, img) = match i % 3 {
                0 => (format!("img_{i}.png"), picture(20, 30, k)),
                1 => (format!("img_{i}.jpg"), picture(120, 100, k)),
                _ => (format!("img_{i}.JPEG"), picture(120, 100, k)),
            };
            let fmt = if i % 3 == 0 {
                image::ImageFormat::Png
            } else {
                image::ImageFormat::Jpeg
            };
            img.save_with_format(dir.join(name), fmt).unwrap();
        }
        std::fs::write(dir.join("README.txt"), b"not an image").unwrap();
        std::fs::write(dir.join(".DS_Store"), b"junk").unwrap();
    }
}

fn params(src: &Path) -> VwwParams {
    VwwParams {
        source: src.to_str().unwrap().into(),
        sha256: None,
        size: 24,
        per_class: 0,
        val_fraction: 0.2,
        test_fraction: 0.2,
    }
}

fn fetch(p: VwwParams, seed: u64, downloads: &Path) -> anyhow::Result<Dataset> {
    let fp = FetchParams {
        dataset: DatasetSpec::Vww(p),
        normalize: false,
        ..Default::default()
    };
    build(&fp, seed, downloads, &|_, _, _| {})
}

fn planes(path: &Path, size: usize) -> Vec<f32> {
    to_planes(&decode(path).unwrap(), size)
}

/// The items of all three splits of class `c`, sorted by their bits.
fn all_items(ds: &Dataset, c: u32) -> Vec<Vec<f32>> {
    let mut v: Vec<Vec<f32>> = Vec::new();
    for s in [&ds.train, &ds.val, &ds.test] {
        for i in 0..s.len() {
            if s.y[i] == c {
                v.push(s.item(i).to_vec());
            }
        }
    }
    v.sort_by_key(|x| x.iter().map(|f| f.to_bits() as u64).sum::<u64>());
    v
}

#[test]
fn folder_shapes_labels_and_split() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let ds = fetch(params(dir.path()), 42, dir.path()).unwrap();
    assert_eq!(ds.classes, ["non_person", "person"]);
    assert_eq!(ds.input_shape, [3, 24, 24]);
    // Per class 5 images: round(5 · 0.2) = 1 test, 1 validation, 3 training.
    assert_eq!(ds.train.shape, [6, 3, 24, 24]);
    assert_eq!(ds.val.shape, [2, 3, 24, 24]);
    assert_eq!(ds.test.shape, [2, 3, 24, 24]);
    assert_eq!(ds.train.y, [0, 0, 0, 1, 1, 1]);
    assert_eq!(
        (ds.val.y.clone(), ds.test.y.clone()),
        (vec![0, 1], vec![0, 1])
    );
    assert!(ds.train.x.iter().all(|v| (0.0..=1.0).contains(v)));
    assert_eq!(ds.description["source"]["skipped"]["person"], 2);
    // Together the splits hold exactly the decoded, resized files of each class.
    for (c, class) in ["non_person", "person"].iter().enumerate() {
        let d = dir.path().join(class);
        let mut want: Vec<Vec<f32>> = [
            "img_0.png",
            "img_1.jpg",
            "img_2.JPEG",
            "img_3.png",
            "img_4.jpg",
        ]
        .iter()
        .map(|f| planes(&d.join(f), 24))
        .collect();
        want.sort_by_key(|x| x.iter().map(|f| f.to_bits() as u64).sum::<u64>());
        assert_eq!(all_items(&ds, c as u32), want);
    }
    // Same seed, same bytes; the split is seeded: some other seed holds out other files.
    let again = fetch(params(dir.path()), 42, dir.path()).unwrap();
    assert!(again == ds, "same seed, different data");
    let differs = (1..20).any(|s| {
        let o = fetch(params(dir.path()), s, dir.path()).unwrap();
        o.test.x != ds.test.x
    });
    assert!(differs);
}

#[test]
fn per_class_limit_and_archive_source() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    tree(&data.join("vw_coco2014_96"));
    let p = VwwParams {
        per_class: 3,
        val_fraction: 0.0,
        test_fraction: 0.34,
        ..params(&data)
    };
    let ds = fetch(p.clone(), 1, dir.path()).unwrap();
    assert_eq!(ds.train.counts(2), [2, 2]);
    assert_eq!(ds.test.counts(2), [1, 1]);
    assert!(ds.val.is_empty());
    let archive = dir.path().join("vww.tar.gz");
    common::tar_gz(&data, "", &archive);
    let from_archive = fetch(
        VwwParams {
            source: archive.to_str().unwrap().into(),
            ..p
        },
        1,
        &dir.path().join("downloads"),
    )
    .unwrap();
    let same = (&from_archive.train, &from_archive.val, &from_archive.test)
        == (&ds.train, &ds.val, &ds.test);
    assert!(same, "archive and folder sources differ");
}

#[test]
fn resize_hand_checked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for c in ["person", "non_person"] {
        std::fs::create_dir_all(root.join(c)).unwrap();
    }
    // A constant colour stays exactly that colour (the filter weights sum to one).
    RgbImage::from_pixel(20, 30, Rgb([200, 100, 50]))
        .save(root.join("non_person/flat.png"))
        .unwrap();
    // 2 × 2, black left column, white right column, up-scaled to 8 × 8: output pixel x
    // samples the input at t = (x + 0.5) / 4 - 0.5 pixels, weights 1 - |t - i| of pixels
    // i = 0, 1 (renormalised at the border), so 255 · clamp(t, 0, 1) rounded:
    // t = -0.375, -0.125 → 0; 0.125 → 31.875 → 32; 0.375 → 95.625 → 96; 0.625 → 159.375 →
    // 159; 0.875 → 223.125 → 223; 1.125, 1.375 → 255.
    RgbImage::from_fn(2, 2, |x, _| Rgb([255 * x as u8; 3]))
        .save(root.join("person/edge.png"))
        .unwrap();
    let p = VwwParams {
        size: 8,
        val_fraction: 0.0,
        test_fraction: 0.0,
        ..params(root)
    };
    let ds = fetch(p, 0, root).unwrap();
    assert_eq!(ds.train.y, [0, 1]);
    let flat = ds.train.item(0);
    for (c, v) in [200f32, 100.0, 50.0].iter().enumerate() {
        assert!(flat[c * 64..(c + 1) * 64].iter().all(|&x| x == v / 255.0));
    }
    let want: Vec<f32> = [0f32, 0.0, 32.0, 96.0, 159.0, 223.0, 255.0, 255.0]
        .iter()
        .map(|v| v / 255.0)
        .collect();
    let edge = ds.train.item(1);
    for c in 0..3 {
        for row in 0..8 {
            let at = c * 64 + row * 8;
            assert_eq!(&edge[at..at + 8], &want[..], "channel {c} row {row}");
        }
    }
}

#[test]
fn broken_inputs_name_the_file_or_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    // A truncated PNG.
    tree(&root);
    let bad = root.join("person/img_3.png");
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let e = format!("{:#}", fetch(params(&root), 0, dir.path()).unwrap_err());
    assert!(e.contains("img_3.png"), "{e}");
    // A .jpg that is text.
    std::fs::write(&bad, &bytes).unwrap();
    let bad = root.join("non_person/img_4.jpg");
    std::fs::write(&bad, b"this is not a JPEG").unwrap();
    let e = format!("{:#}", fetch(params(&root), 0, dir.path()).unwrap_err());
    assert!(
        e.contains("non_person/img_4.jpg") && e.contains("decode"),
        "{e}"
    );
    std::fs::remove_file(&bad).unwrap();
    // A class folder with no images.
    for f in std::fs::read_dir(root.join("person")).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e != "txt") {
            std::fs::remove_file(f).unwrap();
        }
    }
    let e = format!("{:#}", fetch(params(&root), 0, dir.path()).unwrap_err());
    assert!(e.contains("root/person") && e.contains("no images"), "{e}");
    // A missing class folder.
    std::fs::remove_dir_all(root.join("person")).unwrap();
    let e = format!("{:#}", fetch(params(&root), 0, dir.path()).unwrap_err());
    assert!(e.contains("root/person") && e.contains("missing"), "{e}");
    std::fs::remove_dir_all(root.join("non_person")).unwrap();
    let e = format!("{:#}", fetch(params(&root), 0, dir.path()).unwrap_err());
    assert!(e.contains("non_person"), "{e}");
}

#[test]
fn parameters_parse_with_defaults_and_checks() {
    let p: FetchParams =
        toml::from_str("dataset = { kind = \"vww\", source = \"/data/vww\" }").unwrap();
    let p = p.resolve().unwrap();
    let DatasetSpec::Vww(v) = &p.dataset else {
        panic!("{:?}", p.dataset)
    };
    assert_eq!(
        (v.size, v.per_class, v.val_fraction, v.test_fraction),
        (96, 0, 0.1, 0.1)
    );
    let e =
        toml::from_str::<FetchParams>("dataset = { kind = \"vww\", source = \"x\", per_clas = 3 }")
            .unwrap_err()
            .to_string();
    assert!(e.contains("per_clas"), "{e}");
    for (bad, field) in [
        (
            "val_fraction = 0.6, test_fraction = 0.5",
            "val_fraction + dataset.test_fraction",
        ),
        ("test_fraction = 1.0", "dataset.test_fraction"),
        ("size = 1000", "dataset.size"),
        ("sha256 = \"abc\"", "sha256"),
    ] {
        let p: FetchParams = toml::from_str(&format!(
            "dataset = {{ kind = \"vww\", source = \"x\", {bad} }}"
        ))
        .unwrap();
        let e = p.resolve().unwrap_err().to_string();
        assert!(e.contains(field), "{bad}: {e}");
    }
    // Image sources take no features.
    let p: FetchParams = toml::from_str(
        "dataset = { kind = \"vww\", source = \"x\" }\nfeatures = { kind = \"mfcc\" }",
    )
    .unwrap();
    assert!(p.resolve().is_err());
}
