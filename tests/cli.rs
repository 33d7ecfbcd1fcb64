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
    // the download caps, exact or an upper bound
    assert!(out.contains("size: 243861814 bytes"), "{out}");
    assert!(out.contains("size: 243862414 bytes"), "{out}");
    assert!(out.contains("size: at most 560000000 bytes"), "{out}");
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

// ---- hostile and broken input (issue 16) ----

/// CRC-32 (ISO-HDLC), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A grayscale PNG of `width` x `height` with `rows` rows of pixel data (zlib, stored blocks):
/// a true image when `rows == height`, a header that lies when `rows` is 0.
fn png(width: u32, height: u32, rows: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    let raw = vec![0u8; (rows * (width + 1)) as usize];
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend(len.to_le_bytes());
        zlib.extend((!len).to_le_bytes());
        zlib.extend(*block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    zlib.extend(((b << 16) | a).to_be_bytes());
    chunk(&mut out, b"IDAT", &zlib);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A baseline JPEG header claiming `side` x `side`, with no image behind it.
fn jpeg(side: u16) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    let mut segment = |marker: u8, body: &[u8]| {
        out.extend([0xFF, marker]);
        out.extend(((body.len() + 2) as u16).to_be_bytes());
        out.extend(body);
    };
    let mut dqt = vec![0u8];
    dqt.extend([1u8; 64]);
    segment(0xDB, &dqt);
    let mut sof = vec![8];
    sof.extend(side.to_be_bytes());
    sof.extend(side.to_be_bytes());
    sof.extend([1, 1, 0x11, 0]);
    segment(0xC0, &sof);
    for class in [0x00u8, 0x10] {
        let mut dht = vec![class, 1];
        dht.extend([0u8; 16]);
        segment(0xC4, &dht);
    }
    segment(0xDA, &[1, 1, 0x00, 0, 63, 0]);
    out.extend([0u8; 64]);
    out.extend([0xFF, 0xD9]);
    out
}

/// Runs the binary with its standard output sent to `stdout`; fails the test if it runs
/// longer than `secs` (a hang). Returns the exit code and stderr.
fn alexvgg_with(args: &[&str], stdout: std::process::Stdio, secs: u64) -> (i32, String) {
    use std::io::Read;
    let mut child = command()
        .args(args)
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{args:?} still running after {secs} s: a hang");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code().unwrap_or(-1), reader.join().unwrap())
}

fn w8() -> (String, String) {
    (
        fixture("alexnet_tf_w8.py2.npy").display().to_string(),
        fixture("labels10.txt").display().to_string(),
    )
}

#[cfg(unix)]
#[test]
fn convert_replaces_only_regular_files_never_its_input_and_cleans_up_killed_runs() {
    use std::os::unix::fs::symlink;
    let dir = scratch("convert-targets");
    let input = dir.join("w.npy");
    std::fs::copy(fixture("alexnet_tf_w8.py2.npy"), &input).unwrap();
    let original = std::fs::read(&input).unwrap();
    let i = input.display().to_string();
    let convert = |out: &Path| alexvgg(&["convert", &i, out.to_str().unwrap()]);

    // a symlink is refused, and what it points at is left alone
    let kept = dir.join("kept.txt");
    std::fs::write(&kept, "a user's file").unwrap();
    let link = dir.join("link.bpk");
    symlink(&kept, &link).unwrap();
    let (code, _, err) = convert(&link);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("symbolic link") && err.contains("link.bpk"),
        "{err}"
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "a user's file");

    // a FIFO (standing in for a device file) stays a FIFO
    let fifo = dir.join("fifo.bpk");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let (code, _, err) = convert(&fifo);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("FIFO"), "{err}");
    {
        use std::os::unix::fs::FileTypeExt;
        let t = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(t.is_fifo());
    }

    // the input itself, by the same path, another path, or a hard link
    let hard = dir.join("hard.bpk");
    std::fs::hard_link(&input, &hard).unwrap();
    let dotted = dir.join(".").join("w.npy");
    for out in [input.clone(), dotted, hard] {
        let (code, _, err) = convert(&out);
        assert_eq!(code, 1, "{}: {err}", out.display());
        assert!(err.contains("is the input file"), "{err}");
    }
    // ... or the file the conversion writes before its rename (w.partial for w.bpk)
    let partial = dir.join("w.partial");
    std::fs::copy(&input, &partial).unwrap();
    let (code, _, err) = alexvgg(&[
        "convert",
        partial.to_str().unwrap(),
        dir.join("w.bpk").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is the input file"), "{err}");
    assert_eq!(
        std::fs::read(&input).unwrap(),
        original,
        "the input is intact"
    );

    // scratch files of a killed conversion are removed; a running one's are left
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = dir.join(format!("out.partial.{dead}-0.tmp"));
    let live = dir.join(format!("out.partial.{}-0.tmp", std::process::id()));
    std::fs::write(&stale, "left by kill -9").unwrap();
    std::fs::write(&live, "being written").unwrap();
    let out = dir.join("out.bpk");
    let (code, stdout, err) = convert(&out);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("converted"), "{stdout}");
    assert!(
        err.contains("removed") && err.contains(&format!("{dead}-0.tmp")),
        "{err}"
    );
    assert!(!stale.exists() && live.exists() && out.is_file());
    // and a regular file is replaced as before
    let (code, _, err) = convert(&out);
    assert_eq!(code, 0, "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn classify_skips_image_bombs_naming_each_and_exits_non_zero() {
    let dir = scratch("bombs");
    std::fs::copy(image("cat_rgb.png"), dir.join("cat.png")).unwrap();
    for (name, bytes) in [
        ("tall.png", png(1, 30000, 30000)),
        ("huge.png", png(100_000, 100_000, 0)),
        ("huge.jpg", jpeg(65500)),
    ] {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let (w, l) = w8();
    let d = dir.display().to_string();
    let args = ["classify", "--weights", &w, "--labels", &l, "--json", &d];
    let out = Command::new(env!("CARGO_BIN_EXE_alexvgg"))
        .args(args)
        .output()
        .unwrap();
    let (stdout, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("memory allocation"),
        "{err}"
    );
    for name in ["tall.png", "huge.png", "huge.jpg"] {
        assert!(err.contains(name), "{name} not named:\n{err}");
    }
    assert!(
        err.contains("aspect ratio") && err.contains("3 of 4 images"),
        "{err}"
    );
    assert_eq!(
        stdout.lines().count(),
        1,
        "the good image is classified:\n{stdout}"
    );
    // the limit is a flag: low enough, the ordinary image is refused too
    let (code, _, err) = alexvgg(&[
        "classify",
        "--weights",
        &w,
        "--labels",
        &l,
        "--max-image-pixels",
        "1000",
        dir.join("cat.png").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cat.png") && err.contains("limit of 1000 pixels"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(unix)]
#[test]
fn classify_ends_on_symlink_loops_and_refuses_fifos() {
    use std::os::unix::fs::symlink;
    let dir = scratch("loops");
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::copy(image("cat_rgb.png"), dir.join("a.png")).unwrap();
    std::fs::copy(image("cat_gray.png"), dir.join("sub/b.png")).unwrap();
    symlink(".", dir.join("loop_a")).unwrap();
    symlink(".", dir.join("loop_b")).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(dir.join("pipe.png"))
            .status()
            .unwrap()
            .success()
    );
    let (w, l) = w8();
    let out = dir.join("out.jsonl");
    let file = std::fs::File::create(&out).unwrap();
    let d = dir.display().to_string();
    let (code, err) = alexvgg_with(
        &["classify", "--weights", &w, "--labels", &l, "--json", &d],
        file.into(),
        120,
    );
    assert_eq!(code, 1, "the FIFO is reported:\n{err}");
    assert!(err.contains("pipe.png") && err.contains("FIFO"), "{err}");
    let lines = std::fs::read_to_string(&out).unwrap();
    let files: Vec<String> = lines
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["file"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(files.len(), 2, "each image once: {files:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_closed_stdout_ends_quietly_and_a_full_one_is_an_error() {
    let (w, l) = w8();
    let cat = image("cat_rgb.png").display().to_string();
    let classify = ["classify", "--weights", &w, "--labels", &l, &cat, &cat];
    let list = ["fetch", "--list"];
    for args in [&list[..], &classify[..]] {
        // `| head -1` that has already stopped reading: the pipe's reading end is closed
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let (code, err) = alexvgg_with(args, writer.into(), 120);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("error"),
            "{args:?}: {err}"
        );
        // a full disk
        if Path::new("/dev/full").exists() {
            let full = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap();
            let (code, err) = alexvgg_with(args, full.into(), 120);
            assert_eq!(code, 1, "{args:?}: {err}");
            assert!(
                err.contains("writing to standard output") && !err.contains("panicked"),
                "{args:?}: {err}"
            );
        }
    }
}

#[cfg(unix)]
#[test]
fn json_output_takes_file_names_that_are_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let dir = scratch("non-utf8");
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.png");
    let img = dir.join(name);
    std::fs::copy(image("cat_rgb.png"), &img).unwrap();
    let weights = dir.join(std::ffi::OsStr::from_bytes(b"w\xff.npy"));
    std::fs::copy(fixture("alexnet_tf_w8.py2.npy"), &weights).unwrap();
    let run = |args: Vec<&std::ffi::OsStr>| {
        let out = Command::new(env!("CARGO_BIN_EXE_alexvgg"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let labels = fixture("labels10.txt");
    let utf8_weights = fixture("alexnet_tf_w8.py2.npy");
    let (code, out, err) = run(vec![
        "classify".as_ref(),
        "--json".as_ref(),
        "--weights".as_ref(),
        utf8_weights.as_os_str(),
        "--labels".as_ref(),
        labels.as_os_str(),
        img.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        v["file"].as_str().unwrap().ends_with("caf\u{FFFD}.png"),
        "{v}"
    );
    let (code, out, err) = run(vec![
        "inspect".as_ref(),
        "--json".as_ref(),
        weights.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["file"].as_str().unwrap().ends_with("w\u{FFFD}.npy"),
        "{v}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn flags_and_sizes_are_checked_before_any_download_load_or_allocation() {
    let dir = scratch("flags");
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let bad_labels = dir.join("bad.txt");
    std::fs::write(&bad_labels, "0\tn0\tcat\n0\tn1\tdog\n").unwrap();
    let (e, b) = (
        empty.display().to_string(),
        bad_labels.display().to_string(),
    );
    let huge = u64::MAX.to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // no --weights: each is refused before the default weights would be downloaded
        (
            vec!["classify", "--device", "nonesuch", "x.png"],
            "unknown device 'nonesuch'",
        ),
        (vec!["classify", "--top-k", "0", "x.png"], "--top-k"),
        (
            vec!["classify", "--max-image-pixels", "0", "x.png"],
            "--max-image-pixels",
        ),
        (
            vec!["classify", "--labels", &b, "x.png"],
            "index 0 appears twice",
        ),
        (vec!["classify", &e], "no images found"),
        (
            vec!["classify", "-m", "vgg16", "--variant", "caffe", "x.png"],
            "--variant is for AlexNet",
        ),
        (
            vec!["fetch", "bvlc_alexnet", "nosuch"],
            "known: bvlc_alexnet",
        ),
        // conflicting flags
        (
            vec!["layers", "-m", "vgg16", "--variant", "caffe"],
            "--variant is for AlexNet",
        ),
        (vec!["layers", "--batch-norm"], "--batch-norm is for VGG"),
        (
            vec!["layers", "-m", "alexnet-caffe", "--batch-norm"],
            "--batch-norm is for VGG",
        ),
        (
            vec!["params", "-m", "alexnet-caffe", "--variant", "tf"],
            "--variant tf contradicts it",
        ),
        // sizes
        (vec!["layers", "--input", &huge], "out of range"),
        (vec!["layers", "--input", "0"], "out of range"),
        (
            vec!["bench", "--batch-size", "1,100000"],
            "--batch-size 100000",
        ),
    ];
    for (args, expected) in cases {
        let (code, out, err) = alexvgg(&args);
        assert_eq!(code, 1, "{args:?}:\n{err}");
        assert!(
            err.contains(expected),
            "{args:?}: expected '{expected}' in:\n{err}"
        );
        assert!(
            !err.contains("downloading"),
            "{args:?} started a download:\n{err}"
        );
        assert!(!err.contains("panicked"), "{args:?}:\n{err}");
        assert!(!out.contains("18446744073709551615"), "{args:?}:\n{out}");
    }
    // the memory a batch would need is reported
    let (_, _, err) = alexvgg(&["bench", "--batch-size", "100000", "--iters", "1"]);
    assert!(
        err.contains("needs at least") && err.contains("GiB"),
        "{err}"
    );
    // redundant but consistent flags are fine
    let (code, _, err) = alexvgg(&["params", "-m", "alexnet-caffe", "--variant", "caffe"]);
    assert_eq!(code, 0, "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn labels_must_fit_the_network_and_print_escaped() {
    let dir = scratch("labels");
    let (w, _) = w8();
    let cat = image("cat_rgb.png").display().to_string();
    let three = dir.join("three.txt");
    std::fs::write(&three, "a\nb\nc\n").unwrap();
    let (code, _, err) = alexvgg(&[
        "classify",
        "--weights",
        &w,
        "--labels",
        three.to_str().unwrap(),
        &cat,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("names 3 classes, but the network has 10"),
        "{err}"
    );
    // labels with terminal escapes are printed escaped
    let evil = dir.join("evil.txt");
    let labels: String = (0..10).map(|i| format!("\x1b[31mred{i}\x07\n")).collect();
    std::fs::write(&evil, labels).unwrap();
    let (code, out, err) = alexvgg(&[
        "classify",
        "--weights",
        &w,
        "--labels",
        evil.to_str().unwrap(),
        &cat,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");
    assert!(out.contains("\\u{1b}[31mred"), "{out}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn fetch_gives_up_on_a_server_that_never_answers() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mirror = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        // accept, never answer
        let held: Vec<_> = listener.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(120));
        drop(held);
    });
    let cache = scratch("fetch-timeout");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_alexvgg"))
        .args(["fetch", "bvlc_alexnet"])
        .env("ALEXVGG_CACHE", &cache)
        .env("ALEXVGG_MIRROR", &mirror)
        .env("ALEXVGG_DOWNLOAD_TIMEOUT", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.to_lowercase().contains("timeout"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    std::fs::remove_dir_all(cache).unwrap();
}

#[test]
fn weights_run_in_another_alexnet_variant_are_named_with_a_warning() {
    let caffe = fixture("alexnet_caffe_w8.caffemodel");
    let npy = fixture("alexnet_tf_w8.py2.npy");
    let labels = fixture("labels10.txt");
    let image = fixture("images").join("cat_rgb.png");
    let run = |w: &std::path::Path, variant: &str| {
        alexvgg(&[
            "classify",
            "--model",
            "alexnet",
            "--variant",
            variant,
            "--weights",
            w.to_str().unwrap(),
            "--labels",
            labels.to_str().unwrap(),
            "--top-k",
            "1",
            image.to_str().unwrap(),
        ])
    };
    for (w, own, other) in [(&caffe, "caffe", "tf"), (&npy, "tf", "caffe")] {
        let (code, _, err) = run(w, other);
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains("warning:") && err.contains(&format!("--variant {own}")),
            "{err}"
        );
        let (code, _, err) = run(w, own);
        assert_eq!(code, 0, "{err}");
        assert!(!err.contains("warning:"), "{err}");
    }
}

#[test]
fn a_truncated_jpeg_is_classified_with_a_warning_naming_it() {
    let dir = scratch("truncated-jpeg");
    let whole = std::fs::read(image("cat_exif6.jpg")).unwrap();
    assert!(
        whole.ends_with(&[0xFF, 0xD9]),
        "the fixture is a complete JPEG"
    );
    let intact = dir.join("intact.jpg");
    let cut = dir.join("cut.jpg");
    std::fs::write(&intact, &whole).unwrap();
    std::fs::write(&cut, &whole[..whole.len() * 3 / 5]).unwrap();
    let weights = fixture("alexnet_tf_w8.py2.npy");
    let labels = fixture("labels10.txt");
    let (weights, labels) = (weights.to_str().unwrap(), labels.to_str().unwrap());
    let warning = format!(
        "warning: {} looks truncated: its missing part decodes grey",
        cut.display()
    );
    for file in [&cut, &intact] {
        let f = file.to_str().unwrap();
        let (code, out, err) = alexvgg(&[
            "classify",
            "--weights",
            weights,
            "--labels",
            labels,
            "--top-k",
            "1",
            f,
        ]);
        assert_eq!(code, 0, "still classified: {err}");
        assert!(out.contains(f), "{out}");
        assert_eq!(err.contains(&warning), file == &cut, "{err}");
        assert!(file == &cut || !err.contains("truncated"), "{err}");
        let npy = dir.join("fc7.npy");
        let (code, _, err) = alexvgg(&[
            "features",
            "--weights",
            weights,
            "--layer",
            "fc7",
            "--out",
            npy.to_str().unwrap(),
            f,
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(err.contains(&warning), file == &cut, "{err}");
        // explain reads images the same way
        let (code, _, err) = alexvgg(&[
            "explain",
            "--weights",
            weights,
            "--labels",
            labels,
            "--out",
            dir.join("explained").to_str().unwrap(),
            f,
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(err.contains(&warning), file == &cut, "{err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn fetch_names_every_source_it_tried_and_the_ways_on() {
    let cache = scratch("fetch-all-fail");
    let out = Command::new(env!("CARGO_BIN_EXE_alexvgg"))
        .args(["fetch", "bvlc_alexnet"])
        .env("ALEXVGG_CACHE", &cache)
        .env("ALEXVGG_MIRROR", "http://127.0.0.1:9/")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for needle in [
        "downloading bvlc_alexnet from http://127.0.0.1:9/bvlc_alexnet.npy",
        // the note's .npy falls back to the Caffe release of the same weights
        "falling back to bvlc_alexnet_caffe",
        "tried 2 sources",
        "1. http://127.0.0.1:9/bvlc_alexnet.npy (bvlc_alexnet.npy)",
        "2. http://127.0.0.1:9/bvlc_alexnet.caffemodel (bvlc_alexnet.caffemodel)",
        "--weights PATH",
        "ALEXVGG_MIRROR",
    ] {
        assert!(err.contains(needle), "{needle}:\n{err}");
    }
    let left: Vec<_> = std::fs::read_dir(&cache)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let _ = std::fs::remove_dir_all(cache);
}

#[test]
fn bench_names_the_cpu_the_simd_level_and_each_layer_s_kernel() {
    let mut levels = vec!["portable"];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        levels.push("avx2");
    }
    for level in levels {
        let out = Command::new(env!("CARGO_BIN_EXE_alexvgg"))
            .args(["bench", "-m", "alexnet", "--batch-size", "1"])
            .args(["--iters", "1", "--warmup", "0", "--per-layer"])
            .env("ALEXVGG_SIMD", level)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(text.contains("cpu: "), "{text}");
        assert!(text.contains(&format!("kernels: {level}")), "{text}");
        let fc6 = text
            .lines()
            .find(|l| l.trim_start().starts_with("fc6 "))
            .unwrap_or_else(|| panic!("no fc6 row:\n{text}"));
        assert!(fc6.contains(&format!("fc-stream {level}; ")), "{fc6}");
        // the fully connected layers against the machine's read bandwidth, nominal and dense
        assert!(fc6.contains("weights 151.0 MB at "), "{fc6}");
        assert!(fc6.contains("dense at batch 1 "), "{fc6}");
        assert!(text.contains("read bandwidth "), "{text}");
    }
    // training with frozen features: the frozen front runs forward only, and says so
    let (code, out, err) = alexvgg(&[
        "bench",
        "-m",
        "alexnet",
        "--train",
        "--freeze",
        "features",
        "--batch-size",
        "1",
        "--iters",
        "1",
        "--warmup",
        "0",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("training"), "{out}");
    assert!(
        err.contains(
            "trained layers: alexvgg-cpu training kernels; frozen layers up to pool5 forward only"
        ),
        "{err}"
    );
    let (code, _, err) = alexvgg(&["bench", "--freeze", "features"]);
    assert_eq!(code, 1);
    assert!(err.contains("--freeze is for --train"), "{err}");
}

/// `alexvgg tune` times each convolution's kernels and records the fastest in the cache; the
/// CPU engine then runs them (`bench --per-layer` says so), `ALEXVGG_TUNING=off` and an
/// unreadable table leave the fixed rules, and bad flags are refused.
#[test]
fn tune_records_kernel_choices_that_the_engine_uses() {
    let cache = scratch("tune-cache");
    let run = |args: &[&str], tuning: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_alexvgg"));
        c.args(args).env("ALEXVGG_CACHE", &cache);
        match tuning {
            Some(v) => c.env("ALEXVGG_TUNING", v),
            None => c.env_remove("ALEXVGG_TUNING"),
        };
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(
        &["tune", "-m", "alexnet", "--variant", "tf", "--iters", "1"],
        None,
    );
    assert_eq!(code, Some(0), "{err}");
    for needle in [
        "conv1",
        "winograd-f2x5-gemm",
        "winograd-f2x5-blocks",
        "winograd-f4x3-blocks",
        "winograd-f2x3-fused",
        "recorded 5 convolution shapes",
    ] {
        assert!(out.contains(needle), "{needle}:\n{out}");
    }
    let table = std::fs::read_to_string(cache.join("tuning.txt")).unwrap();
    assert!(
        table.starts_with("# alexvgg tuning v2\nmachine "),
        "{table}"
    );
    // the element-wise level is recorded where the CPU has two to choose from (AVX-512)
    let elementwise = out.contains("element-wise kernels (Winograd transforms, LRN, max pool)");
    assert!(
        elementwise || out.contains("element-wise kernels: "),
        "{out}"
    );
    assert_eq!(
        table.lines().any(|l| l.starts_with("elementwise avx")),
        elementwise,
        "{table}"
    );
    assert_eq!(
        table.lines().count(),
        2 + 5 + usize::from(elementwise),
        "{table}"
    );
    let bench = [
        "bench",
        "-m",
        "alexnet",
        "--variant",
        "tf",
        "--batch-size",
        "1",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--per-layer",
    ];
    let (code, out, err) = run(&bench, None);
    assert_eq!(code, Some(0), "{err}");
    let conv3 = out
        .lines()
        .find(|l| l.trim_start().starts_with("conv3 "))
        .unwrap();
    assert!(conv3.contains("tuned: "), "{conv3}");
    let (_, out, _) = run(&bench, Some("off"));
    assert!(!out.contains("tuned: "), "{out}");
    // an unreadable table: said once, then the fixed rules
    std::fs::write(cache.join("tuning.txt"), "not a table").unwrap();
    let (code, out, err) = run(&bench, None);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("ignoring the tuning table") && err.contains("tuning.txt"),
        "{err}"
    );
    assert!(!out.contains("tuned: "), "{out}");
    let (code, _, err) = run(&["tune", "--iters", "0"], None);
    assert_eq!(code, Some(1));
    assert!(err.contains("--iters 0 is out of range"), "{err}");
    let _ = std::fs::remove_dir_all(cache);
}
