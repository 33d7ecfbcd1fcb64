//! `alexvgg finetune` and `alexvgg make-dataset` given hostile or broken input (issue 16): a
//! diverging run, corrupt checkpoints and manifests, absurd sizes, other people's files,
//! resuming from another directory.

mod common;

use std::path::{Path, PathBuf};

use alexvgg::finetune::synth::make_dataset;
use alexvgg::import::read_burnpack;
use common::*;

/// A small, fast run: reduced AlexNet, 1 epoch of 3 steps on `make_dataset(_, 2, 8, ...)`.
fn finetune_args<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "finetune",
        "--model",
        "alexnet",
        "--variant",
        "tf",
        "--weights",
        "none",
        "--width-divisor",
        "8",
        "--hidden",
        "32",
        "--data",
        data,
        "--val-split",
        "0.25",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--optimizer",
        "sgd",
        "--lr",
        "0.01",
        "--seed",
        "5",
        "--no-augment",
        "--out",
        out,
    ]
}

/// `args` with `flag`'s value replaced, or the flag and value added.
fn set<'a>(mut args: Vec<&'a str>, flag: &'a str, value: &'a str) -> Vec<&'a str> {
    match args.iter().position(|a| *a == flag) {
        Some(i) => args[i + 1] = value,
        None => args.extend([flag, value]),
    }
    args
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn assert_finite(path: &Path) {
    let (_, _, map) = read_burnpack(path).unwrap();
    for (k, t) in map.iter() {
        assert!(
            t.data.iter().all(|v| v.is_finite()),
            "{}: {k} is not finite",
            path.display()
        );
    }
}

