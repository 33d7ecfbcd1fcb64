//! The `alexvgg` command line end to end: classify, inspect, fetch and errors; fine-tuning runs
//! that are killed and resumed, and their output classified and described.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use alexvgg::finetune::synth::make_dataset;
use alexvgg::import::{read_burnpack, read_burnpack_with_metadata};
use common::*;

fn image(name: &str) -> PathBuf {
    fixture("images").join(name)
}

fn alexvgg(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_alexvgg"))
        .args(args)
        .env(
            "ALEXVGG_CACHE",
            std::env::temp_dir().join("alexvgg-test-cache-empty"),
        )
        .env("ALEXVGG_MIRROR", "http://127.0.0.1:9/")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_classifies_a_folder_reports_bad_files_and_exits_non_zero() {
    let weights = fixture("alexnet_tf_w8.py2.npy");
    let labels = fixture("labels10.txt");
    let (code, out, err) = alexvgg(&[
        "classify",
        "--weights",
        weights.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--top-k",
        "3",
        "--json",
        fixture("images").to_str().unwrap(),
    ]);
    assert_eq!(
        code, 1,
        "a broken file makes the exit status non-zero\n{err}"
    );
    assert!(err.contains("broken.png"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7, "every readable image is classified:\n{out}");
    for l in &lines {
        assert_eq!(l["top_k"].as_array().unwrap().len(), 3);
        assert_eq!(l["preprocess"], "caffe");
        assert_eq!(l["model"], "alexnet-tf");
    }
    // --fail-fast stops at the first bad file
    let (code, _, err) = alexvgg(&[
        "classify",
        "--weights",
        weights.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--fail-fast",
        image("broken.png").to_str().unwrap(),
        image("cat_rgb.png").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("--fail-fast"), "{err}");
}

#[test]
fn cli_errors_are_clear_and_never_panics() {
    let weights = fixture("alexnet_tf_w8.py2.npy");
    let w = weights.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["classify", "--weights", w, "--device", "tpu", "x.png"],
            "unknown device 'tpu'",
        ),
        (vec!["classify", "--weights", w, "x.png"], "pass --labels"),
        (
            vec!["classify", "--weights", "no-such-weights", "x.png"],
            "neither an existing file nor a known weights name",
        ),
        (
            vec!["classify", "--model", "vgg16", "--weights", w, "x.png"],
            "looks like AlexNet",
        ),
        (
            vec!["classify", "--weights", w, "--preprocess", "magic", "x.png"],
            "invalid value 'magic' for '--preprocess <PREPROCESS>'",
        ),
        // enum-like flags list their values
        (
            vec!["classify", "--preprocess", "magic", "x.png"],
            "[possible values: caffe, frossard, torchvision, note]",
        ),
        (
            vec!["layers", "--model", "vgg17"],
            "[possible values: alexnet, vgg11, vgg13, vgg16, vgg19, alexnet-tf, alexnet-caffe, alexnet-torchvision, vgg11_bn,",
        ),
        (
            vec!["finetune", "--optimizer", "rmsprop", "--out", "x"],
            "[possible values: sgd, adam]",
        ),
        (
            vec!["finetune", "--lr-schedule", "linear", "--out", "x"],
            "[possible values: constant, step, cosine]",
        ),
        (
            vec!["bench", "--conv", "fft"],
            "[possible values: auto, im2col, winograd, winograd-small, direct]",
        ),
        (
            vec!["classify", "--batch-size", "0", "x.png"],
            "--batch-size",
        ),
        (vec!["classify", "x.png"], "downloading bvlc_alexnet"),
        (
            vec!["layers", "--model", "alexnet", "--variant", "keras"],
            "invalid value 'keras' for '--variant <VARIANT>'",
        ),
        (vec!["inspect", "Cargo.toml"], "Cargo.toml"),
        (vec!["fetch", "nosuch"], "known: bvlc_alexnet"),
        (vec!["bench", "--batch-size", "x"], "invalid value 'x'"),
        (
            vec!["bench", "--conv", "fft"],
            "invalid value 'fft' for '--conv",
        ),
        (
            vec!["classify", "--engine", "onnx", "x.png"],
            "invalid value 'onnx' for '--engine",
        ),
        (
            vec!["bench", "--train", "--engine", "kernels"],
            "--engine kernels is inference only",
        ),
    ];
    for (args, expected) in cases {
        let (code, _, err) = alexvgg(&args);
        assert_ne!(code, 0, "{args:?} succeeded");
        assert!(
            err.contains(expected),
            "{args:?}: expected '{expected}' in:\n{err}"
        );
        assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    }
}

#[test]
fn inspect_reports_the_stored_element_types() {
    let dtypes = |file: &str| -> Vec<(String, String)> {
        let (code, out, err) = alexvgg(&["inspect", "--json", fixture(file).to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap().to_string(),
                    t["dtype"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let layouts = dtypes("layouts.npz");
    for (name, dtype) in [
        ("big_endian", "float32 big-endian"),
        ("fortran_f64", "float64"),
        ("half", "float16"),
    ] {
        assert!(
            layouts.contains(&(name.to_string(), dtype.to_string())),
            "{name} should be {dtype}: {layouts:?}"
        );
    }
    assert!(
        dtypes("vgg16_w16.safetensors")
            .iter()
            .all(|(_, d)| d == "float32")
    );
}

#[test]
fn fetch_lists_the_known_weights() {
    let (code, out, err) = alexvgg(&["fetch", "--list"]);
    assert_eq!(code, 0, "{err}");
    for name in [
        "bvlc_alexnet",
        "bvlc_alexnet_caffe",
        "vgg16_frossard",
        "vgg16_caffe",
        "alexnet_torchvision",
        "vgg16_torchvision",
    ] {
        assert!(out.contains(name), "{name} missing:\n{out}");
    }
    assert!(
        out.contains("sha1 9116a64c0fbe4459d18f4bb6b56d647b63920377"),
        "{out}"
    );
    assert!(out.contains("checked by structure"), "{out}");
}

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
        "3",
        "--batch-size",
        "4",
        "--optimizer",
        "sgd",
        "--momentum",
        "0.9",
        "--lr",
        "0.01",
        "--lr-schedule",
        "cosine",
        "--seed",
        "5",
        "--checkpoint-every",
        "1",
        "--out",
        out,
    ]
}

fn step_of(last: &Path) -> Option<u64> {
    let (meta, _) = read_burnpack_with_metadata(last).ok()?;
    let p: serde_json::Value = serde_json::from_str(meta.get("alexvgg.finetune.progress")?).ok()?;
    p["global_step"].as_u64()
}

#[test]
fn a_killed_run_resumes_to_the_same_weights() {
    let dir = scratch("resume");
    let data = dir.join("data");
    make_dataset(&data, 2, 8, 32, 4).unwrap(); // 12 training images: 3 steps per epoch
    let (d, a, b) = (
        data.display().to_string(),
        dir.join("a").display().to_string(),
        dir.join("b").display().to_string(),
    );
    let (code, _, err) = alexvgg(&finetune_args(&d, &a));
    assert_eq!(code, 0, "{err}");

    // the same run, killed once its checkpoint passes step 4 (mid-way through epoch 2)
    let mut child = Command::new(env!("CARGO_BIN_EXE_alexvgg"))
        .args(finetune_args(&d, &b))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let last = dir.join("b/last.bpk");
    while step_of(&last).is_none_or(|s| s < 4) {
        assert!(Instant::now() < deadline, "no checkpoint at step 4");
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = step_of(&last).unwrap();
    assert!(killed_at < 9, "the run finished before it could be killed");

    let (code, _, err) = alexvgg(&["finetune", "--resume", "--out", &b]);
    assert_eq!(code, 0, "{err}");
    // it continued from the checkpoint (3 steps per epoch), not from the start
    let at = format!(
        "resuming at epoch {}, step {}",
        killed_at / 3 + 1,
        killed_at % 3
    );
    assert!(err.contains(&at), "expected '{at}' in: {err}");
    let (_, _, ta) = read_burnpack(&dir.join("a/last.bpk")).unwrap();
    let (_, _, tb) = read_burnpack(&last).unwrap();
    for (k, t) in ta.iter() {
        assert_eq!(
            t.data, tb[k].data,
            "{k} differs after resuming from step {killed_at}"
        );
    }
    let metrics = |run: &str| {
        std::fs::read_to_string(dir.join(run).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["train_loss"].as_f64(), v["val_loss"].as_f64())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(metrics("a"), metrics("b"));
    // a finished run resumes to nothing more, and a second start into it is refused
    let (code, _, err) = alexvgg(&finetune_args(&d, &a));
    assert_ne!(code, 0);
    assert!(err.contains("--resume"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_fine_tuned_output_classifies_and_describes_itself() {
    let dir = scratch("use");
    let data = dir.join("data");
    make_dataset(&data, 3, 6, 32, 8).unwrap();
    // a corrupt image is reported and skipped
    std::fs::write(data.join("red_disc/zz_broken.png"), b"\x89PNG not really").unwrap();
    let (d, o) = (
        data.display().to_string(),
        dir.join("out").display().to_string(),
    );
    let mut args = finetune_args(&d, &o);
    let epochs = args.iter().position(|a| *a == "--epochs").unwrap();
    args[epochs + 1] = "1";
    args.push("--json");
    let (code, out, err) = alexvgg(&args);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("zz_broken.png"), "{err}");
    let m: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(m["epoch"], 1);

    let image = data.join("green_square/0000.png").display().to_string();
    let (code, out, err) = alexvgg(&["classify", "--weights", &o, "--json", &image]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let labels: Vec<&str> = v["top_k"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels.len(), 3);
    for l in ["red_disc", "green_square", "blue_triangle"] {
        assert!(labels.contains(&l), "{labels:?}");
    }
    let (code, out, err) = alexvgg(&["layers", "--weights", &o, "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let text = rows.to_string();
    assert!(text.contains("fc8"), "{text}");

    // bad settings name their flag
    let never = dir.join("never-written").display().to_string();
    for (flag, value) in [
        ("--freeze", "up-to:conv9"),
        ("--freeze", "everything"),
        ("--optimizer", "rmsprop"),
        ("--lr-schedule", "linear"),
        ("--lr", "0"),
        ("--val-split", "1.5"),
        ("--batch-size", "0"),
    ] {
        let mut bad = finetune_args(&d, &never);
        match bad.iter().position(|a| *a == flag) {
            Some(i) => bad[i + 1] = value,
            None => bad.extend([flag, value]),
        }
        let (code, _, err) = alexvgg(&bad);
        assert_eq!(code, 1, "{flag} {value}: {err}");
        assert!(
            (err.contains(flag) || err.contains("split")) && !err.contains("panicked"),
            "{flag} {value}: {err}"
        );
        assert!(!Path::new(&never).exists(), "{flag} {value} left an output");
    }
    let missing = dir.join("no-run").display().to_string();
    let (code, _, err) = alexvgg(&["finetune", "--resume", "--out", &missing]);
    assert_eq!(code, 1);
    assert!(err.contains("nothing to resume"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
