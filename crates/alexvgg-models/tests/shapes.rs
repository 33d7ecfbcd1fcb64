//! Layer tables against real forward shapes, the note's AlexNet table.

mod common;

use std::collections::HashMap;

use alexvgg_models::{
    AlexNetConfig, AlexNetVariant, Architecture, LayerKind, Model, ModelError, NetworkShape, Pad,
    VggDepth, gflops, output_size,
};
use burn::tensor::Tensor;
use common::*;

/// Runs a forward pass and checks every observed activation against the table row of the
/// same name, and every table row against the note's window formulas.
fn table_matches_forward(model: &Model, side: usize, tf: bool) {
    let device = cpu();
    let rows = model.layers([3, side, side]).unwrap();
    let mut seen: HashMap<String, [usize; 4]> = HashMap::new();
    model.forward_observed(Tensor::zeros([2, 3, side, side], &device), &mut |n, t| {
        seen.insert(n.to_string(), t.dims());
    });
    let mut prev = [3, side, side];
    for row in &rows[1..] {
        let dims = seen
            .get(&row.name)
            .unwrap_or_else(|| panic!("no activation {}", row.name));
        assert_eq!(
            [dims[1], dims[2], dims[3]],
            row.output,
            "{} at input {side}",
            row.name
        );
        assert_eq!(dims[0], 2);
        if let (Some(k), Some(s), Some(p)) = (row.kernel, row.stride, row.padding) {
            // The pure function agrees: TF SAME rows use ceil(in/stride), explicit rows floor/ceil.
            let pad = match (tf, row.kind) {
                (true, LayerKind::Conv) => Pad::Same,
                (true, _) => Pad::Valid,
                (false, _) => Pad::Explicit(p[0]),
            };
            let want = output_size(prev[1], k[0], s[0], pad, row.ceil_mode);
            assert_eq!(want, Some(row.output[1]), "{}: note formula", row.name);
        }
        prev = row.output;
    }
}

#[test]
fn note_table_for_the_tf_alexnet() {
    let model = Model::AlexNet(AlexNetConfig::new(AlexNetVariant::Tf).init(&cpu()));
    let rows = model.layers([3, 227, 227]).unwrap();
    let got: Vec<(String, [usize; 3])> = rows.iter().map(|r| (r.name.clone(), r.output)).collect();
    let want = [
        ("input", [3, 227, 227]),
        ("conv1", [96, 57, 57]),
        ("lrn1", [96, 57, 57]),
        ("pool1", [96, 28, 28]),
        ("conv2", [256, 28, 28]),
        ("lrn2", [256, 28, 28]),
        ("pool2", [256, 13, 13]),
        ("conv3", [384, 13, 13]),
        ("conv4", [384, 13, 13]),
        ("conv5", [256, 13, 13]),
        ("pool5", [256, 6, 6]),
        ("fc6", [4096, 1, 1]),
        ("fc7", [4096, 1, 1]),
        ("fc8", [1000, 1, 1]),
    ];
    assert_eq!(got, want.map(|(n, s)| (n.to_string(), s)).to_vec());
    // conv1: SAME with stride 4 on 227 pads 4 on every side; conv2 kernels are 5x5x48 (2 groups)
    assert_eq!(rows[1].padding, Some([4, 4, 4, 4]));
    assert_eq!(rows[4].groups, 2);
    assert!((gflops(&rows) - 1.50).abs() < 0.01, "{}", gflops(&rows));
    table_matches_forward(&model, 227, true);
}

#[test]
fn caffe_and_torchvision_tables() {
    let caffe = Model::AlexNet(AlexNetConfig::new(AlexNetVariant::Caffe).init(&cpu()));
    let rows = caffe.layers([3, 227, 227]).unwrap();
    let by = |n: &str| rows.iter().find(|r| r.name == n).unwrap().output;
    assert_eq!(by("conv1"), [96, 55, 55]);
    assert_eq!(by("pool1"), [96, 27, 27]);
    assert_eq!(by("pool2"), [256, 13, 13]);
    assert_eq!(by("pool5"), [256, 6, 6]);
    assert!((gflops(&rows) - 1.45).abs() < 0.01, "{}", gflops(&rows));
    table_matches_forward(&caffe, 227, false);

    let tv = Model::AlexNet(AlexNetConfig::new(AlexNetVariant::Torchvision).init(&cpu()));
    let rows = tv.layers([3, 224, 224]).unwrap();
    assert!((gflops(&rows) - 1.43).abs() < 0.01, "{}", gflops(&rows));
    table_matches_forward(&tv, 224, false);
}