#[test]
fn a_diverging_run_stops_with_an_error_and_saves_no_nan_model() {
    let dir = scratch("cli-diverge");
    let data = dir.join("data");
    make_dataset(&data, 2, 8, 32, 4).unwrap();
    let (d, o) = (s(&data), s(&dir.join("out")));
    let args = set(set(finetune_args(&d, &o), "--lr", "1e6"), "--epochs", "3");
    let args = set(set(args, "--momentum", "0.9"), "--checkpoint-every", "1");
    let (code, out, err) = alexvgg(&args);
    assert_eq!(code, 1, "a diverged run is a failure\n{out}\n{err}");
    assert!(err.contains("training diverged at epoch"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // the symptom: "val loss NaN top-1 100.0%" and a NaN best.bpk
    assert!(!out.contains("NaN"), "{out}");
    for f in ["best.bpk", "last.bpk"] {
        let path = dir.join("out").join(f);
        if path.is_file() {
            assert_finite(&path);
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn resume_refuses_a_corrupt_or_nan_checkpoint_and_keeps_best() {
    let dir = scratch("cli-corrupt");
    let data = dir.join("data");
    make_dataset(&data, 2, 8, 32, 4).unwrap();
    let (d, o) = (s(&data), s(&dir.join("out")));
    let (code, _, err) = alexvgg(&finetune_args(&d, &o));
    assert_eq!(code, 0, "{err}");
    // one more epoch to go, as if the run had been interrupted
    let manifest = dir.join("out/config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    v["run"]["epochs"] = 2.into();
    std::fs::write(&manifest, serde_json::to_string(&v).unwrap()).unwrap();
    let (last, best) = (dir.join("out/last.bpk"), dir.join("out/best.bpk"));
    let good = std::fs::read(&last).unwrap();
    let best_bytes = std::fs::read(&best).unwrap();

    // one flipped bit in the weights
    let mut flipped = good.clone();
    let at = flipped.len() * 3 / 4;
    flipped[at] ^= 0x04;
    std::fs::write(&last, &flipped).unwrap();
    let (code, _, err) = alexvgg(&["finetune", "--resume", "--out", &o]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("last.bpk") && err.contains("checksum mismatch"),
        "{err}"
    );

    // every weight NaN, checksum recomputed (what a diverged run used to save)
    let (meta, mut map) = alexvgg::import::read_burnpack_with_metadata(&{
        let copy = dir.join("good.bpk");
        std::fs::write(&copy, &good).unwrap();
        copy
    })
    .unwrap();
    let (arch, shape, _) = read_burnpack(&dir.join("good.bpk")).unwrap();
    for t in map.values_mut() {
        t.data.iter_mut().for_each(|v| *v = f32::NAN);
    }
    let mut meta: alexvgg::import::Metadata = meta
        .into_iter()
        .filter(|(k, _)| k.starts_with("alexvgg.finetune.") && k != "alexvgg.finetune.sha256")
        .collect();
    let sum = alexvgg::finetune::checkpoint_checksum(&meta, &map);
    meta.insert("alexvgg.finetune.sha256".into(), sum);
    alexvgg::import::write_tensors_with(map, &arch.unwrap(), &shape.unwrap(), &meta, &last)
        .unwrap();
    let (code, _, err) = alexvgg(&["finetune", "--resume", "--out", &o]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("last.bpk") && err.contains("non-finite weights"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&best).unwrap(),
        best_bytes,
        "best.bpk was overwritten"
    );

    // restored, the run resumes and finishes
    std::fs::write(&last, &good).unwrap();
    let (code, _, err) = alexvgg(&["finetune", "--resume", "--out", &o]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("resuming at epoch 2, step 0"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn absurd_sizes_are_refused_up_front_with_the_memory_they_need() {
    let dir = scratch("cli-sizes");
    let data = dir.join("data");
    make_dataset(&data, 2, 4, 32, 4).unwrap();
    let d = s(&data);
    let never = s(&dir.join("never-written"));
    for (flag, value, says) in [
        ("--hidden", "0", "--hidden: must be at least 1"),
        (
            "--width-divisor",
            "0",
            "--width-divisor: must be at least 1",
        ),
        (
            "--width-divisor",
            "1000",
            "--width-divisor: 1000 leaves no channels",
        ),
        (
            "--hidden",
            "10000000",
            "--hidden: training would need about",
        ),
    ] {
        let args = set(finetune_args(&d, &never), flag, value);
        let (code, _, err) = alexvgg(&args);
        assert_eq!(code, 1, "{flag} {value}: {err}");
        assert!(
            err.contains(says),
            "{flag} {value}: expected '{says}' in\n{err}"
        );
        assert!(!err.contains("panicked"), "{flag} {value}: {err}");
        assert!(!Path::new(&never).exists(), "{flag} {value} left an output");
    }
    let (_, _, err) = alexvgg(&set(finetune_args(&d, &never), "--hidden", "10000000"));
    assert!(
        err.contains("GiB") && err.contains("--max-memory-gib"),
        "{err}"
    );

    // the same checks for a config.json edited by hand, when resuming
    let run = s(&dir.join("run"));
    let (code, _, err) = alexvgg(&finetune_args(&d, &run));
    assert_eq!(code, 0, "{err}");
    let manifest = dir.join("run/config.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    for (key, value, says) in [
        ("hidden", 10_000_000, "--hidden: training would need about"),
        ("hidden", 0, "--hidden: must be at least 1"),
    ] {
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["run"][key] = value.into();
        v["shape"][key] = value.into();
        std::fs::write(&manifest, v.to_string()).unwrap();
        let (code, _, err) = alexvgg(&["finetune", "--resume", "--out", &run]);
        assert_eq!(code, 1, "{key} {value}: {err}");
        assert!(
            err.contains(says),
            "{key} {value}: expected '{says}' in\n{err}"
        );
    }

    let target = dir.join("synthetic");
    let t = s(&target);
    for (args, says) in [
        (
            vec!["--size", "100000"],
            "--size: must be between 16 and 4096",
        ),
        (vec!["--per-class", "0"], "--per-class: must be at least 1"),
        (
            vec!["--classes", "8", "--per-class", "100000", "--size", "1024"],
            "GiB",
        ),
    ] {
        let mut all = vec!["make-dataset", t.as_str()];
        all.extend(args.iter().copied());
        let (code, _, err) = alexvgg(&all);
        assert_eq!(code, 1, "{all:?}: {err}");
        assert!(err.contains(says), "{all:?}: expected '{says}' in\n{err}");
        assert!(!target.exists(), "{all:?} wrote something");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn other_peoples_files_are_not_overwritten() {
    let dir = scratch("cli-foreign");
    let data = dir.join("data");
    make_dataset(&data, 2, 8, 32, 4).unwrap();
    let d = s(&data);
    // a directory of somebody's own files that happen to have our names
    let mine = dir.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    let files = [
        ("labels.txt", "my labels\n"),
        ("metrics.csv", "my,metrics\n"),
        ("best.bpk", "my model"),
    ];
    for (name, text) in files {
        std::fs::write(mine.join(name), text).unwrap();
    }
    let o = s(&mine);
    let (code, _, err) = alexvgg(&finetune_args(&d, &o));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not empty") && err.contains("--overwrite"),
        "{err}"
    );
    for (name, text) in files {
        assert_eq!(std::fs::read_to_string(mine.join(name)).unwrap(), text);
    }
    assert!(!mine.join("config.json").exists());
    // --overwrite says yes
    let mut args = finetune_args(&d, &o);
    args.push("--overwrite");
    let (code, _, err) = alexvgg(&args);
    assert_eq!(code, 0, "{err}");
    assert_finite(&mine.join("best.bpk"));
    // and replaces a run of ours, leaving no stale checkpoint behind
    let (code, _, err) = alexvgg(&args);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = alexvgg(&["finetune", "--resume", "--overwrite", "--out", &o]);
    assert_ne!(code, 0, "--resume with --overwrite");
    assert!(err.contains("--overwrite"), "{err}");

    // make-dataset: an existing image is not replaced without --overwrite
    let images = dir.join("images");
    std::fs::create_dir_all(images.join("red_disc")).unwrap();
    std::fs::write(images.join("red_disc/0000.png"), "my picture").unwrap();
    let i = s(&images);
    let (code, _, err) = alexvgg(&["make-dataset", &i, "--classes", "2", "--per-class", "2"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not empty") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(images.join("red_disc/0000.png")).unwrap(),
        "my picture"
    );
    let (code, out, err) = alexvgg(&[
        "make-dataset",
        &i,
        "--classes",
        "2",
        "--per-class",
        "2",
        "--overwrite",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("wrote 4 images"), "{out}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn resume_reads_the_runs_own_folder_from_anywhere_and_checks_it() {
    let dir = scratch("cli-paths");
    let (a, b) = (dir.join("a"), dir.join("b"));
    make_dataset(&a.join("dsk"), 2, 8, 32, 4).unwrap(); // 12 training, 4 validation images
    make_dataset(&b.join("dsk"), 2, 3, 32, 4).unwrap(); // another folder of the same name
    let mut args = finetune_args("dsk", "run");
    args = set(args, "--epochs", "1");
    let (code, _, err) = alexvgg_in(Some(&a), &args);
    assert_eq!(code, 0, "{err}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("run/config.json")).unwrap()).unwrap();
    let stored = PathBuf::from(manifest["run"]["data"].as_str().unwrap());
    assert!(stored.is_absolute(), "{stored:?}");
    assert_eq!(stored, a.join("dsk").canonicalize().unwrap());
    assert_eq!(manifest["images"]["train"], 12, "{manifest}");
    assert_eq!(manifest["images"]["val"], 4, "{manifest}");

    // resuming from b reads a/dsk, not b/dsk
    let run = s(&a.join("run"));
    let (code, _, err) = alexvgg_in(Some(&b), &["finetune", "--resume", "--out", &run]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("12 training and 4 validation images"), "{err}");

    // the folder changed since: refused, naming the counts
    std::fs::remove_file(a.join("dsk/red_disc/0000.png")).unwrap();
    let (code, _, err) = alexvgg_in(Some(&b), &["finetune", "--resume", "--out", &run]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the run started with 12 and 4") && err.contains("dsk"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_corrupt_config_json_is_reported_as_corrupt() {
    let dir = scratch("cli-config");
    let data = dir.join("data");
    make_dataset(&data, 2, 4, 32, 4).unwrap();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("config.json"),
        "{\"architecture\": \"alexnet-tf\", ",
    )
    .unwrap();
    let (d, o) = (s(&data), s(&out));
    let (code, _, resume_err) = alexvgg(&["finetune", "--resume", "--out", &o]);
    let (code2, _, start_err) = alexvgg(&finetune_args(&d, &o));
    for (code, err) in [(code, &resume_err), (code2, &start_err)] {
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("config.json: corrupt") && !err.contains("nothing to resume"),
            "{err}"
        );
        assert!(!err.contains("already holds"), "{err}");
    }
    assert!(start_err.contains("--overwrite"), "{start_err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `alexvgg classify --weights RUN IMAGE` (one image of the run's own dataset).
fn classify_run(run: &str, image: &str) -> (i32, String, String) {
    alexvgg(&["classify", "--weights", run, "--top-k", "1", image])
}

#[test]
fn classify_refuses_a_fine_tuned_checkpoint_whose_checksum_does_not_match() {
    let dir = scratch("cli-best-checksum");
    let data = dir.join("data");
    make_dataset(&data, 2, 8, 32, 4).unwrap();
    let (d, o) = (s(&data), s(&dir.join("out")));
    let (code, _, err) = alexvgg(&finetune_args(&d, &o));
    assert_eq!(code, 0, "{err}");
    let image = s(&data.join("red_disc/0000.png"));
    let (code, out, err) = classify_run(&o, &image);
    assert_eq!(code, 0, "the unmodified run classifies: {err}");
    assert!(out.contains("0000.png"), "{out}");

    let best = dir.join("out/best.bpk");
    let good = std::fs::read(&best).unwrap();
    // one flipped bit in a weight (the tensors fill the end of the file)
    let mut flipped = good.clone();
    let at = flipped.len() * 3 / 4;
    flipped[at] ^= 0x04;
    std::fs::write(&best, &flipped).unwrap();
    let best_bpk = s(&best);
    for weights in [o.as_str(), best_bpk.as_str()] {
        let (code, out, err) = classify_run(weights, &image);
        assert_eq!(code, 1, "{out}\n{err}");
        assert!(out.is_empty(), "{out}");
        assert!(
            err.contains(&best_bpk) && err.contains("is corrupt: checksum mismatch"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }

    // the same weights rewritten without their checksum: the run stores one, so this is
    // not its checkpoint any more
    std::fs::write(&best, &good).unwrap();
    let (meta, map) = alexvgg::import::read_burnpack_with_metadata(&best).unwrap();
    let (arch, shape, _) = read_burnpack(&best).unwrap();
    let meta: alexvgg::import::Metadata = meta
        .into_iter()
        .filter(|(k, _)| k.starts_with("alexvgg.finetune.") && k != "alexvgg.finetune.sha256")
        .collect();
    alexvgg::import::write_tensors_with(map, &arch.unwrap(), &shape.unwrap(), &meta, &best)
        .unwrap();
    let (code, _, err) = classify_run(&o, &image);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&best_bpk) && err.contains("corrupt: no checksum"),
        "{err}"
    );

    // restored, the run classifies again
    std::fs::write(&best, &good).unwrap();
    let (code, _, err) = classify_run(&o, &image);
    assert_eq!(code, 0, "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Pixels of exactly `color` in the left or right half of `img`.
fn pixels_of(img: &image::RgbImage, color: [u8; 3], right: bool) -> usize {
    let half = img.width() / 2;
    img.enumerate_pixels()
        .filter(|(x, _, p)| (*x >= half) == right && p.0 == color)
        .count()
}

/// `path` is a curves picture of the expected size with both series in both panels.
fn assert_curves(path: &Path) {
    use alexvgg::inference::plot::{HEIGHT, TRAIN_COLOR, VAL_COLOR, WIDTH};
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
    for color in [TRAIN_COLOR, VAL_COLOR] {
        for right in [false, true] {
            let n = pixels_of(&img, color, right);
            // the legend's sample alone has ~100; the markers add more
            assert!(n > 120, "{}: {n} pixels of {color:?}", path.display());
        }
    }
}

#[test]
fn finetune_draws_its_curves_and_plot_redraws_them() {
    let dir = scratch("cli-curves");
    let data = dir.join("data");
    make_dataset(&data, 2, 8, 32, 4).unwrap();
    let run = dir.join("out");
    let (d, o) = (s(&data), s(&run));
    let (code, _, err) = alexvgg(&finetune_args(&d, &o));
    assert_eq!(code, 0, "{err}");
    let curves = run.join("curves.png");
    // one epoch: points only
    assert_curves(&curves);
    assert!(!run.join(".curves.png.partial").exists());

    // redrawn from metrics.jsonl, to the same picture
    let drawn = std::fs::read(&curves).unwrap();
    std::fs::remove_file(&curves).unwrap();
    let (code, out, err) = alexvgg(&["plot", &o]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("curves.png"), "{out}");
    assert_eq!(std::fs::read(&curves).unwrap(), drawn, "the same picture");
    let elsewhere = dir.join("elsewhere.png");
    let (code, _, err) = alexvgg(&["plot", &o, "--out", &s(&elsewhere)]);
    assert_eq!(code, 0, "{err}");
    assert_curves(&elsewhere);

    // several epochs, a NaN validation loss among them: lines, with a gap
    let metrics = run.join("metrics.jsonl");
    let first = std::fs::read_to_string(&metrics).unwrap();
    let mut line: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    let mut many = String::new();
    for epoch in 1..=12 {
        line["epoch"] = epoch.into();
        line["train_loss"] = (2.0 / f64::from(epoch)).into();
        line["val_top1"] = (f64::from(epoch) / 12.0).into();
        line["val_loss"] = if epoch == 5 {
            serde_json::Value::Null
        } else {
            (1.5 / f64::from(epoch)).into()
        };
        many.push_str(&format!("{line}\n"));
    }
    std::fs::write(&metrics, &many).unwrap();
    let (code, _, err) = alexvgg(&["plot", &o, "--out", &s(&elsewhere)]);
    assert_eq!(code, 0, "{err}");
    assert_curves(&elsewhere);

    // errors: exit 1, naming the problem, nothing written
    let target = dir.join("never.png");
    let never = s(&target);
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (code, _, err) = alexvgg(&["plot", &s(&empty), "--out", &never]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a fine-tuning run directory"), "{err}");
    std::fs::write(&metrics, format!("{}{{\"epoch\": 13, \"train_lo", many)).unwrap();
    let (code, _, err) = alexvgg(&["plot", &o, "--out", &never]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("metrics.jsonl: corrupt metrics at line 13"),
        "{err}"
    );
    std::fs::write(&metrics, many.replace("\"epoch\":3,", "\"epoch\":4,")).unwrap();
    let (code, _, err) = alexvgg(&["plot", &o, "--out", &never]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("corrupt metrics at line 3"), "{err}");
    std::fs::remove_file(&metrics).unwrap();
    let (code, _, err) = alexvgg(&["plot", &o, "--out", &never]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no metrics to plot"), "{err}");
    assert!(!target.exists());
    assert!(!dir.join(".never.png.partial").exists());
    // a directory in the picture's place is not replaced
    std::fs::write(&metrics, &first).unwrap();
    let (code, _, err) = alexvgg(&["plot", &o, "--out", &s(&empty)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    assert!(empty.is_dir());
    std::fs::remove_dir_all(dir).unwrap();
}
