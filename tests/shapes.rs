//! Parameter counts against the originals (BatchNorm rows through the CLI's parameter table).
//! The layer-table tests are the models crate's (`crates/alexvgg-models/tests/shapes.rs`).

mod common;

use alexvgg::models::{AlexNetVariant, Architecture, NetworkShape, VggDepth};
use burn::module::Module;
use common::*;

#[test]
fn parameter_counts_match_the_originals() {
    let device = cpu();
    let count = |arch: Architecture| {
        arch.init(&NetworkShape::default(), &device)
            .unwrap()
            .num_params()
    };
    let alex = |v| Architecture::AlexNet(v);
    let vgg = |depth, batch_norm| Architecture::Vgg { depth, batch_norm };
    assert_eq!(count(alex(AlexNetVariant::Tf)), 60_965_224);
    assert_eq!(count(alex(AlexNetVariant::Caffe)), 60_965_224);
    assert_eq!(count(alex(AlexNetVariant::Torchvision)), 61_100_840);
    // torchvision's published counts (BatchNorm running statistics are buffers, not parameters)
    for (depth, plain, with_bn) in [
        (VggDepth::Vgg11, 132_863_336, 132_868_840),
        (VggDepth::Vgg13, 133_047_848, 133_053_736),
        (VggDepth::Vgg16, 138_357_544, 138_365_992),
        (VggDepth::Vgg19, 143_667_240, 143_678_248),
    ] {
        assert_eq!(count(vgg(depth, false)), plain, "{depth:?}");
        let bn_model = vgg(depth, true)
            .init(&NetworkShape::default(), &device)
            .unwrap();
        let rows = alexvgg::tables::param_rows(&vgg(depth, true), &bn_model);
        assert_eq!(
            rows.iter().map(|r| r.numel).sum::<usize>(),
            with_bn,
            "{depth:?} bn"
        );
    }
}
