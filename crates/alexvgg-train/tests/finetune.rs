//! Fine-tuning: gradients and optimizer steps against PyTorch, learning on a synthetic folder,
//! freezing. (Resumption after a kill and the CLI's use of the output: the root's `tests/cli.rs`.)

#[path = "../../../tests/common/devices.rs"]
mod devices;
#[path = "../../../tests/common/fixtures.rs"]
mod fixtures;
#[path = "../../../tests/common/support.rs"]
mod support;

use std::path::Path;
use std::time::Instant;

use alexvgg_import::{
    Metadata, TensorMap, load_model, module_tensors, read_burnpack, read_burnpack_with_metadata,
    read_for, write_tensors_with,
};
use alexvgg_inference::plot;
use alexvgg_inference::preprocess::Augment;
use alexvgg_models::{AlexNetVariant, Architecture};
use alexvgg_train::data::ValSource;
use alexvgg_train::synth::make_dataset;
use alexvgg_train::{
    FinetuneError, Freeze, LrSchedule, OptimizerKind, OptimizerSettings, RunConfig, Trainer,
    checkpoint_checksum, run,
};
use devices::cpu;
use fixtures::tensors;
use support::{assert_close, fixture, scratch};

const CAFFE: Architecture = Architecture::AlexNet(AlexNetVariant::Caffe);
const TF: Architecture = Architecture::AlexNet(AlexNetVariant::Tf);

/// Two steps of `kind` on the reduced Caffe AlexNet (LRN, groups, stride 4, ceil-mode pools)
/// from its fixture weights, compared with PyTorch's losses and updated weights: with the CPU
/// training kernels (`auto`) and with burn's layers throughout (`burn`).
fn optimizer_steps_match_pytorch(kind: OptimizerKind, name: &str, lr: f64, wd: f64) {
    use alexvgg_inference::runner::EngineKind;
    for engine in [EngineKind::Auto, EngineKind::Burn] {
        optimizer_steps_on(kind, name, lr, wd, engine);
    }
}

