//! The CPU engine (`alexvgg-cpu`) against the reference frameworks and the burn models.
//!
//! Same fixtures as `parity.rs`: every recorded activation of TensorFlow's / PyTorch's run must
//! come out of the engine within the same tolerance, for every variant (SAME and explicit
//! padding, groups, LRN, ceil pooling, BatchNorm folded into the convolutions).

#[path = "../../../tests/common/fixtures.rs"]
mod fixtures;
#[path = "../../../tests/common/support.rs"]
mod support;

use std::collections::HashMap;

use alexvgg_cpu::{Activation, ConvAlgorithm, Engine, EngineError, EngineOptions, Simd};
use alexvgg_import::load_model;
use alexvgg_models::{AlexNetVariant, Architecture, Model, NetworkShape, VggDepth};
use burn::module::Module;
use burn::tensor::Device;
use burn::tensor::{Distribution, Tensor};
use fixtures::*;
use support::*;

/// How `engine` computes `layer` (its [`Engine::layer_kernels`] description).
fn describe(engine: &Engine, layer: &str) -> String {
    engine
        .layer_kernels()
        .into_iter()
        .find(|k| k.layer == layer)
        .unwrap()
        .description
}

/// The engine runs on the host; models are built on the CPU backend.
fn cpu() -> Device {
    Device::flex()
}

/// Runs the engine with the observer, returning every activation channels-first.
fn observed(
    engine: &Engine,
    input: &[f32],
    dims: [usize; 4],
) -> (HashMap<String, Vec<f32>>, Result<Vec<f32>, EngineError>) {
    let mut seen = HashMap::new();
    let logits = engine.forward_observed(input, dims, &mut |name, act| {
        let values = match act {
            Activation::Map(m) => m.to_nchw(),
            Activation::Vector { data, .. } => data.to_vec(),
        };
        seen.insert(name.to_string(), values);
    });
    (seen, logits)
}

/// Every algorithm choice: the default, im2col everywhere, each Winograd variant for every
/// stride-1 3x3 and 5x5 convolution (the reduced-width fixtures have too few channels for `Auto`
/// to pick one), and the direct kernel everywhere.
const ALGORITHMS: [ConvAlgorithm; 5] = [
    ConvAlgorithm::Auto,
    ConvAlgorithm::Im2col,
    ConvAlgorithm::Winograd,
    ConvAlgorithm::WinogradSmallTiles,
    ConvAlgorithm::Direct,
];

/// Every (algorithm, SIMD level) pair to check: every algorithm at every level the CPU supports,
/// the portable kernels (SIMD detection forced off) included.
fn choices() -> Vec<(ConvAlgorithm, Simd)> {
    Simd::supported_levels()
        .into_iter()
        .flat_map(|simd| ALGORITHMS.map(|conv| (conv, simd)))
        .collect()
}

fn check(arch: Architecture, stem: &str, side: usize) {
    let device = cpu();
    let inputs = tensors("inputs.safetensors");
    let input = &inputs[&format!("input{side}")];
    let dims: [usize; 4] = input.shape.clone().try_into().unwrap();
    let acts = tensors(&format!("{stem}.activations.safetensors"));
    for (conv, simd) in choices() {
        let (model, _, _) = load_model(&fixture(&format!("{stem}.safetensors")), &arch, &device)
            .unwrap_or_else(|e| panic!("{stem}: {e}"));
        let engine = Engine::with_options(
            model,
            &EngineOptions {
                conv,
                input_size: None,
                simd: Some(simd),
                tuning: None,
            },
        )
        .unwrap();
        assert_eq!(engine.simd(), simd);
        // A first pass on other values: the engine reuses its buffers, and every kernel must
        // overwrite what it takes (a missed element would keep this pass's values).
        let junk: Vec<f32> = input.data.iter().map(|v| 1e3 - 7.0 * v).collect();
        engine.forward(&junk, dims).unwrap();
        let (seen, logits) = observed(&engine, &input.data, dims);
        let logits = logits.unwrap();
        for (key, want) in &acts {
            let layer = key.trim_start_matches("act.");
            let got = seen.get(layer).unwrap_or_else(|| {
                panic!("{stem}: the engine reports no activation named {layer}")
            });
            assert_close(
                &format!("engine {conv:?} {simd} {stem}/{layer}"),
                got,
                &want.data,
                1e-4,
            );
        }
        assert_close(
            &format!("engine {conv:?} {simd} {stem}/logits"),
            &logits,
            &acts["act.fc8"].data,
            1e-4,
        );
        assert!(
            logits.iter().any(|v| *v < 0.0),
            "{stem}: logits never negative"
        );
        assert_eq!(engine.num_classes(), 10);
    }
}

