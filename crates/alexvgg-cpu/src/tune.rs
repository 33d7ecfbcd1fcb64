//! Per-machine kernel choice, like FFTW's wisdom: `alexvgg tune` times every kernel that can
//! compute each convolution of a network ([`measure`]: direct, im2col + GEMM, each Winograd form
//! in each layout of its products) at batch 1 and batch 8 on this machine, and, where the CPU
//! has AVX-512, the element-wise kernels at AVX2 and AVX-512 ([`measure_elementwise`]); it
//! records the fastest in a [`Tuning`] table (a small text file in the cache directory). An
//! [`Engine`] built with the table ([`EngineOptions::tuning`]) uses the recorded kernel for every
//! layer it lists, the batch-1 choice for batches below [`MANY_FROM`] and the batch-8 choice from
//! there, and the recorded element-wise level; layers it does not list, and every engine built
//! without a table (the tests), keep the fixed rules of
//! [`ConvAlgorithm::Auto`](crate::ConvAlgorithm::Auto).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use alexvgg_models::{LayerInfo, LayerKind, Model};
use burn::nn::PaddingConfig2d;

use crate::kernels::Nhwc;
use crate::plan::{Engine, EngineError, EngineOptions, RawConv};
use crate::pool::Pool;
use crate::simd::Simd;
use crate::winograd::{Layout, Variant, WinogradConv};

/// Batches from this size on take the batch-8 choice; smaller ones the batch-1 choice.
pub const MANY_FROM: usize = 4;

/// The first line of a tuning file.
const HEADER: &str = "# alexvgg tuning v2";

/// The first line of the tables written before Winograd layouts were tuned; still read (their
/// Winograd entries keep the engine's layout rule).
const HEADER_V1: &str = "# alexvgg tuning v1";

/// Largest transformed filter (bytes) for which [`Layout::Fused`] is a candidate: each of its
/// tasks reads the whole filter, which was measured 30-60% slower than the blocked layouts
/// already at 8 MB.
const FUSED_CANDIDATE_BYTES: usize = 8 << 20;

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

    /// The kernels that can compute this convolution: the direct kernel, im2col + GEMM, and for
    /// stride-1 3x3 and 5x5 convolutions each Winograd form in each layout of its products (the
    /// `gemm` crate, the register tiles in blocks, and fused tile rows where the transformed
    /// filter is small enough for that to be a contender).
    pub fn candidates(&self) -> Vec<TunedConv> {
        let mut out = vec![TunedConv::Direct, TunedConv::Im2col];
        for variant in self.winograd_variants() {
            let dims = [self.cout, self.cin / self.groups.max(1), 3, 3];
            let filter = WinogradConv::transformed_bytes(dims, variant);
            let mut layouts = vec![Layout::Gemm, Layout::Blocks];
            if filter <= FUSED_CANDIDATE_BYTES {
                layouts.push(Layout::Fused);
            }
            out.extend(
                layouts
                    .into_iter()
                    .map(|layout| TunedConv::Winograd(variant, Some(layout))),
            );
        }
        out
    }

    /// The Winograd forms that fit this convolution.
    fn winograd_variants(&self) -> Vec<Variant> {
        match (self.stride, self.kernel) {
            ([1, 1], [3, 3]) => vec![Variant::F4x3, Variant::F2x3],
            ([1, 1], [5, 5]) => vec![Variant::F2x5],
            _ => Vec::new(),
        }
    }

    /// Whether `kernel` can compute this convolution (a candidate, or a Winograd form that fits
    /// with the engine's layout rule).
    fn can_run(&self, kernel: TunedConv) -> bool {
        match kernel {
            TunedConv::Winograd(variant, None) => self.winograd_variants().contains(&variant),
            other => self.candidates().contains(&other),
        }
    }
}

/// A kernel recorded for a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunedConv {
    /// The direct kernel (im2col + GEMM at the portable level, which has no direct kernel).
    Direct,
    /// im2col + GEMM.
    Im2col,
    /// Winograd with its products in `layout`; `None` (tables written before layouts were
    /// tuned): the layout the engine's rules pick for the layer.
    Winograd(Variant, Option<Layout>),
}

