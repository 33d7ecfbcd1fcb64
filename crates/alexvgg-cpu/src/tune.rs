//! Per-machine kernel choice, like FFTW's wisdom: `alexvgg tune` times every kernel that can
//! compute each convolution of a network ([`measure`]) at batch 1 and batch 8 on this machine,
//! and records the fastest in a [`Tuning`] table (a small text file in the cache directory). An
//! [`Engine`](crate::Engine) built with the table ([`EngineOptions::tuning`](crate::EngineOptions::tuning))
//! uses the recorded kernel for every layer it lists, the batch-1 choice for batches below
//! [`MANY_FROM`] and the batch-8 choice from there; layers it does not list, and every engine
//! built without a table (the tests), keep the fixed rules of
//! [`ConvAlgorithm::Auto`](crate::ConvAlgorithm::Auto).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use alexvgg_models::{LayerInfo, LayerKind};
use burn::nn::PaddingConfig2d;

use crate::kernels::Nhwc;
use crate::plan::RawConv;
use crate::pool::Pool;
use crate::simd::Simd;
use crate::winograd::Variant;

/// Batches from this size on take the batch-8 choice; smaller ones the batch-1 choice.
pub const MANY_FROM: usize = 4;

/// The first line of a tuning file.
const HEADER: &str = "# alexvgg tuning v1";

/// A convolution's shape: what a recorded choice applies to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConvKey {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Channel groups.
    pub groups: usize,
    /// Kernel `[height, width]`.
    pub kernel: [usize; 2],
    /// Stride `[height, width]`.
    pub stride: [usize; 2],
    /// Padding `[top, left, bottom, right]`.
    pub padding: [usize; 4],
    /// Output `[height, width]` (per image).
    pub output: [usize; 2],
}

impl fmt::Display for ConvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [t, l, b, r] = self.padding;
        write!(
            f,
            "{}-{}/g{}:k{}x{}:s{}x{}:p{t},{l},{b},{r}:o{}x{}",
            self.cin,
            self.cout,
            self.groups,
            self.kernel[0],
            self.kernel[1],
            self.stride[0],
            self.stride[1],
            self.output[0],
            self.output[1]
        )
    }
}

impl ConvKey {
    fn parse(s: &str) -> Option<Self> {
        let nums = |s: &str, sep: char| -> Option<Vec<usize>> {
            s.split(sep).map(|v| v.parse().ok()).collect()
        };
        let parts: Vec<&str> = s.split(':').collect();
        let [channels, kernel, stride, padding, output] = parts[..] else {
            return None;
        };
        let (io, groups) = channels.split_once("/g")?;
        let io = nums(io, '-')?;
        let k = nums(kernel.strip_prefix('k')?, 'x')?;
        let st = nums(stride.strip_prefix('s')?, 'x')?;
        let p = nums(padding.strip_prefix('p')?, ',')?;
        let o = nums(output.strip_prefix('o')?, 'x')?;
        match (&io[..], &k[..], &st[..], &p[..], &o[..]) {
            ([cin, cout], [kh, kw], [sh, sw], [t, l, b, r], [oh, ow]) => Some(ConvKey {
                cin: *cin,
                cout: *cout,
                groups: groups.parse().ok()?,
                kernel: [*kh, *kw],
                stride: [*sh, *sw],
                padding: [*t, *l, *b, *r],
                output: [*oh, *ow],
            }),
            _ => None,
        }
    }

    /// The input side that gives this output (the smallest).
    pub fn input(&self) -> [usize; 2] {
        let side = |i: usize| {
            ((self.output[i].max(1) - 1) * self.stride[i] + self.kernel[i])
                .saturating_sub(self.padding[i] + self.padding[i + 2])
                .max(1)
        };
        [side(0), side(1)]
    }

    /// The kernels that can compute this convolution.
    pub fn candidates(&self) -> Vec<TunedConv> {
        let mut out = vec![TunedConv::Direct, TunedConv::Im2col];
        if self.stride == [1, 1] && self.kernel[0] == self.kernel[1] {
            match self.kernel[0] {
                3 => out.extend([
                    TunedConv::Winograd(Variant::F4x3),
                    TunedConv::Winograd(Variant::F2x3),
                ]),
                5 => out.push(TunedConv::Winograd(Variant::F2x5)),
                _ => {}
            }
        }
        out
    }
}

/// A kernel recorded for a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunedConv {
    /// The direct kernel (im2col + GEMM at the portable level, which has no direct kernel).
    Direct,
    /// im2col + GEMM.
    Im2col,
    /// Winograd, in the layout the engine picks for the layer.
    Winograd(Variant),
}