#[test]
fn engine_alexnet_tf_matches_tensorflow() {
    check(
        Architecture::AlexNet(AlexNetVariant::Tf),
        "alexnet_tf_w8",
        227,
    );
}

#[test]
fn engine_alexnet_caffe_matches_pytorch() {
    check(
        Architecture::AlexNet(AlexNetVariant::Caffe),
        "alexnet_caffe_w8",
        227,
    );
}

#[test]
fn engine_alexnet_torchvision_matches_pytorch() {
    check(
        Architecture::AlexNet(AlexNetVariant::Torchvision),
        "alexnet_torchvision_w8",
        224,
    );
}

#[test]
fn engine_vgg16_matches_pytorch() {
    let arch = Architecture::Vgg {
        depth: VggDepth::Vgg16,
        batch_norm: false,
    };
    check(arch, "vgg16_w16", 224);
}

#[test]
fn engine_vgg11_bn_matches_pytorch() {
    let arch = Architecture::Vgg {
        depth: VggDepth::Vgg11,
        batch_norm: true,
    };
    check(arch, "vgg11_bn_w16", 224);
}

/// Input sizes the fixtures do not cover: TensorFlow SAME padding with an odd total (224 gives
/// conv1 padding (3, 4)), ceil pooling on other sizes, and a real adaptive average pool (an
/// input of 250 reaches torchvision's avgpool at 7x7, not 6x6). The burn model is the reference.
#[test]
fn engine_matches_burn_on_other_input_sizes() {
    let device = cpu();
    let shape = NetworkShape {
        num_classes: 7,
        hidden: 32,
        width_divisor: 8,
    };
    for (arch, side) in [
        (Architecture::AlexNet(AlexNetVariant::Tf), 224),
        (Architecture::AlexNet(AlexNetVariant::Caffe), 235),
        (Architecture::AlexNet(AlexNetVariant::Torchvision), 250),
        (
            Architecture::Vgg {
                depth: VggDepth::Vgg11,
                batch_norm: true,
            },
            100,
        ),
    ] {
        let model = arch.init(&shape, &device).unwrap();
        let input = Tensor::<4>::random(
            [2, 3, side, side],
            Distribution::Uniform(-50.0, 50.0),
            &device,
        );
        let mut want: HashMap<String, Vec<f32>> = HashMap::new();
        let name = arch.name();
        // Features only: tf/caffe at these sizes do not flatten to fc6's width.
        let features = match &model {
            Model::AlexNet(m) => m.forward_features_observed(input.clone(), &mut |n, t| {
                want.insert(n.to_string(), values(t.clone()));
            }),
            Model::Vgg(m) => m.forward_features_observed(input.clone(), &mut |n, t| {
                want.insert(n.to_string(), values(t.clone()));
            }),
        };
        let flat_len = features.dims()[1];
        let input = values(input);
        let record = model.into_record();
        for (conv, simd) in choices() {
            let model = arch
                .init(&shape, &device)
                .unwrap()
                .load_record(record.clone());
            let engine = Engine::with_options(
                model,
                &EngineOptions {
                    conv,
                    input_size: None,
                    simd: Some(simd),
                    tuning: None,
                },
            )
            .unwrap();
            let junk: Vec<f32> = input.iter().map(|v| 1e3 - 7.0 * v).collect();
            let _ = engine.forward(&junk, [2, 3, side, side]);
            let (seen, result) = observed(&engine, &input, [2, 3, side, side]);
            for (layer, w) in &want {
                let got = seen
                    .get(layer)
                    .unwrap_or_else(|| panic!("{name}: no {layer}"));
                assert_close(
                    &format!("{conv:?} {simd} {name}@{side}/{layer}"),
                    got,
                    w,
                    1e-4,
                );
            }
            match result {
                Ok(logits) => assert_eq!(logits.len(), 2 * 7, "{name}"),
                Err(EngineError::FlattenMismatch { found, .. }) => {
                    assert_eq!(found, flat_len, "{name}")
                }
                Err(e) => panic!("{name}@{side}: {e}"),
            }
        }
    }
}

