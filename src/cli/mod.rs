//! The subcommands of `alexvgg`, one module each, and the arguments they share. Business rules
//! live in the library crates; these modules parse flags and print.
//!
//! Standard output is written through [`outln!`] and [`out!`], never `println!`: a reader that
//! stops early (`alexvgg classify ... | head -1`) closes the pipe, and the command then ends
//! quietly with exit status 0 (the reader got what it wanted; `main` sees [`StdoutClosed`]);
//! any other write failure (a full disk, `> /dev/full`) is an error with exit status 1.

/// Writes formatted text to standard output, returning from the calling function (which must
/// return `anyhow::Result`) when that fails; see [`write_stdout`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*))?
    };
}

/// [`out!`] with a newline.
macro_rules! outln {
    () => {
        $crate::cli::write_stdout(format_args!("\n"))?
    };
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

pub mod bench;
pub mod classify;
pub mod convert;
pub mod explain;
pub mod features;
pub mod fetch;
pub mod finetune;
pub mod inspect;
pub mod layers;
pub mod make_dataset;
pub mod params;
pub mod plot;
pub mod tune;
pub mod visualize;

use std::path::PathBuf;

use alexvgg_inference::preprocess::{ImageError, ImageWarning, Preset};
use alexvgg_inference::runner::{ConvChoice, EngineKind};
use alexvgg_models::{AlexNetVariant, Architecture, VggDepth};
use alexvgg_train::OptimizerKind;
use anyhow::{Result, bail};
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};

/// Standard output was closed by its reader (`| head -1`): the command stops writing and ends
/// with success.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// The error for a failed write to standard output: [`StdoutClosed`] for a closed pipe, else
/// the I/O error naming standard output.
pub fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        anyhow::Error::new(e).context("writing to standard output")
    }
}

/// Writes to standard output (what [`out!`] and [`outln!`] expand to).
///
/// # Errors
/// [`StdoutClosed`] for a closed pipe, the I/O error for any other failure.
pub fn write_stdout(args: std::fmt::Arguments<'_>) -> Result<()> {
    use std::io::Write;
    std::io::stdout()
        .lock()
        .write_fmt(args)
        .map_err(stdout_error)
}

/// Flushes standard output (at the end of every command).
///
/// # Errors
/// As [`write_stdout`].
pub fn flush_stdout() -> Result<()> {
    use std::io::Write;
    std::io::stdout().lock().flush().map_err(stdout_error)
}

/// `s` with control characters escaped (`\u{1b}`, `\t`, `\n`), for text that comes from files
/// (labels, layer names, file names) and goes to a terminal.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// A path for a terminal: lossy UTF-8 with control characters escaped.
pub fn printable_path(p: &std::path::Path) -> String {
    printable(&p.to_string_lossy()).into_owned()
}

/// Reports an image's decoding warnings (a truncated JPEG) on standard error.
pub fn report_warnings(warnings: &[ImageWarning]) {
    for w in warnings {
        eprintln!("warning: {}", printable(&w.to_string()));
    }
}

/// Reports an image that could not be read on standard error and counts it in `failed`; with
/// `fail_fast` (`--fail-fast`), it ends the run.
///
/// # Errors
/// With `fail_fast`, always.
pub fn report_unreadable(e: &ImageError, fail_fast: bool, failed: &mut usize) -> Result<()> {
    *failed += 1;
    eprintln!("error: {}", printable(&e.to_string()));
    if fail_fast {
        bail!("stopped at the first unreadable image (--fail-fast)");
    }
    Ok(())
}

/// Writes the sidecar listing the images of `out`'s rows, one path per line, as
/// `OUT.paths.txt` (the extension replaced), atomically; returns its path.
///
/// # Errors
/// When it cannot be written.
pub fn write_row_paths(out: &std::path::Path, rows: &[&std::path::Path]) -> Result<PathBuf> {
    let sidecar = out.with_extension("paths.txt");
    let list: String = rows.iter().map(|p| format!("{}\n", p.display())).collect();
    alexvgg_import::write_bytes_atomic(&sidecar, list.as_bytes())?;
    Ok(sidecar)
}

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
    ///
    /// # Errors
    /// Flags that contradict each other or the name: `--variant` with a VGG, `--batch-norm`
    /// with an AlexNet, a `--variant` other than the one a full name carries.
    pub fn arch(&self) -> Result<Architecture> {
        let name = self.model.name();
        let variant_for_vgg = || {
            anyhow::anyhow!(
                "--variant is for AlexNet (tf, caffe, torchvision); -m {name} is a VGG, leave it out"
            )
        };
        let bn_for_alexnet = || {
            anyhow::anyhow!(
                "--batch-norm is for VGG; -m {name} is an AlexNet, which has no BatchNorm"
            )
        };
        Ok(match self.model {
            ModelName::AlexNet => {
                if self.batch_norm {
                    return Err(bn_for_alexnet());
                }
                Architecture::AlexNet(self.variant.unwrap_or(AlexNetVariant::Tf))
            }
            ModelName::Vgg(depth) => {
                if self.variant.is_some() {
                    return Err(variant_for_vgg());
                }
                Architecture::Vgg {
                    depth,
                    batch_norm: self.batch_norm,
                }
            }
            ModelName::Exact(arch @ Architecture::AlexNet(named)) => {
                if self.batch_norm {
                    return Err(bn_for_alexnet());
                }
                if let Some(v) = self.variant
                    && v != named
                {
                    bail!(
                        "-m {name} is the {} variant; --variant {} contradicts it (use -m alexnet --variant {} for that)",
                        named.name(),
                        v.name(),
                        v.name()
                    );
                }
                arch
            }
            ModelName::Exact(arch @ Architecture::Vgg { .. }) => {
                if self.variant.is_some() {
                    return Err(variant_for_vgg());
                }
                // `vgg16_bn --batch-norm` only repeats the name
                arch
            }
        })
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
                Architecture::all().contains(&args.arch().unwrap()),
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