fn optimizer_steps_on(
    kind: OptimizerKind,
    name: &str,
    lr: f64,
    wd: f64,
    engine: alexvgg_inference::runner::EngineKind,
) {
    let device = cpu().autodiff();
    let (model, _, _) = load_model(&fixture("alexnet_caffe_w8.safetensors"), &CAFFE, &device)
        .expect("fixture weights");
    let before = module_tensors(&model).unwrap();
    let model = model.with_dropout(0.0); // PyTorch's reference network has no dropout
    let settings = OptimizerSettings {
        kind,
        momentum: 0.9,
        weight_decay: wd,
    };
    let mut trainer = Trainer::new(model, &CAFFE, &settings, &Freeze::None, &device)
        .unwrap()
        .with_engine(engine)
        .unwrap();
    let kernels = match engine {
        alexvgg_inference::runner::EngineKind::Burn => "burn",
        _ => "alexvgg-cpu training kernels",
    };
    assert_eq!(trainer.layer_kernels(), kernels);
    let name_engine = format!("{name} ({kernels})");
    let inputs = fixture_input(227);
    let reference = tensors("train_steps.safetensors");
    for step in 0..2 {
        let stats = trainer.step(inputs.clone(), &[3, 7], lr).unwrap();
        let want = reference[&format!("{name}.loss{step}")].data[0] as f64;
        assert!(
            (stats.loss - want).abs() <= 1e-4 * want.abs(),
            "{name_engine} step {step}: loss {} vs PyTorch {want}",
            stats.loss
        );
    }
    let after = module_tensors(trainer.model()).unwrap();
    // PyTorch's updated weights, in our names and layouts
    let dir = scratch(&format!("steps-{name}"));
    let mut torch_names = TensorMap::new();
    for (k, t) in reference.iter() {
        if let Some(key) = k
            .strip_prefix(&format!("{name}."))
            .filter(|k| !k.starts_with("loss"))
        {
            torch_names.insert(key.to_string(), t.clone());
        }
    }
    let file = dir.join("updated.safetensors");
    write_safetensors(&torch_names, &file);
    let (_, want) = read_for(&file, &CAFFE).unwrap();
    assert_eq!(want.len(), after.len());
    for (k, w) in want.iter() {
        let got = &after[k];
        assert_close(&format!("{name_engine} {k}"), &got.data, &w.data, 1e-4);
        // the update itself, not only the weights it was added to
        let delta =
            |t: &[f32]| -> Vec<f32> { t.iter().zip(&before[k].data).map(|(a, b)| a - b).collect() };
        assert_close(
            &format!("{name_engine} update of {k}"),
            &delta(&got.data),
            &delta(&w.data),
            2e-3,
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Minimal safetensors writer for the test (f32 only).
fn write_safetensors(map: &TensorMap, path: &Path) {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    let mut body = Vec::new();
    for (k, t) in map.iter() {
        let bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        header.insert(
            k.clone(),
            serde_json::json!({"dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + bytes.len()]}),
        );
        offset += bytes.len();
        body.extend(bytes);
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(body);
    std::fs::write(path, out).unwrap();
}

#[test]
fn sgd_steps_match_pytorch() {
    optimizer_steps_match_pytorch(OptimizerKind::Sgd, "sgd", 0.01, 5e-4);
}

#[test]
fn adam_steps_match_pytorch() {
    optimizer_steps_match_pytorch(OptimizerKind::Adam, "adam", 1e-3, 1e-4);
}

fn config(data: &Path, weights: Option<String>) -> RunConfig {
    RunConfig {
        architecture: TF,
        weights,
        data: data.to_path_buf(),
        val: ValSource::Split(0.25),
        epochs: 4,
        batch_size: 16,
        lr: 1e-3,
        optimizer: OptimizerSettings {
            kind: OptimizerKind::Adam,
            momentum: 0.0,
            weight_decay: 0.0,
        },
        schedule: LrSchedule::Constant,
        freeze: Freeze::None,
        seed: 3,
        augment: Some(Augment {
            scale: (0.5, 1.0),
            ..Augment::default()
        }),
        dropout: Some(0.0),
        preprocess: None,
        hidden: Some(64),
        width_divisor: Some(8),
        checkpoint_every: 0,
    }
}

#[test]
fn reduced_alexnet_learns_the_synthetic_folder() {
    let dir = scratch("learn");
    make_dataset(&dir.join("data"), 4, 40, 64, 11).unwrap();
    let cfg = config(&dir.join("data"), None);
    let started = Instant::now();
    let summary = run(Some(&cfg), &dir.join("out"), &cpu(), &mut |_| {}).unwrap();
    let last = summary.history.last().unwrap();
    eprintln!(
        "{} epochs in {:.1} s: {:?}",
        summary.history.len(),
        started.elapsed().as_secs_f64(),
        summary
            .history
            .iter()
            .map(|m| (m.train_loss, m.val_top1))
            .collect::<Vec<_>>()
    );
    assert_eq!(summary.history.len(), 4);
    assert!(last.val_top1 >= 0.9, "validation top-1 {}", last.val_top1);
    assert!(last.train_loss < summary.history[0].train_loss);
    // output directory: every promised file, metrics parseable
    for f in [
        "config.json",
        "labels.txt",
        "best.bpk",
        "last.bpk",
        "metrics.jsonl",
        "metrics.csv",
        "curves.png",
    ] {
        assert!(dir.join("out").join(f).is_file(), "{f} missing");
    }
    // the curves of the four epochs, the same as redrawn from metrics.jsonl
    let curves = dir.join("out/curves.png");
    let img = image::open(&curves).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (plot::WIDTH, plot::HEIGHT));
    let again = dir.join("again.png");
    assert_eq!(
        plot::plot_run(&dir.join("out"), Some(&again)).unwrap(),
        again
    );
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&curves).unwrap()
    );
    let csv = std::fs::read_to_string(dir.join("out/metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5);
    let labels = std::fs::read_to_string(dir.join("out/labels.txt")).unwrap();
    assert_eq!(labels.lines().collect::<Vec<_>>(), summary.classes);
    let (arch, shape, _) = read_burnpack(&dir.join("out/best.bpk")).unwrap();
    assert_eq!(arch, Some(TF));
    assert_eq!(shape.unwrap().num_classes, 4);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn frozen_layers_do_not_change() {
    let dir = scratch("freeze");
    make_dataset(&dir.join("data"), 3, 8, 48, 2).unwrap();
    let weights = fixture("alexnet_tf_w8.safetensors");
    let (_, original) = read_for(&weights, &TF).unwrap();
    for (freeze, trained) in [
        ("features", &["fc6", "fc7"][..]),
        ("up-to:fc7", &[][..]),
        (
            "up-to:conv2",
            &["convs.2", "convs.3", "convs.4", "fc6", "fc7"][..],
        ),
    ] {
        let mut cfg = config(&dir.join("data"), Some(weights.display().to_string()));
        cfg.hidden = None;
        cfg.width_divisor = None;
        cfg.epochs = 1;
        cfg.freeze = Freeze::parse(freeze).unwrap();
        let out = dir.join(freeze.replace(':', "_"));
        run(Some(&cfg), &out, &cpu(), &mut |_| {}).unwrap();
        let (_, _, tuned) = read_burnpack(&out.join("last.bpk")).unwrap();
        for (k, t) in original.iter() {
            if k.starts_with("fc8") {
                assert_eq!(tuned[k].shape[1.min(tuned[k].shape.len() - 1)], 3, "{k}");
                continue;
            }
            let changed = tuned[k].data != t.data;
            let should = trained.iter().any(|p| k.starts_with(&format!("{p}.")));
            assert_eq!(
                changed, should,
                "--freeze {freeze}: {k} changed = {changed}"
            );
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn vgg_with_batch_norm_fine_tunes_with_frozen_features() {
    let dir = scratch("vgg");
    make_dataset(&dir.join("data"), 2, 4, 32, 6).unwrap();
    let weights = fixture("vgg11_bn_w16.safetensors");
    let arch = Architecture::parse("vgg11_bn").unwrap();
    let (_, original) = read_for(&weights, &arch).unwrap();
    let mut cfg = config(&dir.join("data"), Some(weights.display().to_string()));
    cfg.architecture = arch;
    cfg.hidden = None;
    cfg.width_divisor = None;
    cfg.epochs = 1;
    cfg.batch_size = 3;
    cfg.val = ValSource::Split(0.5);
    cfg.freeze = Freeze::Features;
    run(Some(&cfg), &dir.join("out"), &cpu(), &mut |_| {}).unwrap();
    let (_, shape, tuned) = read_burnpack(&dir.join("out/last.bpk")).unwrap();
    assert_eq!(shape.unwrap().num_classes, 2);
    for (k, t) in original.iter() {
        if k.starts_with("fc8") {
            continue;
        }
        // frozen convolutions keep weights and BatchNorm statistics; fc6 and fc7 train
        let changed = tuned[k].data != t.data;
        assert_eq!(changed, k.starts_with("fc"), "{k} changed = {changed}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Every checkpoint left in `out` holds finite values only.
fn assert_finite_checkpoints(out: &Path) {
    for f in ["best.bpk", "last.bpk"] {
        let path = out.join(f);
        if path.is_file() {
            let (_, _, map) = read_burnpack(&path).unwrap();
            for (k, t) in map.iter() {
                assert!(
                    t.data.iter().all(|v| v.is_finite()),
                    "{f}: {k} is not finite"
                );
            }
        }
    }
}

fn sgd(lr: f64, cfg: &mut RunConfig) {
    cfg.lr = lr;
    cfg.optimizer = OptimizerSettings {
        kind: OptimizerKind::Sgd,
        momentum: 0.9,
        weight_decay: 0.0,
    };
    cfg.batch_size = 4;
    cfg.augment = None;
}

#[test]
fn a_diverging_run_stops_and_never_saves_non_finite_weights() {
    let dir = scratch("diverge");
    make_dataset(&dir.join("data"), 2, 8, 32, 4).unwrap();
    let mut cfg = config(&dir.join("data"), None);
    sgd(1e6, &mut cfg);
    cfg.epochs = 3;
    cfg.checkpoint_every = 1;
    let out = dir.join("out");
    let mut epochs = Vec::new();
    let err = run(Some(&cfg), &out, &cpu(), &mut |e| {
        if let alexvgg_train::Event::Epoch(m) = e {
            epochs.push(m.clone());
        }
    })
    .unwrap_err();
    assert!(matches!(err, FinetuneError::Diverged { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("diverged at epoch") && text.contains("lower learning rate"),
        "{text}"
    );
    // no epoch with a non-finite loss counted as accurate or became the best
    for m in &epochs {
        assert!(
            m.val_loss.is_finite() || (!m.best && m.val_top1 == 0.0),
            "{m:?}"
        );
    }
    assert_finite_checkpoints(&out);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn resume_refuses_corrupt_or_non_finite_checkpoints() {
    let dir = scratch("corrupt");
    make_dataset(&dir.join("data"), 2, 8, 32, 4).unwrap();
    let mut cfg = config(&dir.join("data"), None);
    sgd(0.01, &mut cfg);
    cfg.epochs = 1;
    let out = dir.join("out");
    run(Some(&cfg), &out, &cpu(), &mut |_| {}).unwrap();
    // one more epoch to go, as if the run had been interrupted
    let manifest = out.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    v["run"]["epochs"] = 2.into();
    std::fs::write(&manifest, serde_json::to_string(&v).unwrap()).unwrap();
    let (last, best) = (out.join("last.bpk"), out.join("best.bpk"));
    let good = std::fs::read(&last).unwrap();
    let best_bytes = std::fs::read(&best).unwrap();
    let resume = || {
        run(None, &out, &cpu(), &mut |_| {})
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };

    // a bit flip in the weights
    let mut flipped = good.clone();
    let at = flipped.len() * 3 / 4;
    flipped[at] ^= 0x10;
    std::fs::write(&last, &flipped).unwrap();
    let err = resume();
    assert!(
        err.contains("last.bpk") && err.contains("checksum"),
        "{err}"
    );

    // NaN weights, with a checksum that matches them
    let (meta, mut map) = read_burnpack_with_metadata(&good_file(&dir, &good)).unwrap();
    for t in map.values_mut() {
        t.data.iter_mut().for_each(|v| *v = f32::NAN);
    }
    let mut meta: Metadata = meta
        .into_iter()
        .filter(|(k, _)| k.starts_with("alexvgg.finetune.") && k != "alexvgg.finetune.sha256")
        .collect();
    let sum = checkpoint_checksum(&meta, &map);
    meta.insert("alexvgg.finetune.sha256".into(), sum);
    let (arch, shape, _) = read_burnpack(&last_good(&dir)).unwrap();
    write_tensors_with(map, &arch.unwrap(), &shape.unwrap(), &meta, &last).unwrap();
    let err = resume();
    assert!(
        err.contains("last.bpk") && err.contains("non-finite"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&best).unwrap(),
        best_bytes,
        "best.bpk changed"
    );

    // a bit flip in the optimizer state
    std::fs::write(&last, &good).unwrap();
    let optimizer = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("optimizer-")
        })
        .unwrap();
    let opt_good = std::fs::read(&optimizer).unwrap();
    let mut opt_bad = opt_good.clone();
    let at = opt_bad.len() - 3;
    opt_bad[at] ^= 0x01;
    std::fs::write(&optimizer, &opt_bad).unwrap();
    let err = resume();
    assert!(
        err.contains("optimizer-") && err.contains("checksum"),
        "{err}"
    );

    // restored, it resumes
    std::fs::write(&optimizer, &opt_good).unwrap();
    let summary = run(None, &out, &cpu(), &mut |_| {}).unwrap();
    assert_eq!(summary.history.len(), 2);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A copy of the good `last.bpk` bytes as a file of its own.
fn good_file(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
    let path = last_good(dir);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn last_good(dir: &Path) -> std::path::PathBuf {
    dir.join("last-good.bpk")
}

/// Two SGD steps with `freeze`, the frozen front run forward only outside autodiff (`auto`)
/// and, for comparison, everything under autodiff (`burn`): the same losses and weights.
#[test]
fn a_frozen_prefix_runs_forward_only_and_trains_as_the_autodiff_path_does() {
    use alexvgg_inference::runner::EngineKind;
    let torchvision = Architecture::AlexNet(AlexNetVariant::Torchvision);
    let settings = momentum_sgd();
    for (name, device, tol) in devices::devices() {
        let device = device.autodiff();
        for (arch, weights, freeze, boundary) in [
            (TF, "alexnet_tf_w8.safetensors", Freeze::Features, "pool5"),
            (
                TF,
                "alexnet_tf_w8.safetensors",
                Freeze::UpTo("conv2".into()),
                "pool2",
            ),
            (
                torchvision,
                "alexnet_torchvision_w8.safetensors",
                Freeze::Features,
                "avgpool",
            ),
        ] {
            let what = format!("{name} {} {freeze:?}", arch.describe());
            let trainer = |engine: EngineKind| {
                let (model, _, _) = load_model(&fixture(weights), &arch, &device).unwrap();
                Trainer::new(model.with_dropout(0.0), &arch, &settings, &freeze, &device)
                    .unwrap()
                    .with_engine(engine)
                    .unwrap()
            };
            let mut fast = trainer(EngineKind::Auto);
            let mut plain = trainer(EngineKind::Burn);
            let runner = if name == "wgpu" {
                "burn"
            } else {
                "alexvgg-cpu kernels"
            };
            assert_eq!(fast.frozen_prefix(), Some((boundary, runner)), "{what}");
            assert_eq!(plain.frozen_prefix(), None, "{what}");
            let x = fixture_input(arch.input_size());
            let labels = [3, 7];
            train_alike(&what, &mut fast, &mut plain, &x, tol);
            // and evaluation takes the same route
            let (ea, eb) = (
                fast.evaluate(&fast.eval_model(), x.clone(), &labels)
                    .unwrap(),
                plain.evaluate(&plain.eval_model(), x, &labels).unwrap(),
            );
            assert!(
                (ea.loss_sum - eb.loss_sum).abs() <= 1e-3 * eb.loss_sum.abs().max(1.0),
                "{what}"
            );
        }
    }
    // no prefix where the frozen part holds BatchNorm, or reaches into the classifier
    let device = cpu().autodiff();
    let bn = Architecture::parse("vgg11_bn").unwrap();
    let (model, _, _) = load_model(&fixture("vgg11_bn_w16.safetensors"), &bn, &device).unwrap();
    let t = Trainer::new(model, &bn, &settings, &Freeze::Features, &device)
        .unwrap()
        .with_engine(EngineKind::Auto)
        .unwrap();
    assert_eq!(t.frozen_prefix(), None);
    let (model, _, _) = load_model(&fixture("alexnet_tf_w8.safetensors"), &TF, &device).unwrap();
    let t = Trainer::new(model, &TF, &settings, &Freeze::UpTo("fc6".into()), &device)
        .unwrap()
        .with_engine(EngineKind::Auto)
        .unwrap();
    assert_eq!(
        t.frozen_prefix(),
        None,
        "dropout after fc6 stays in training mode"
    );
}

/// The full recipe (every parameter trained) on each network, with the CPU training kernels
/// (`auto`) and with burn's layers throughout (`burn`): the same losses, weights and BatchNorm
/// running statistics after two SGD steps, and the kernels did compute the trained layers.
#[test]
fn every_network_trains_alike_with_the_kernels_and_with_burn() {
    use alexvgg_inference::runner::EngineKind;
    let settings = momentum_sgd();
    let cpu_devices = devices::devices()
        .into_iter()
        .filter(|(name, _, _)| name != "wgpu");
    for ((backend, device, _), (arch, weights)) in cpu_devices.flat_map(|d| {
        [
            (TF, "alexnet_tf_w8.safetensors"),
            (
                Architecture::AlexNet(AlexNetVariant::Torchvision),
                "alexnet_torchvision_w8.safetensors",
            ),
            (
                Architecture::parse("vgg16").unwrap(),
                "vgg16_w16.safetensors",
            ),
            (
                Architecture::parse("vgg11_bn").unwrap(),
                "vgg11_bn_w16.safetensors",
            ),
        ]
        .map(|case| (d.clone(), case))
    }) {
        let device = device.autodiff();
        let what = format!("{backend} {}", arch.describe());
        let trainer = |engine: EngineKind| {
            let (model, _, _) = load_model(&fixture(weights), &arch, &device).unwrap();
            Trainer::new(
                model.with_dropout(0.0),
                &arch,
                &settings,
                &Freeze::None,
                &device,
            )
            .unwrap()
            .with_engine(engine)
            .unwrap()
        };
        let (mut fast, mut plain) = (trainer(EngineKind::Auto), trainer(EngineKind::Burn));
        assert_eq!(
            fast.layer_kernels(),
            "alexvgg-cpu training kernels",
            "{what}"
        );
        assert_eq!(plain.layer_kernels(), "burn", "{what}");
        // BatchNorm's parameter gradients sum over every pixel of the batch (100k terms at
        // 224x224), in f32 by burn and in f64 by the kernels: those layers agree to 1e-3
        let tol = if what.contains("BN") { 1e-3 } else { 1e-4 };
        train_alike(
            &what,
            &mut fast,
            &mut plain,
            &fixture_input(arch.input_size()),
            tol,
        );
    }
}

/// SGD with momentum 0.9 and weight decay 5e-4.
fn momentum_sgd() -> OptimizerSettings {
    OptimizerSettings {
        kind: OptimizerKind::Sgd,
        momentum: 0.9,
        weight_decay: 5e-4,
    }
}

/// The shared fixture batch of side `side`, scaled as the PyTorch references scale it.
fn fixture_input(side: usize) -> Vec<f32> {
    let t = &tensors("inputs.safetensors")[&format!("input{side}")];
    t.data.iter().map(|v| v * 0.02f32).collect()
}

/// Two SGD steps of `fast` and `plain` on `x` (labels 3, 7): the same losses (1e-4) and then
/// the same parameters and running statistics (`tol`).
fn train_alike(what: &str, fast: &mut Trainer, plain: &mut Trainer, x: &[f32], tol: f32) {
    for step in 0..2 {
        let a = fast.step(x.to_vec(), &[3, 7], 0.01).unwrap();
        let b = plain.step(x.to_vec(), &[3, 7], 0.01).unwrap();
        assert!(
            (a.loss - b.loss).abs() <= 1e-4 * b.loss.abs().max(1.0),
            "{what} step {step}: loss {} vs {}",
            a.loss,
            b.loss
        );
    }
    let (a, b) = (
        module_tensors(fast.model()).unwrap(),
        module_tensors(plain.model()).unwrap(),
    );
    assert_eq!(a.len(), b.len(), "{what}");
    for (k, t) in b.iter() {
        assert_close(&format!("{what} {k}"), &a[k].data, &t.data, tol);
    }
}