#[test]
fn engine_rejects_bad_inputs_with_errors() {
    let device = cpu();
    let shape = NetworkShape {
        num_classes: 5,
        hidden: 16,
        width_divisor: 16,
    };
    let model = Architecture::AlexNet(AlexNetVariant::Caffe)
        .init(&shape, &device)
        .unwrap();
    let engine = Engine::from_model(model).unwrap();
    assert_eq!(
        engine.forward(&[], [0, 3, 227, 227]).unwrap(),
        Vec::<f32>::new()
    );
    let err = engine.forward(&[0.0; 10], [1, 3, 227, 227]).unwrap_err();
    assert!(matches!(err, EngineError::BadInput { .. }), "{err}");
    let err = engine
        .forward(&vec![0.0; 4 * 227 * 227], [1, 4, 227, 227])
        .unwrap_err();
    assert!(err.to_string().contains("3 channels"), "{err}");
    let err = engine
        .forward(&vec![0.0; 3 * 20 * 20], [1, 3, 20, 20])
        .unwrap_err();
    assert!(err.to_string().contains("is too small for layer"), "{err}");
    let err = engine
        .forward(&vec![0.0; 3 * 300 * 300], [1, 3, 300, 300])
        .unwrap_err();
    assert!(err.to_string().contains("fc6 expects"), "{err}");
}

/// Fully connected layers split into column blocks (as built for wgpu devices) are reassembled
/// into one weight matrix by the engine.
#[test]
fn engine_reassembles_column_blocks() {
    use alexvgg_models::BlockLinear;
    let device = cpu();
    let shape = NetworkShape {
        num_classes: 6,
        hidden: 32,
        width_divisor: 16,
    };
    let Model::AlexNet(mut m) = Architecture::AlexNet(AlexNetVariant::Caffe)
        .init(&shape, &device)
        .unwrap()
    else {
        unreachable!()
    };
    let d_in = m.fc6.d_in();
    // 4 blocks of 8 outputs each: a 4-byte-per-weight budget of d_in * 8 values
    m.fc6 = BlockLinear::new(d_in, 32, Some(d_in * 8 * 4), &device);
    assert_eq!(m.fc6.blocks.len(), 4);
    let input = Tensor::<4>::random(
        [2, 3, 227, 227],
        Distribution::Uniform(-50.0, 50.0),
        &device,
    );
    let want = values(m.forward(input.clone()));
    let engine = Engine::from_model(Model::AlexNet(m)).unwrap();
    let got = engine.forward(&values(input), [2, 3, 227, 227]).unwrap();
    assert_close("column blocks", &got, &want, 1e-4);
}

/// NaN weights gave plausible probabilities here (ReLU and max-pooling drop NaNs, zero inputs
/// skip their weight rows) where burn gave NaN: the engine refuses non-finite weights and
/// inputs instead.
#[test]
fn engine_refuses_non_finite_weights_and_inputs() {
    use burn::module::Param;
    let device = cpu();
    let shape = NetworkShape {
        num_classes: 5,
        hidden: 16,
        width_divisor: 16,
    };
    let model = Architecture::AlexNet(AlexNetVariant::Caffe)
        .init(&shape, &device)
        .unwrap();
    let engine = Engine::from_model(model).unwrap();
    let mut input = vec![0.5; 3 * 227 * 227];
    input[7] = f32::NAN;
    let err = engine.forward(&input, [1, 3, 227, 227]).unwrap_err();
    assert!(
        matches!(err, EngineError::NonFiniteInput { index: 7, .. }),
        "{err}"
    );
    input[7] = 0.5;
    assert!(engine.forward(&input, [1, 3, 227, 227]).is_ok());
    let Model::AlexNet(mut net) = Architecture::AlexNet(AlexNetVariant::Caffe)
        .init(&shape, &device)
        .unwrap()
    else {
        unreachable!()
    };
    let w = net.fc7.blocks[0].weight.val();
    let dims = w.dims();
    let mut data = alexvgg_models::host_values(w).unwrap();
    data[0] = f32::INFINITY;
    data[1] = f32::NAN;
    net.fc7.blocks[0].weight = Param::from_tensor(burn::tensor::Tensor::from_data(
        burn::tensor::TensorData::new(data, dims),
        &device,
    ));
    let err = Engine::from_model(Model::AlexNet(net)).unwrap_err();
    assert!(
        matches!(&err, EngineError::NonFinite { name, count: 2 } if name.starts_with("fc7")),
        "{err}"
    );
}

