//! The layers that hold parameters, named as in [`crate::names`]: what the importer maps,
//! fine-tuning freezes, and the tables list. (Kept apart from `names`, which depends on no
//! other module, because it reads the networks' configuration tables.)

use crate::Architecture;
use crate::names::{FC, VggConvName, alexnet_conv, alexnet_conv_path, vgg_convs};
use crate::vgg::VggItem;

/// Names the convolutions of a VGG configuration table (see [`crate::VggDepth::table`]).
pub fn vgg_table_convs(table: &[VggItem]) -> Vec<VggConvName> {
    vgg_convs(
        table
            .iter()
            .enumerate()
            .filter(|(_, item)| matches!(item, VggItem::Conv(_)))
            .map(|(i, _)| table.get(i + 1) == Some(&VggItem::Pool)),
    )
}

/// A layer that holds parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamLayer {
    /// Layer name (`conv1`, `conv1_1`, `fc6`).
    pub name: String,
    /// Module path of the layer (`convs.0.conv`, `features.0`, `fc6`): fine-tuning freezes by
    /// this prefix.
    pub path: String,
    /// Module path holding its `weight` and `bias` (`convs.0.conv`, `features.0.conv`, `fc6`).
    pub params: String,
    /// A fully connected layer.
    pub fc: bool,
}

/// The layers of `arch` that hold parameters, in module order: AlexNet's `conv1` ... `conv5`,
/// or VGG's `conv1_1` ..., then `fc6`, `fc7`, `fc8`.
pub fn layers(arch: &Architecture) -> Vec<ParamLayer> {
    let mut out: Vec<ParamLayer> = match arch {
        Architecture::AlexNet(_) => (1..=5)
            .map(|n| ParamLayer {
                name: alexnet_conv(n),
                path: alexnet_conv_path(n),
                params: alexnet_conv_path(n),
                fc: false,
            })
            .collect(),
        Architecture::Vgg { depth, .. } => vgg_table_convs(depth.table())
            .into_iter()
            .map(|c| ParamLayer {
                name: c.name(),
                path: c.path(),
                params: format!("{}.conv", c.path()),
                fc: false,
            })
            .collect(),
    };
    out.extend(FC.map(|fc| ParamLayer {
        name: fc.to_string(),
        path: fc.to_string(),
        params: fc.to_string(),
        fc: true,
    }));
    out
}

/// The layers that hold parameters, in module order, as (our layer name, burn module path
/// prefix): (`conv1`, `convs.0.conv`) ... (`fc8`, `fc8`) for AlexNet, (`conv1_1`, `features.0`)
/// ... for VGG. Fine-tuning freezes layers by these names.
pub fn param_layers(arch: &Architecture) -> Vec<(String, String)> {
    layers(arch).into_iter().map(|l| (l.name, l.path)).collect()
}