#[test]
fn asymmetric_same_padding_at_224_and_odd_sizes() {
    // SAME padding makes 224 reach 6x6 as well (56, 27, 13, 6); 200 does not, and that is an
    // error naming fc6, not a panic.
    let model = AlexNetConfig::new(AlexNetVariant::Tf)
        .with_width_divisor(8)
        .with_hidden(16)
        .init(&cpu());
    let rows = model.layers([3, 224, 224]).unwrap();
    assert_eq!(rows[1].output, [12, 56, 56]);
    assert_eq!(rows[1].padding, Some([3, 3, 4, 4]));
    let err = model.layers([3, 200, 200]).unwrap_err();
    assert!(err.to_string().contains("fc6"), "{err}");
    for side in [224usize, 231, 250] {
        let mut shapes = HashMap::new();
        let x = Tensor::<4>::zeros([1, 3, side, side], &cpu());
        // run only the convolutional part
        let _ = model.forward_features_observed(x, &mut |n: &str, t: &Tensor<4>| {
            shapes.insert(n.to_string(), t.dims());
        });
        let conv1 = shapes["conv1"];
        assert_eq!(
            conv1[2],
            output_size(side, 11, 4, Pad::Same, false).unwrap(),
            "side {side}"
        );
    }
    // 224: SAME with stride 4 and kernel 11 pads 3 before and 4 after
    assert_eq!(alexvgg_models::same_padding(224, 11, 4), (3, 4));
}

#[test]
fn vgg_tables_at_several_input_sizes() {
    for (depth, bn) in [
        (VggDepth::Vgg16, false),
        (VggDepth::Vgg11, true),
        (VggDepth::Vgg19, false),
    ] {
        let model = Architecture::Vgg {
            depth,
            batch_norm: bn,
        }
        .init(
            &NetworkShape {
                num_classes: 10,
                hidden: 32,
                width_divisor: 16,
            },
            &cpu(),
        )
        .unwrap();
        for side in [224usize, 32, 97, 130] {
            table_matches_forward(&model, side, false);
        }
    }
    let full = Architecture::Vgg {
        depth: VggDepth::Vgg16,
        batch_norm: false,
    }
    .init(&NetworkShape::default(), &cpu())
    .unwrap();
    let rows = full.layers([3, 224, 224]).unwrap();
    assert!((gflops(&rows) - 30.94).abs() < 0.01, "{}", gflops(&rows));
    let pools: Vec<usize> = rows
        .iter()
        .filter(|r| r.kind == LayerKind::MaxPool)
        .map(|r| r.output[1])
        .collect();
    assert_eq!(pools, [112, 56, 28, 14, 7]);
}

#[test]
fn full_size_forward_shapes_and_negative_logits() {
    let device = cpu();
    for (arch, side) in [
        (Architecture::AlexNet(AlexNetVariant::Tf), 227),
        (Architecture::AlexNet(AlexNetVariant::Caffe), 227),
        (Architecture::AlexNet(AlexNetVariant::Torchvision), 224),
        (
            Architecture::Vgg {
                depth: VggDepth::Vgg16,
                batch_norm: false,
            },
            224,
        ),
    ] {
        let model = arch.init(&NetworkShape::default(), &device).unwrap();
        table_matches_forward(
            &model,
            side,
            arch == Architecture::AlexNet(AlexNetVariant::Tf),
        );
        let logits = values(model.forward(Tensor::random(
            [1, 3, side, side],
            burn::tensor::Distribution::Uniform(-100.0, 100.0),
            &device,
        )));
        assert_eq!(logits.len(), 1000);
        assert!(
            logits.iter().any(|v| *v < 0.0),
            "{}: no negative logit",
            arch.name()
        );
    }
}

#[test]
fn head_replacement_and_fc7_features() {
    let device = cpu();
    let model = AlexNetConfig::new(AlexNetVariant::Caffe)
        .with_width_divisor(8)
        .with_hidden(32)
        .init(&device);
    let x = Tensor::<4>::zeros([2, 3, 227, 227], &device);
    assert_eq!(model.forward_features(x.clone()).dims(), [2, 32 * 36]);
    assert_eq!(model.forward_fc7(x.clone()).dims(), [2, 32]);
    let model = model.with_classes(5, &device);
    assert_eq!(model.forward(x).dims(), [2, 5]);
    assert_eq!(model.num_classes(), 5);
}

#[test]
fn a_classifier_without_outputs_is_refused() {
    // 0 classes made a model whose forward pass panicked ("chunk size must be non-zero")
    let device = cpu();
    let zero_classes = NetworkShape {
        num_classes: 0,
        hidden: 32,
        width_divisor: 8,
    };
    let zero_hidden = NetworkShape {
        num_classes: 10,
        hidden: 0,
        width_divisor: 8,
    };
    for arch in [
        Architecture::AlexNet(AlexNetVariant::Tf),
        Architecture::Vgg {
            depth: VggDepth::Vgg11,
            batch_norm: false,
        },
    ] {
        assert_eq!(
            arch.init(&zero_classes, &device).err(),
            Some(ModelError::NoOutputs {
                layer: "fc8",
                setting: "num_classes"
            }),
            "{arch:?}"
        );
        let err = arch.init(&zero_hidden, &device).err().unwrap();
        assert!(
            err.to_string().contains("hidden must be at least 1"),
            "{err}"
        );
    }
}
