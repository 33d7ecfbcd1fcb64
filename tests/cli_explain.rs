//! `alexvgg explain` end to end: the pictures it draws (decoded back), the raw maps and their
//! row list, and its errors.

mod common;

use alexvgg::import::read_npy;
use alexvgg::inference::overlay::overlay_size;
use common::*;

#[test]
fn grad_cam_pictures_and_raw_maps_for_a_folder() {
    let dir = scratch("explain");
    let w = fixture("alexnet_tf_w8.py2.npy");
    let labels = fixture("labels10.txt");
    let images = fixture("images");
    let (w, labels, images) = (
        w.to_str().unwrap(),
        labels.to_str().unwrap(),
        images.to_str().unwrap(),
    );
    let out = dir.join("pictures");
    let raw = dir.join("maps.npy");
    let (code, stdout, err) = alexvgg(&[
        "explain",
        "--weights",
        w,
        "--labels",
        labels,
        "--out",
        out.to_str().unwrap(),
        "--raw",
        raw.to_str().unwrap(),
        images,
    ]);
    assert_eq!(code, 1, "the fixture folder holds one broken image: {err}");
    assert!(err.contains("broken.png"), "{err}");
    let rows: Vec<String> = std::fs::read_to_string(dir.join("maps.paths.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert!(
        rows.len() >= 6 && !rows.iter().any(|r| r.contains("broken")),
        "{rows:?}"
    );
    let maps = read_npy(&raw).unwrap();
    let maps = maps.values().next().unwrap();
    assert_eq!(
        maps.shape,
        vec![rows.len(), 13, 13],
        "conv5 of the note's AlexNet"
    );
    assert!(maps.data.iter().all(|v| (0.0..=1.0).contains(v)));
    // one picture per image, named after it, of the documented size
    assert_eq!(stdout.lines().count(), rows.len(), "{stdout}");
    for row in &rows {
        let stem = std::path::Path::new(row)
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap();
        let png = out.join(format!("{stem}.gradcam.png"));
        let img = image::open(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert_eq!(
            (img.width(), img.height()),
            overlay_size(227),
            "{}",
            png.display()
        );
        assert!(stdout.contains(&format!("{stem}.gradcam.png")), "{stdout}");
    }
    let names = std::fs::read_to_string(fixture("labels10.txt")).unwrap();
    assert!(
        stdout.lines().all(|l| names.lines().any(|n| l.contains(n))),
        "every line names its class from --labels: {stdout}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn saliency_of_one_image_and_vgg16_at_its_last_convolution() {
    let dir = scratch("explain-saliency");
    let image = fixture("images").join("cat_rgb.png");
    let raw = dir.join("saliency.npy");
    let w = fixture("alexnet_tf_w8.py2.npy");
    let (code, _, err) = alexvgg(&[
        "explain",
        "--method",
        "saliency",
        "--class",
        "4",
        "--weights",
        w.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--raw",
        raw.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let maps = read_npy(&raw).unwrap();
    let map = maps.values().next().unwrap();
    assert_eq!(map.shape, vec![1, 227, 227]);
    assert_eq!(map.data.iter().copied().fold(0f32, f32::max), 1.0);
    let img = image::open(dir.join("cat_rgb.saliency.png")).unwrap();
    assert_eq!((img.width(), img.height()), overlay_size(227));

    let vgg = fixture("vgg16_w16.safetensors");
    let raw = dir.join("vgg.npy");
    let (code, stdout, err) = alexvgg(&[
        "explain",
        "--model",
        "vgg16",
        "--weights",
        vgg.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--raw",
        raw.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains("class "),
        "no labels: classes by number: {stdout}"
    );
    let maps = read_npy(&raw).unwrap();
    assert_eq!(maps.values().next().unwrap().shape, vec![1, 14, 14]);
    let img = image::open(dir.join("cat_rgb.gradcam.png")).unwrap();
    assert_eq!((img.width(), img.height()), overlay_size(224));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_layers_classes_and_flags_are_refused() {
    let dir = scratch("explain-errors");
    let w = fixture("alexnet_tf_w8.py2.npy");
    let image = fixture("images").join("cat_rgb.png");
    let out = dir.join("out");
    for (args, expected) in [
        (
            vec!["--layer", "conv9"],
            "layers with maps, for Grad-CAM: conv1, lrn1, pool1",
        ),
        (
            vec!["--layer", "fc6"],
            "fc6 is a fully connected layer, without spatial size",
        ),
        (
            vec!["--class", "10"],
            "class 10 is out of range: the network has 10 classes",
        ),
        (vec!["--class", "best"], "neither top1 nor a class index"),
        (
            vec!["--method", "saliency", "--layer", "conv5"],
            "--layer is for --method gradcam",
        ),
        (
            vec!["--method", "cam"],
            "[possible values: gradcam, saliency]",
        ),
        (vec!["--raw", "maps.txt"], "written as .npy"),
    ] {
        let mut all = vec!["explain", "--weights", w.to_str().unwrap()];
        all.extend(args.iter().copied());
        all.extend(["--out", out.to_str().unwrap(), image.to_str().unwrap()]);
        let (code, _, err) = alexvgg(&all);
        assert_eq!(code, 1, "{all:?}");
        assert!(
            err.contains(expected),
            "{all:?}: expected '{expected}' in {err}"
        );
    }
    assert!(
        !out.exists(),
        "nothing is written before the flags are checked"
    );
    // nothing readable: an error, no pictures
    let broken = fixture("images").join("broken.png");
    let (code, _, err) = alexvgg(&[
        "explain",
        "--weights",
        w.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        broken.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot decode") && err.contains("nothing written"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