/// The engine names each layer's kernel, with the SIMD variant the level asked for.
#[test]
fn engine_reports_its_kernels_per_layer() {
    let device = cpu();
    let shape = NetworkShape {
        num_classes: 5,
        hidden: 16,
        width_divisor: 16,
    };
    for simd in Simd::supported_levels() {
        let model = Architecture::AlexNet(AlexNetVariant::Caffe)
            .init(&shape, &device)
            .unwrap();
        let engine = Engine::with_options(
            model,
            &EngineOptions {
                simd: Some(simd),
                ..EngineOptions::default()
            },
        )
        .unwrap();
        let kernels = engine.layer_kernels();
        let names: Vec<&str> = kernels.iter().map(|k| k.layer.as_str()).collect();
        assert_eq!(names, engine.layer_names());
        let of = |layer: &str| kernels.iter().find(|k| k.layer == layer).unwrap();
        // conv1 (11x11 stride 4): the direct kernel, or im2col where the level has no vector
        // register tiles
        let conv1 = of("conv1");
        if simd == Simd::Portable {
            assert_eq!(conv1.family, "im2col-gemm", "{conv1:?}");
        } else {
            assert_eq!(conv1.family, "direct", "{conv1:?}");
            assert!(
                conv1
                    .description
                    .ends_with(simd.for_kernel(alexvgg_cpu::simd::Kernel::Tiles).name())
            );
        }
        let fc6 = of("fc6");
        assert_eq!(fc6.family, "fc-stream");
        let linear = simd.for_kernel(alexvgg_cpu::simd::Kernel::Linear);
        assert_eq!(fc6.description, format!("fc-stream {linear}"));
        assert_eq!(of("lrn1").family, "lrn");
        assert_eq!(of("pool1").family, "max-pool");
    }
}

