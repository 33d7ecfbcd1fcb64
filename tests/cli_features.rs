//! `alexvgg features` and `alexvgg visualize` end to end: the files they write, in the formats
//! other tools read, and their errors.

mod common;

use alexvgg::import::{read_npy, read_safetensors};
use common::*;

#[test]
fn features_are_written_as_npy_or_safetensors_with_the_paths_beside() {
    let dir = scratch("features");
    let w = fixture("alexnet_tf_w8.py2.npy");
    let (w, images) = (w.to_str().unwrap(), fixture("images"));
    let images = images.to_str().unwrap();
    let npy = dir.join("fc7.npy");
    let (code, _, err) = alexvgg(&[
        "features",
        "--weights",
        w,
        "--layer",
        "fc7",
        "--out",
        npy.to_str().unwrap(),
        images,
    ]);
    assert_eq!(code, 1, "the fixture folder holds one broken image: {err}");
    let map = read_npy(&npy).unwrap();
    let fc7 = map.values().next().unwrap();
    let paths = std::fs::read_to_string(dir.join("fc7.paths.txt")).unwrap();
    let rows: Vec<&str> = paths.lines().collect();
    assert_eq!(fc7.shape, vec![rows.len(), 64], "{err}");
    assert!(
        rows.windows(2).all(|p| p[0] < p[1]),
        "walked in order: {rows:?}"
    );
    assert!(fc7.data.iter().all(|v| *v >= 0.0), "fc7 is after its ReLU");

    let st = dir.join("both.safetensors");
    let (_, _, err) = alexvgg(&[
        "features",
        "--weights",
        w,
        "--layer",
        "conv5",
        "--layer",
        "fc8",
        "--pool",
        "max",
        "--out",
        st.to_str().unwrap(),
        images,
    ]);
    let both = read_safetensors(&st).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(both["conv5"].shape, vec![rows.len(), 32]);
    assert_eq!(both["fc8"].shape, vec![rows.len(), 10]);
    assert!(both["fc8"].data.iter().any(|v| *v < 0.0), "logits, no ReLU");

    for (args, expected) in [
        (
            vec!["--layer", "fc7", "--out", "x.safetensors"],
            "one layer is written as .npy",
        ),
        (
            vec!["--layer", "fc7", "--layer", "fc6", "--out", "x.npy"],
            "several layers",
        ),
        (
            vec!["--layer", "conv9", "--out", "x.npy"],
            "no layer 'conv9'",
        ),
        (
            vec!["--layer", "fc7", "--size", "131", "--out", "x.npy"],
            "--size 131",
        ),
        (
            vec!["--layer", "fc7", "--pool", "sum", "--out", "x.npy"],
            "[possible values: avg, max]",
        ),
    ] {
        let mut all = vec!["features", "--weights", w];
        all.extend(args.iter().copied());
        all.push(images);
        let (code, _, err) = alexvgg(&all);
        assert_eq!(code, 1, "{all:?}");
        assert!(
            err.contains(expected),
            "{all:?}: expected '{expected}' in {err}"
        );
    }
    assert!(!std::path::Path::new("x.npy").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn filters_and_maps_become_pictures() {
    let dir = scratch("visualize");
    let w = fixture("alexnet_tf_w8.py2.npy");
    let w = w.to_str().unwrap();
    let filters = dir.join("filters.png");
    let (code, _, err) = alexvgg(&[
        "visualize",
        "filters",
        "--weights",
        w,
        "--layer",
        "conv1",
        "--zoom",
        "2",
        "--out",
        filters.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    // 12 filters of 11x11 at zoom 2: a 4x3 grid with 2-pixel gaps
    let img = image::open(&filters).unwrap();
    assert_eq!((img.width(), img.height()), (4 * 24 + 2, 3 * 24 + 2));
    let maps = dir.join("maps.png");
    let image = fixture("images").join("cat_rgb.png");
    let (code, _, err) = alexvgg(&[
        "visualize",
        "maps",
        image.to_str().unwrap(),
        "--weights",
        w,
        "--layer",
        "pool5",
        "--zoom",
        "1",
        "--out",
        maps.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    // 32 maps of 6x6: 6 columns, 6 rows, 1-pixel gaps
    let img = image::open(&maps).unwrap();
    assert_eq!((img.width(), img.height()), (6 * 7 + 1, 6 * 7 + 1));
    let (code, _, err) = alexvgg(&[
        "visualize",
        "filters",
        "--weights",
        w,
        "--layer",
        "conv3",
        "--out",
        dir.join("no.png").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("visualize maps"), "{err}");
    assert!(!dir.join("no.png").exists());
    std::fs::remove_dir_all(dir).unwrap();
}