impl TunedConv {
    /// The name in tuning files and reports: `direct`, `im2col`, `winograd-f4x3-blocks`, ...
    pub fn name(self) -> String {
        match self {
            TunedConv::Direct => "direct".into(),
            TunedConv::Im2col => "im2col".into(),
            TunedConv::Winograd(variant, layout) => {
                let variant = match variant {
                    Variant::F4x3 => "f4x3",
                    Variant::F2x3 => "f2x3",
                    Variant::F2x5 => "f2x5",
                };
                match layout {
                    None => format!("winograd-{variant}"),
                    Some(layout) => format!("winograd-{variant}-{}", layout_name(layout)),
                }
            }
        }
    }

    fn parse(s: &str) -> Option<Self> {
        let variants = [Variant::F4x3, Variant::F2x3, Variant::F2x5];
        let layouts = [
            None,
            Some(Layout::Gemm),
            Some(Layout::Blocks),
            Some(Layout::Fused),
        ];
        [TunedConv::Direct, TunedConv::Im2col]
            .into_iter()
            .chain(variants.into_iter().flat_map(|v| {
                layouts
                    .into_iter()
                    .map(move |layout| TunedConv::Winograd(v, layout))
            }))
            .find(|c| c.name() == s)
    }
}

/// A Winograd layout's name in tuning files.
fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Gemm => "gemm",
        Layout::Blocks => "blocks",
        Layout::Fused => "fused",
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
    /// The level measured fastest for the element-wise kernels (Winograd's transforms, LRN,
    /// max pooling; [`measure_elementwise`]), where the machine has more than one; `None`: the
    /// rule of [`Simd::for_kernel`].
    pub elementwise: Option<Simd>,
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
            elementwise: None,
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

    /// The table as text: a header, the machine, the element-wise level where one was measured
    /// (`elementwise LEVEL`), then one line per convolution (`KEY FEW MANY`).
    pub fn to_text(&self) -> String {
        let mut out = format!("{HEADER}\nmachine {}\n", self.machine);
        if let Some(level) = self.elementwise {
            out += &format!("elementwise {level}\n");
        }
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
            Some((_, HEADER | HEADER_V1)) => {}
            _ => return Err(err(1, &format!("expected '{HEADER}'"))),
        }
        let machine = match lines.next() {
            Some((_, l)) if l.starts_with("machine ") => l["machine ".len()..].to_string(),
            _ => return Err(err(2, "expected 'machine ...'")),
        };
        let mut entries = BTreeMap::new();
        let mut elementwise = None;
        for (n, line) in lines.filter(|(_, l)| !l.is_empty()) {
            if let Some(level) = line.strip_prefix("elementwise ") {
                let level = Simd::parse(level)
                    .ok_or_else(|| err(n, &format!("unknown SIMD level '{}'", level.trim())))?;
                elementwise = Some(level);
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [key, few, many] = fields[..] else {
                return Err(err(n, "expected 'SHAPE FEW MANY'"));
            };
            let key = ConvKey::parse(key).ok_or_else(|| err(n, "unreadable convolution shape"))?;
            let kernel = |s: &str| {
                TunedConv::parse(s)
                    .filter(|c| key.can_run(*c))
                    .ok_or_else(|| err(n, &format!("'{s}' cannot compute {key}")))
            };
            let choice = Choice {
                few: kernel(few)?,
                many: kernel(many)?,
            };
            entries.insert(key, choice);
        }
        Ok(Self {
            machine,
            entries,
            elementwise,
        })
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

/// The levels [`measure_elementwise`] compares on this CPU at engine level `simd`: AVX2 and
/// AVX-512 where it has AVX-512 (the only level with a choice), none else.
pub fn elementwise_levels(simd: Simd) -> Vec<Simd> {
    if simd == Simd::Avx512 {
        vec![Simd::Avx2, Simd::Avx512]
    } else {
        Vec::new()
    }
}

/// Times `model`'s whole forward pass at batch 8 (random input) with the element-wise kernels
/// (Winograd's transforms, LRN, max pooling) at each of [`elementwise_levels`], everything
/// else as `table` and the fixed rules give it: `iters` timed runs per level after one untimed
/// one, the levels alternating; the median ms per level.
///
/// # Errors
/// [`EngineError`] when the model cannot be compiled or run.
pub fn measure_elementwise(
    model: &Model,
    table: &Tuning,
    iters: usize,
) -> Result<Vec<(Simd, f64)>, EngineError> {
    let levels = elementwise_levels(Simd::current());
    let engines = levels
        .iter()
        .map(|&level| {
            let table: &'static Tuning = Box::leak(Box::new(Tuning {
                elementwise: Some(level),
                ..table.clone()
            }));
            let options = EngineOptions {
                tuning: Some(table),
                ..EngineOptions::default()
            };
            Engine::with_options(model.clone(), &options)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let side = model.input_size();
    let dims = [8, 3, side, side];
    let input: Vec<f32> = (0..dims.iter().product::<usize>())
        .map(|i| ((i * 7919) % 255) as f32 - 120.0)
        .collect();
    let mut times = vec![Vec::new(); engines.len()];
    for round in 0..iters.max(1) + 1 {
        for (engine, t) in engines.iter().zip(&mut times) {
            let start = Instant::now();
            engine.forward(&input, dims)?;
            if round > 0 {
                t.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    Ok(levels
        .into_iter()
        .zip(times)
        .map(|(level, mut t)| {
            t.sort_by(f64::total_cmp);
            (level, t[t.len() / 2])
        })
        .collect())
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

    /// A stride-1 3x3 convolution padded to keep its `side x side` map.
    fn same3x3(cin: usize, cout: usize, side: usize) -> ConvKey {
        ConvKey {
            cin,
            cout,
            groups: 1,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1, 1, 1],
            output: [side, side],
        }
    }

    #[test]
    fn a_table_reads_back_as_written() {
        let mut t = Tuning::new("Some CPU; kernels: avx2".into());
        t.entries.insert(
            key(),
            Choice {
                few: TunedConv::Direct,
                many: TunedConv::Winograd(Variant::F2x5, Some(Layout::Blocks)),
            },
        );
        t.elementwise = Some(Simd::Avx2);
        let text = t.to_text();
        assert!(
            text.starts_with(
                "# alexvgg tuning v2\nmachine Some CPU; kernels: avx2\nelementwise avx2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("96-256/g2:k5x5:s1x1:p2,2,2,2:o28x28 direct winograd-f2x5-blocks"),
            "{text}"
        );
        assert_eq!(Tuning::parse(&text), Ok(t));
        assert_eq!(key().input(), [28, 28]);
    }

    #[test]
    fn tables_written_before_layouts_were_tuned_still_read() {
        let text = format!(
            "# alexvgg tuning v1\nmachine M\n{} im2col winograd-f2x5\n",
            key()
        );
        let t = Tuning::parse(&text).unwrap();
        assert_eq!(
            t.choice(&key()),
            Some(Choice {
                few: TunedConv::Im2col,
                many: TunedConv::Winograd(Variant::F2x5, None),
            })
        );
    }

    #[test]
    fn every_winograd_layout_is_a_candidate_where_it_can_serve() {
        let names = |k: &ConvKey| -> Vec<String> {
            k.candidates().into_iter().map(TunedConv::name).collect()
        };
        assert_eq!(
            names(&key()),
            [
                "direct",
                "im2col",
                "winograd-f2x5-gemm",
                "winograd-f2x5-blocks",
                "winograd-f2x5-fused"
            ]
        );
        // VGG16's conv5_x: 512 -> 512 3x3, 37.7 MB of F(4x4,3x3) filters: no fused rows
        let big = same3x3(512, 512, 14);
        assert_eq!(
            names(&big),
            [
                "direct",
                "im2col",
                "winograd-f4x3-gemm",
                "winograd-f4x3-blocks",
                "winograd-f2x3-gemm",
                "winograd-f2x3-blocks"
            ]
        );
        // stride 4 (AlexNet's conv1): no Winograd form
        let strided = ConvKey {
            stride: [4, 4],
            kernel: [11, 11],
            ..big
        };
        assert_eq!(names(&strided), ["direct", "im2col"]);
        for name in names(&key()) {
            assert_eq!(TunedConv::parse(&name).map(TunedConv::name), Some(name));
        }
    }

    #[test]
    fn unreadable_tables_name_the_line() {
        let bad = |text: &str, line: usize, says: &str| {
            let e = Tuning::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{e}");
            assert!(e.to_string().contains(says), "{e}");
        };
        bad("", 1, "# alexvgg tuning v2");
        bad("# alexvgg tuning v2\nx", 2, "machine");
        let head = "# alexvgg tuning v2\nmachine M\n";
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
        bad(
            &format!("{head}{} direct winograd-f2x5-rows", key()),
            3,
            "cannot compute",
        );
        bad(
            &format!("{head}elementwise avx1024"),
            3,
            "unknown SIMD level 'avx1024'",
        );
    }

    #[test]
    fn every_candidate_is_timed_and_the_fastest_chosen() {
        let small = same3x3(8, 8, 6);
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