impl TunedConv {
    /// The name in tuning files and reports.
    pub fn name(self) -> &'static str {
        match self {
            TunedConv::Direct => "direct",
            TunedConv::Im2col => "im2col",
            TunedConv::Winograd(Variant::F4x3) => "winograd-f4x3",
            TunedConv::Winograd(Variant::F2x3) => "winograd-f2x3",
            TunedConv::Winograd(Variant::F2x5) => "winograd-f2x5",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            TunedConv::Direct,
            TunedConv::Im2col,
            TunedConv::Winograd(Variant::F4x3),
            TunedConv::Winograd(Variant::F2x3),
            TunedConv::Winograd(Variant::F2x5),
        ]
        .into_iter()
        .find(|c| c.name() == s)
    }
}

/// The fastest kernel measured for a convolution at batch 1 and at batch 8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    /// For batches below [`MANY_FROM`].
    pub few: TunedConv,
    /// For batches from [`MANY_FROM`] on.
    pub many: TunedConv,
}

/// Recorded kernel choices for one machine (CPU model and SIMD level).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tuning {
    /// The machine they were measured on: `CPU MODEL; kernels: LEVEL`.
    pub machine: String,
    /// Choices by convolution shape.
    pub entries: BTreeMap<ConvKey, Choice>,
}

/// A tuning file that cannot be read as one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {reason}")]
pub struct TuningError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl Tuning {
    /// An empty table for `machine`.
    pub fn new(machine: String) -> Self {
        Self {
            machine,
            entries: BTreeMap::new(),
        }
    }

    /// The machine string of the running CPU at level `simd`.
    pub fn machine_of(simd: Simd) -> String {
        let cpu = crate::CpuInfo::detect();
        let model = cpu
            .model
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        format!("{model}; kernels: {simd}")
    }

    /// The recorded choice for `key`.
    pub fn choice(&self, key: &ConvKey) -> Option<Choice> {
        self.entries.get(key).copied()
    }

    /// The table as text: a header, the machine, then one line per convolution
    /// (`KEY FEW MANY`).
    pub fn to_text(&self) -> String {
        let mut out = format!("{HEADER}\nmachine {}\n", self.machine);
        for (key, c) in &self.entries {
            out += &format!("{key} {} {}\n", c.few.name(), c.many.name());
        }
        out
    }

    /// Reads [`to_text`](Self::to_text)'s format.
    ///
    /// # Errors
    /// [`TuningError`] naming the first line that is not part of a tuning table.
    pub fn parse(text: &str) -> Result<Self, TuningError> {
        let err = |line: usize, reason: &str| TuningError {
            line,
            reason: reason.to_string(),
        };
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
        match lines.next() {
            Some((_, HEADER)) => {}
            _ => return Err(err(1, &format!("expected '{HEADER}'"))),
        }
        let machine = match lines.next() {
            Some((_, l)) if l.starts_with("machine ") => l["machine ".len()..].to_string(),
            _ => return Err(err(2, "expected 'machine ...'")),
        };
        let mut entries = BTreeMap::new();
        for (n, line) in lines.filter(|(_, l)| !l.is_empty()) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [key, few, many] = fields[..] else {
                return Err(err(n, "expected 'SHAPE FEW MANY'"));
            };
            let key = ConvKey::parse(key).ok_or_else(|| err(n, "unreadable convolution shape"))?;
            let kernel = |s: &str| {
                TunedConv::parse(s)
                    .filter(|c| key.candidates().contains(c))
                    .ok_or_else(|| err(n, &format!("'{s}' cannot compute {key}")))
            };
            let choice = Choice {
                few: kernel(few)?,
                many: kernel(many)?,
            };
            entries.insert(key, choice);
        }
        Ok(Self { machine, entries })
    }
}

/// Each convolution of a network's layer table (`alexvgg_models::Model::layers`) with its
/// shape: `(layer name, key)`.
pub fn conv_keys(rows: &[LayerInfo], in_channels: usize) -> Vec<(String, ConvKey)> {
    let mut channels = in_channels;
    let mut out = Vec::new();
    for r in rows {
        if r.kind == LayerKind::Conv
            && let (Some(kernel), Some(stride), Some(padding)) = (r.kernel, r.stride, r.padding)
        {
            out.push((
                r.name.clone(),
                ConvKey {
                    cin: channels,
                    cout: r.output[0],
                    groups: r.groups.max(1),
                    kernel,
                    stride,
                    padding,
                    output: [r.output[1], r.output[2]],
                },
            ));
        }
        if r.kind != LayerKind::Input {
            channels = r.output[0];
        }
    }
    out
}

/// One kernel's time on a convolution: median ms at batch 1 and at batch 8.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// The kernel.
    pub kernel: TunedConv,
    /// Median milliseconds at batch 1.
    pub batch1_ms: f64,
    /// Median milliseconds at batch 8.
    pub batch8_ms: f64,
}