/// A tuning table (`alexvgg tune`) changes which kernel computes each layer it lists, per batch
/// size, and not the result.
#[test]
fn recorded_kernel_choices_change_the_kernels_not_the_logits() {
    use alexvgg_cpu::tune::{Choice, TunedConv, Tuning, conv_keys};
    use alexvgg_cpu::winograd::{Layout, Variant};
    let device = Device::flex();
    let arch = Architecture::AlexNet(AlexNetVariant::Tf);
    let shape = NetworkShape {
        num_classes: 5,
        hidden: 16,
        width_divisor: 4,
    };
    let model = arch.init(&shape, &device).unwrap();
    let rows = model.layers([3, 227, 227]).unwrap();
    let mut table = Tuning::new("test".into());
    for (name, key) in conv_keys(&rows, 3) {
        let choice = match name.as_str() {
            // im2col for batch 8, the direct kernel at batch 1
            "conv1" => Choice {
                few: TunedConv::Direct,
                many: TunedConv::Im2col,
            },
            // F(4x4, 3x3) at batch 1 too, where the fixed rules pick F(2x2, 3x3) (13x13 maps),
            // its products by the `gemm` crate at batch 1 and fused register tiles at batch 8
            "conv3" => Choice {
                few: TunedConv::Winograd(Variant::F4x3, Some(Layout::Gemm)),
                many: TunedConv::Winograd(Variant::F4x3, Some(Layout::Fused)),
            },
            // a table written before layouts were tuned: the engine's layout rule
            "conv4" => Choice {
                few: TunedConv::Winograd(Variant::F4x3, None),
                many: TunedConv::Winograd(Variant::F4x3, None),
            },
            _ => continue,
        };
        table.entries.insert(key, choice);
    }
    let table: &'static Tuning = Box::leak(Box::new(table));
    let plain = Engine::from_model(model.clone()).unwrap();
    let tuned = Engine::with_options(
        model,
        &EngineOptions {
            tuning: Some(table),
            ..EngineOptions::default()
        },
    )
    .unwrap();
    let conv1 = describe(&tuned, "conv1");
    assert!(conv1.starts_with("tuned: batch 4+ im2col-gemm"), "{conv1}");
    assert!(conv1.contains("batch 1-3 direct"), "{conv1}");
    let conv3 = describe(&tuned, "conv3");
    assert!(
        conv3.starts_with("tuned: batch 4+ winograd F(4x4,3x3) fused (products: tiles"),
        "{conv3}"
    );
    assert!(
        conv3.contains("batch 1-3 winograd F(4x4,3x3) gemm (products: gemm crate"),
        "{conv3}"
    );
    // no recorded layout: the one the fixed rules give the layer's F(4x4, 3x3) form
    let conv4 = describe(&tuned, "conv4");
    let rule = conv4.strip_prefix("tuned: ").unwrap();
    assert!(rule.starts_with("winograd F(4x4,3x3) "), "{conv4}");
    assert!(describe(&plain, "conv4").starts_with(rule), "{conv4}");
    // the fixed rules: F(4x4, 3x3), and F(2x2, 3x3) for inputs with few tiles (batch 1)
    let fixed = describe(&plain, "conv3");
    assert!(fixed.starts_with("winograd F(4x4,3x3)"), "{fixed}");
    assert!(
        fixed.contains("under 32 tiles: winograd F(2x2,3x3)"),
        "{fixed}"
    );
    // unlisted layers keep the fixed rules
    assert_eq!(describe(&tuned, "conv2"), describe(&plain, "conv2"));
    for batch in [1, 8] {
        let dims = [batch, 3, 227, 227];
        let input: Vec<f32> = (0..dims.iter().product::<usize>())
            .map(|i| ((i * 7919) % 255) as f32 - 120.0)
            .collect();
        let a = tuned.forward(&input, dims).unwrap();
        let b = plain.forward(&input, dims).unwrap();
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-4 * scale,
            "batch {batch}: {worst} vs scale {scale}"
        );
    }
}

/// A tuning table's element-wise level (`alexvgg tune` on a CPU with AVX-512) runs Winograd's
/// transforms, LRN and max pooling at that level (lowered to the engine's), and changes nothing
/// in the logits.
#[test]
fn a_recorded_elementwise_level_runs_those_kernels_and_keeps_the_logits() {
    use alexvgg_cpu::tune::Tuning;
    let arch = Architecture::AlexNet(AlexNetVariant::Tf);
    let shape = NetworkShape {
        num_classes: 5,
        hidden: 16,
        width_divisor: 4,
    };
    let model = arch.init(&shape, &cpu()).unwrap();
    let dims = [2, 3, 227, 227];
    let input: Vec<f32> = (0..dims.iter().product::<usize>())
        .map(|i| ((i * 7919) % 255) as f32 - 120.0)
        .collect();
    let reference = Engine::from_model(model.clone())
        .unwrap()
        .forward(&input, dims)
        .unwrap();
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    for level in Simd::supported_levels() {
        let table: &'static Tuning = Box::leak(Box::new(Tuning {
            elementwise: Some(level),
            ..Tuning::new("test".into())
        }));
        let engine = Engine::with_options(
            model.clone(),
            &EngineOptions {
                tuning: Some(table),
                ..EngineOptions::default()
            },
        )
        .unwrap();
        let want = level.min(engine.simd());
        assert_eq!(engine.elementwise(), want);
        assert_eq!(describe(&engine, "lrn1"), format!("lrn {want}"));
        assert_eq!(describe(&engine, "pool1"), format!("max-pool {want}"));
        let conv3 = describe(&engine, "conv3");
        // every Winograd form of the layer, the small-input one included
        assert_eq!(
            conv3.matches(&format!("transforms: {want})")).count(),
            2,
            "{conv3}"
        );
        let logits = engine.forward(&input, dims).unwrap();
        let worst = logits
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-4 * scale, "{level}: {worst} vs scale {scale}");
    }
}
