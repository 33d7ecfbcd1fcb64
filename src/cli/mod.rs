//! The subcommands of `alexvgg`, one module each, and the arguments they share. Business rules
//! live in the library crates; these modules parse flags and print.

pub mod bench;
pub mod classify;
pub mod convert;
pub mod fetch;
pub mod finetune;
pub mod inspect;
pub mod layers;
pub mod make_dataset;
pub mod params;

use alexvgg_inference::preprocess::Preset;
use alexvgg_inference::runner::{ConvChoice, EngineKind};
use alexvgg_models::{AlexNetVariant, Architecture, VggDepth};
use alexvgg_train::OptimizerKind;
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};

/// A library enum chosen by name on the command line: clap lists the names in help and in
/// the error for a bad value, as for a `ValueEnum`, without a twin enum in the CLI.
pub trait Choice: Copy + Send + Sync + 'static {
    /// Every value, in the order help lists them.
    fn all() -> Vec<Self>;
    /// The value's name on the command line.
    fn name(&self) -> String;
}

/// clap's parser for a [`Choice`] flag.
pub fn choice<T: Choice>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(T::all().iter().map(|v| v.name())).map(|name| {
        T::all()
            .into_iter()
            .find(|v| v.name().eq_ignore_ascii_case(&name))
            .expect("clap accepts only listed names")
    })
}

macro_rules! choice_from_all {
    ($($t:ty),*) => {$(
        impl Choice for $t {
            fn all() -> Vec<Self> {
                <$t>::ALL.to_vec()
            }
            fn name(&self) -> String {
                <$t>::name(*self).to_string()
            }
        }
    )*};
}
choice_from_all!(
    Preset,
    EngineKind,
    ConvChoice,
    OptimizerKind,
    AlexNetVariant
);

/// `--model`: a family (`alexnet`, `vgg16`: `--variant`/`--batch-norm` complete it) or a full
/// architecture name (`alexnet-caffe`, `vgg16_bn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelName {
    /// AlexNet; the variant comes from `--variant` (default `tf`).
    AlexNet,
    /// VGG of this depth; BatchNorm from `--batch-norm`.
    Vgg(VggDepth),
    /// A full architecture name.
    Exact(Architecture),
}

impl Choice for ModelName {
    fn all() -> Vec<Self> {
        let mut all = vec![ModelName::AlexNet];
        all.extend(VggDepth::ALL.map(ModelName::Vgg));
        all.extend(
            Architecture::all()
                .into_iter()
                .filter(|a| {
                    !matches!(
                        a,
                        Architecture::Vgg {
                            batch_norm: false,
                            ..
                        }
                    )
                })
                .map(ModelName::Exact),
        );
        all
    }

    fn name(&self) -> String {
        match self {
            ModelName::AlexNet => "alexnet".to_string(),
            ModelName::Vgg(depth) => depth.name().to_string(),
            ModelName::Exact(arch) => arch.name(),
        }
    }
}

/// Which network.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// The network: a family (alexnet, vgg11...) or a full name (alexnet-caffe, vgg16_bn).
    #[arg(long, short, default_value = "alexnet", ignore_case = true, value_parser = choice::<ModelName>())]
    pub model: ModelName,
    /// AlexNet variant: tf (the note's TensorFlow graph), caffe (BVLC deploy), torchvision.
    #[arg(long, value_parser = choice::<AlexNetVariant>())]
    pub variant: Option<AlexNetVariant>,
    /// VGG with BatchNorm (torchvision's vggNN_bn).
    #[arg(long)]
    pub batch_norm: bool,
}

impl ModelArgs {
    /// The architecture the flags name (`--variant` completes `alexnet`, `--batch-norm` a VGG
    /// depth; a full name stands as it is).
    pub fn arch(&self) -> Architecture {
        match self.model {
            ModelName::AlexNet => Architecture::AlexNet(self.variant.unwrap_or(AlexNetVariant::Tf)),
            ModelName::Vgg(depth) => Architecture::Vgg {
                depth,
                batch_norm: self.batch_norm,
            },
            ModelName::Exact(arch) => arch,
        }
    }
}

/// `--device`, shared by the subcommands that run a network.
#[derive(Args, Clone)]
pub struct DeviceArgs {
    /// Device: cpu, flex, ndarray, wgpu, wgpu:N, wgpu:cpu (or ALEXVGG_DEVICE).
    #[arg(long)]
    pub device: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_model_name_names_an_architecture() {
        for name in ModelName::all() {
            let args = ModelArgs {
                model: name,
                variant: None,
                batch_norm: false,
            };
            assert!(
                Architecture::all().contains(&args.arch()),
                "{}",
                name.name()
            );
        }
        let names: Vec<String> = ModelName::all().iter().map(Choice::name).collect();
        for want in ["alexnet", "alexnet-caffe", "vgg16", "vgg16_bn", "vgg19"] {
            assert!(
                names.contains(&want.to_string()),
                "{want} missing: {names:?}"
            );
        }
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }
}
