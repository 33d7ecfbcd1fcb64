//! Layer names and module paths, spelled in one place.
//!
//! Layer names are the original scripts' names: `conv1` ... `conv5`, `lrn1`, `pool1`, `fc6` ...
//! `fc8` for AlexNet; `conv1_1`, `conv1_2`, `pool1`, `conv2_1` ... for VGG (convolution
//! `conv{block}_{index}`, a block closed by `pool{block}`). Module paths are burn's paths of the
//! parameters in our modules: `convs.0.conv` (AlexNet's conv1), `features.3` (VGG's fourth
//! convolution, holding `conv` and `bn`), `fc6`. The forward passes, the layer tables, the CPU
//! engine, the weight importer and fine-tuning all name layers through this module.

/// The fully connected layers, in order (layer names and module paths alike).
pub const FC: [&str; 3] = ["fc6", "fc7", "fc8"];

/// The adaptive average pool before the classifier (torchvision's AlexNet and every VGG).
pub const AVGPOOL: &str = "avgpool";

/// The input row of a layer table.
pub const INPUT: &str = "input";

/// AlexNet's convolution `n` (from 1): `conv{n}`.
pub fn alexnet_conv(n: usize) -> String {
    format!("conv{n}")
}

/// The local response normalization after AlexNet's convolution `n` (from 1): `lrn{n}`.
pub fn alexnet_lrn(n: usize) -> String {
    format!("lrn{n}")
}

/// The max pool after AlexNet's convolution `n` (from 1): `pool{n}`.
pub fn alexnet_pool(n: usize) -> String {
    format!("pool{n}")
}

/// The module path of AlexNet's convolution `n` (from 1): `convs.{n-1}.conv`.
pub fn alexnet_conv_path(n: usize) -> String {
    format!("convs.{}.conv", n - 1)
}

/// One convolution of a VGG feature stack, with what names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VggConvName {
    /// Block, from 1 (a block ends with a max pool).
    pub block: usize,
    /// Position in its block, from 1.
    pub index: usize,
    /// Position among all convolutions, from 0 (the index in `Vgg::features`).
    pub position: usize,
    /// Whether a max pool closes the block after this convolution.
    pub pool: bool,
}

impl VggConvName {
    /// The layer name, `conv{block}_{index}`.
    pub fn name(&self) -> String {
        format!("conv{}_{}", self.block, self.index)
    }

    /// The name of the max pool after it (`pool{block}`), where one follows.
    pub fn pool_name(&self) -> Option<String> {
        self.pool.then(|| format!("pool{}", self.block))
    }

    /// The module path of the `VggConv` holding it (`features.{position}`, with `conv` and `bn`
    /// inside).
    pub fn path(&self) -> String {
        format!("features.{}", self.position)
    }

    /// Its index in torchvision's `features` (`make_layers` numbers a convolution, its
    /// BatchNorm where there is one, its ReLU, and each max pool).
    pub fn torchvision_index(&self, batch_norm: bool) -> usize {
        let per_conv = if batch_norm { 3 } else { 2 };
        self.position * per_conv + (self.block - 1)
    }
}

/// Names the convolutions of a VGG feature stack from whether a max pool follows each.
pub fn vgg_convs(pools: impl IntoIterator<Item = bool>) -> Vec<VggConvName> {
    let (mut block, mut index) = (1, 1);
    pools
        .into_iter()
        .enumerate()
        .map(|(position, pool)| {
            let name = VggConvName {
                block,
                index,
                position,
                pool,
            };
            if pool {
                block += 1;
                index = 1;
            } else {
                index += 1;
            }
            name
        })
        .collect()
}

/// The module path of the parameter being visited or mapped (`convs.0.conv.weight`), kept
/// from burn's `enter_module`/`exit_module` calls. Enum variants add no segment:
/// `Model::AlexNet(..)` enters `AlexNet`, which file keys never carry.
#[derive(Debug, Default)]
pub struct ModulePath {
    path: Vec<String>,
    /// Whether each entered container added a segment.
    pushed: Vec<bool>,
}

impl ModulePath {
    /// Call from `enter_module`.
    pub fn enter(&mut self, name: &str, container_type: &str) {
        let push = !container_type.starts_with("Enum:");
        if push {
            self.path.push(name.to_string());
        }
        self.pushed.push(push);
    }

    /// Call from `exit_module`.
    pub fn exit(&mut self) {
        if self.pushed.pop() == Some(true) {
            self.path.pop();
        }
    }

    /// The current path, dot-separated.
    pub fn key(&self) -> String {
        self.path.join(".")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{layers, param_layers, vgg_table_convs};
    use crate::{AlexNetVariant, Architecture, VggDepth};

    #[test]
    fn vgg16_names_paths_and_torchvision_indices() {
        let convs = vgg_table_convs(VggDepth::Vgg16.table());
        let names: Vec<String> = convs.iter().map(VggConvName::name).collect();
        assert_eq!(
            names,
            [
                "conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
                "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3"
            ]
        );
        let pools: Vec<String> = convs.iter().filter_map(VggConvName::pool_name).collect();
        assert_eq!(pools, ["pool1", "pool2", "pool3", "pool4", "pool5"]);
        assert_eq!(convs[3].path(), "features.3");
        // torchvision's vgg16: convolutions at 0, 2, 5, 7, 10, ...; vgg16_bn at 0, 3, 7, 10, 14
        let plain: Vec<usize> = convs.iter().map(|c| c.torchvision_index(false)).collect();
        assert_eq!(plain, [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]);
        let bn: Vec<usize> = convs.iter().map(|c| c.torchvision_index(true)).collect();
        assert_eq!(&bn[..5], [0, 3, 7, 10, 14]);
    }

    #[test]
    fn param_layers_of_both_families() {
        let alex = param_layers(&Architecture::AlexNet(AlexNetVariant::Tf));
        assert_eq!(alex[0], ("conv1".to_string(), "convs.0.conv".to_string()));
        assert_eq!(alex[4], ("conv5".to_string(), "convs.4.conv".to_string()));
        assert_eq!(alex[7], ("fc8".to_string(), "fc8".to_string()));
        let vgg = layers(&Architecture::Vgg {
            depth: VggDepth::Vgg11,
            batch_norm: true,
        });
        assert_eq!(vgg.len(), 8 + 3);
        assert_eq!(vgg[2].name, "conv3_1");
        assert_eq!(vgg[2].path, "features.2");
        assert_eq!(vgg[2].params, "features.2.conv");
        assert!(vgg[8].fc && !vgg[7].fc);
    }
}