/// Times every candidate kernel of `key` at SIMD level `simd` (random weights and inputs;
/// speed does not depend on them), `iters` timed runs after one untimed run per batch size.
pub fn measure(key: &ConvKey, simd: Simd, iters: usize) -> Vec<Timing> {
    let mut g = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = move || {
        g ^= g << 13;
        g ^= g >> 7;
        g ^= g << 17;
        (g >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let [kh, kw] = key.kernel;
    let dims = [key.cout, key.cin / key.groups.max(1), kh, kw];
    let weight: Vec<f32> = (0..dims.iter().product()).map(|_| random() * 0.1).collect();
    let bias: Vec<f32> = (0..key.cout).map(|_| random()).collect();
    let [h, w] = key.input();
    let inputs: Vec<Nhwc> = [1usize, 8]
        .iter()
        .map(|&batch| Nhwc {
            data: (0..batch * h * w * key.cin).map(|_| random()).collect(),
            batch,
            height: h,
            width: w,
            channels: key.cin,
        })
        .collect();
    let [t, l, b, r] = key.padding;
    let pool = Pool::new();
    key.candidates()
        .into_iter()
        .map(|kernel| {
            let raw = RawConv {
                name: String::new(),
                weight: weight.clone(),
                dims,
                groups: key.groups,
                bias: bias.clone(),
                stride: key.stride,
                padding: PaddingConfig2d::Explicit(t, l, b, r),
            };
            let conv = raw.build(kernel, simd, key.output);
            let median = |x: &Nhwc| {
                let mut times: Vec<f64> = (0..iters.max(1) + 1)
                    .map(|_| {
                        let start = Instant::now();
                        let y = conv
                            .run(x, true, &pool)
                            .expect("a tuned shape fits its input");
                        let ms = start.elapsed().as_secs_f64() * 1e3;
                        pool.give(y.data);
                        ms
                    })
                    .skip(1)
                    .collect();
                times.sort_by(f64::total_cmp);
                times[times.len() / 2]
            };
            Timing {
                kernel,
                batch1_ms: median(&inputs[0]),
                batch8_ms: median(&inputs[1]),
            }
        })
        .collect()
}

/// The fastest kernels of `timings` (batch 1, batch 8).
pub fn fastest(timings: &[Timing]) -> Option<Choice> {
    let best = |ms: fn(&Timing) -> f64| {
        timings
            .iter()
            .min_by(|a, b| ms(a).total_cmp(&ms(b)))
            .map(|t| t.kernel)
    };
    Some(Choice {
        few: best(|t| t.batch1_ms)?,
        many: best(|t| t.batch8_ms)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ConvKey {
        ConvKey {
            cin: 96,
            cout: 256,
            groups: 2,
            kernel: [5, 5],
            stride: [1, 1],
            padding: [2, 2, 2, 2],
            output: [28, 28],
        }
    }

    #[test]
    fn a_table_reads_back_as_written() {
        let mut t = Tuning::new("Some CPU; kernels: avx2".into());
        t.entries.insert(
            key(),
            Choice {
                few: TunedConv::Direct,
                many: TunedConv::Winograd(Variant::F2x5),
            },
        );
        let text = t.to_text();
        assert!(
            text.contains("96-256/g2:k5x5:s1x1:p2,2,2,2:o28x28 direct winograd-f2x5"),
            "{text}"
        );
        assert_eq!(Tuning::parse(&text), Ok(t));
        assert_eq!(key().input(), [28, 28]);
    }

    #[test]
    fn unreadable_tables_name_the_line() {
        let bad = |text: &str, line: usize, says: &str| {
            let e = Tuning::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{e}");
            assert!(e.to_string().contains(says), "{e}");
        };
        bad("", 1, "# alexvgg tuning v1");
        bad("# alexvgg tuning v1\nx", 2, "machine");
        let head = "# alexvgg tuning v1\nmachine M\n";
        bad(
            &format!("{head}garbage direct direct"),
            3,
            "unreadable convolution shape",
        );
        bad(&format!("{head}{} direct", key()), 3, "SHAPE FEW MANY");
        // a 5x5 layer has no F(4x4, 3x3) form
        bad(
            &format!("{head}{} winograd-f4x3 direct", key()),
            3,
            "cannot compute",
        );
    }

    #[test]
    fn every_candidate_is_timed_and_the_fastest_chosen() {
        let small = ConvKey {
            cin: 8,
            cout: 8,
            groups: 1,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1, 1, 1],
            output: [6, 6],
        };
        let timings = measure(&small, Simd::current(), 1);
        let kernels: Vec<TunedConv> = timings.iter().map(|t| t.kernel).collect();
        assert_eq!(kernels, small.candidates());
        assert!(
            timings
                .iter()
                .all(|t| t.batch1_ms >= 0.0 && t.batch8_ms >= 0.0)
        );
        let c = fastest(&timings).unwrap();
        let min = |f: fn(&Timing) -> f64| timings.iter().map(f).fold(f64::INFINITY, f64::min);
        assert_eq!(
            timings
                .iter()
                .find(|t| t.kernel == c.few)
                .unwrap()
                .batch1_ms,
            min(|t| t.batch1_ms)
        );
        assert_eq!(
            timings
                .iter()
                .find(|t| t.kernel == c.many)
                .unwrap()
                .batch8_ms,
            min(|t| t.batch8_ms)
        );
    }
}
