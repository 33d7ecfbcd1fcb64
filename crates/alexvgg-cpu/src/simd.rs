//! The engine's SIMD level, chosen once at run time, and the CPU's features for reports.
//!
//! The crate is compiled for the baseline target (SSE2 on x86-64) so that one binary runs on any
//! machine. Its hand-written kernels come in three variants, one per [`Simd`] level: portable
//! Rust (any CPU; the compiler vectorises it for the baseline), AVX2 + FMA, and AVX-512
//! (AVX-512F/BW/DQ/VL). [`Simd::current`] is the level the engine uses unless told otherwise: the
//! best one the CPU supports, detected once with `is_x86_feature_detected!`, or the one named by
//! the environment variable [`ENV_VAR`] (`ALEXVGG_SIMD=portable|avx2|avx512`, for A/B
//! measurements and tests; a level the CPU lacks is lowered to the best it has).
//!
//! Where the AVX-512 variant of a kernel was measured no faster than the AVX2 one on the machines
//! seen so far, the [`Simd::Avx512`] level keeps the AVX2 variant for it ([`Simd::for_kernel`]);
//! the variant is still compiled and tested. The `gemm` crate (im2col, the large Winograd
//! layers below the AVX-512 level, training's weight gradients) dispatches on its own: AVX2 +
//! FMA kernels where the CPU has them (its AVX-512 kernels need its `x86-v4` feature, which is
//! off), whatever the level here.

use std::fmt;
use std::sync::OnceLock;

/// Environment variable that overrides the detected level: `portable`, `avx2` or `avx512`.
pub const ENV_VAR: &str = "ALEXVGG_SIMD";

/// A level of vector instructions for the engine's own kernels, ordered from least to most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Simd {
    /// Plain Rust, vectorised by the compiler for the baseline target (any CPU).
    Portable,
    /// AVX2 and FMA (x86-64).
    Avx2,
    /// AVX-512 F, BW, DQ and VL, with AVX2 and FMA (x86-64).
    Avx512,
}

/// A kernel family with variants per level, for [`Simd::for_kernel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The fully connected layers' weight stream ([`crate::linear`]).
    Linear,
    /// The register tiles of the direct convolution and of Winograd's products
    /// ([`crate::direct`]).
    Tiles,
    /// Element-wise bodies compiled per level by [`multiversion!`](crate::multiversion):
    /// Winograd's transforms, LRN, max pooling.
    Elementwise,
}

impl Simd {
    /// Every level, least first.
    pub const ALL: [Simd; 3] = [Simd::Portable, Simd::Avx2, Simd::Avx512];

    /// Name as [`ENV_VAR`] and reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Simd::Portable => "portable",
            Simd::Avx2 => "avx2",
            Simd::Avx512 => "avx512",
        }
    }

    /// The level named `name` (as [`name`](Self::name) spells it, case-insensitive).
    pub fn parse(name: &str) -> Option<Simd> {
        Simd::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The best level the running CPU supports.
    pub fn best() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma");
            if avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") {
                return Simd::Avx512;
            }
            if avx2 {
                return Simd::Avx2;
            }
        }
        Simd::Portable
    }

    /// Whether the running CPU can run this level's kernels.
    #[inline]
    pub fn supported(self) -> bool {
        self <= Simd::best()
    }

    /// The levels the running CPU supports, least first (what the kernels' tests run).
    pub fn supported_levels() -> Vec<Simd> {
        Simd::ALL.into_iter().filter(|s| s.supported()).collect()
    }

    /// The engine's level: [`ENV_VAR`] when it names one (lowered to [`best`](Self::best)
    /// when the CPU lacks it), else the best the CPU supports. Read once per process; a value
    /// that names no level, or a lowered one, is reported once on standard error.
    pub fn current() -> Simd {
        static CURRENT: OnceLock<Simd> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            let best = Simd::best();
            let value = std::env::var(ENV_VAR).ok();
            let (level, warning) = Simd::from_env(value.as_deref(), best);
            if let Some(w) = warning {
                eprintln!("warning: {w}");
            }
            level
        })
    }

    /// The level for an [`ENV_VAR`] value on a CPU whose best level is `best`, and a warning
    /// when the value is not used as given.
    pub fn from_env(value: Option<&str>, best: Simd) -> (Simd, Option<String>) {
        let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
            return (best, None);
        };
        match Simd::parse(value) {
            Some(level) if level <= best => (level, None),
            Some(level) => (
                best,
                Some(format!(
                    "{ENV_VAR}={value}: this CPU lacks {}; using {}",
                    level.name(),
                    best.name()
                )),
            ),
            None => (
                best,
                Some(format!(
                    "{ENV_VAR}={value} names no level (portable, avx2, avx512); using {}",
                    best.name()
                )),
            ),
        }
    }

    /// The variant `kernel` runs at this level: the level itself, except that [`Simd::Avx512`]
    /// keeps the AVX2 variant of the families whose AVX-512 variant was measured no faster
    /// (see [`AVX512_PAYS`]).
    pub fn for_kernel(self, kernel: Kernel) -> Simd {
        if self == Simd::Avx512 && !AVX512_PAYS.contains(&kernel) {
            Simd::Avx2
        } else {
            self
        }
    }

    /// Whether this level has the hand-written vector kernels (AVX2 or better).
    pub fn vector_kernels(self) -> bool {
        self >= Simd::Avx2
    }
}

/// The kernel families whose AVX-512 variant runs at [`Simd::Avx512`]: measured faster than
/// their AVX2 variant on the AMD EPYC (Zen 4) development machine (see `docs/cpu-engine.md`).
pub const AVX512_PAYS: &[Kernel] = &[Kernel::Linear, Kernel::Tiles];

impl fmt::Display for Simd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a report says about the running CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuInfo {
    /// Model name (`/proc/cpuinfo` on Linux), when known.
    pub model: Option<String>,
    /// Vector features detected, among those the engine cares about (x86-64 only).
    pub features: Vec<&'static str>,
    /// The engine's level ([`Simd::current`]).
    pub level: Simd,
    /// The best level the CPU supports ([`Simd::best`]).
    pub best: Simd,
}

impl CpuInfo {
    /// Detects the running CPU.
    pub fn detect() -> Self {
        let model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        });
        Self {
            model,
            features: detected_features(),
            level: Simd::current(),
            best: Simd::best(),
        }
    }
}

impl fmt::Display for CpuInfo {
    /// `cpu: MODEL; simd: FEATURES; kernels: LEVEL` (with the best level when a lower one was
    /// asked for).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let model = self.model.as_deref().unwrap_or(std::env::consts::ARCH);
        let features = if self.features.is_empty() {
            "none detected".to_string()
        } else {
            self.features.join(" ")
        };
        write!(f, "cpu: {model}; simd: {features}; kernels: {}", self.level)?;
        if self.level != self.best {
            write!(f, " ({} set; the CPU has {})", ENV_VAR, self.best)?;
        }
        Ok(())
    }
}

/// The vector features of the running CPU that matter here, by their `/proc/cpuinfo` names.
fn detected_features() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let all = [
            ("avx512f", has!("avx512f")),
            ("avx512bw", has!("avx512bw")),
            ("avx512dq", has!("avx512dq")),
            ("avx512vl", has!("avx512vl")),
            ("avx512_vnni", has!("avx512vnni")),
            ("avx512_bf16", has!("avx512bf16")),
            ("avx512_fp16", has!("avx512fp16")),
            ("avx2", has!("avx2")),
            ("fma", has!("fma")),
            ("avx", has!("avx")),
            ("sse4_2", has!("sse4.2")),
        ];
        all.into_iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| n)
            .collect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
}

/// Defines `fn NAME(simd: Simd, args) -> ret { body }` whose body is compiled three times: for
/// the baseline, for AVX2 + FMA, and for AVX-512; `simd` picks the copy (a level the CPU lacks
/// runs the best copy it has).
#[macro_export]
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name(simd: $crate::simd::Simd, $($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn inner($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    inner($($arg),*)
                }
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    inner($($arg),*)
                }
                let simd = simd.min($crate::simd::Simd::best());
                if simd == $crate::simd::Simd::Avx512 {
                    // SAFETY: the CPU supports AVX-512 F/BW/DQ/VL, AVX2 and FMA
                    // (`Simd::best` is at least Avx512 just above).
                    return unsafe { avx512($($arg),*) };
                }
                if simd == $crate::simd::Simd::Avx2 {
                    // SAFETY: the CPU supports AVX2 and FMA (`Simd::best` is at least Avx2).
                    return unsafe { avx2($($arg),*) };
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = simd;
            inner($($arg),*)
        }
    };
}

/// Whether the running CPU has AVX2 and FMA (always false off x86-64).
#[inline]
pub fn has_avx2_fma() -> bool {
    Simd::Avx2.supported()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_order_and_lower_to_what_the_cpu_has() {
        for s in Simd::ALL {
            assert_eq!(Simd::parse(s.name()), Some(s));
        }
        assert_eq!(Simd::parse(" AVX512 "), Some(Simd::Avx512));
        assert_eq!(Simd::parse("sse"), None);
        assert!(Simd::Portable < Simd::Avx2 && Simd::Avx2 < Simd::Avx512);
        assert_eq!(Simd::from_env(None, Simd::Avx2), (Simd::Avx2, None));
        assert_eq!(Simd::from_env(Some(""), Simd::Avx2), (Simd::Avx2, None));
        assert_eq!(
            Simd::from_env(Some("portable"), Simd::Avx512),
            (Simd::Portable, None)
        );
        let (level, warning) = Simd::from_env(Some("avx512"), Simd::Avx2);
        assert_eq!(level, Simd::Avx2);
        assert!(warning.unwrap().contains("lacks avx512"));
        let (level, warning) = Simd::from_env(Some("neon"), Simd::Portable);
        assert_eq!(level, Simd::Portable);
        assert!(warning.unwrap().contains("names no level"));
        assert!(Simd::Portable.supported());
        assert_eq!(Simd::supported_levels()[0], Simd::Portable);
        assert!(Simd::current() <= Simd::best());
        assert_eq!(Simd::Portable.for_kernel(Kernel::Tiles), Simd::Portable);
        assert_eq!(Simd::Avx2.for_kernel(Kernel::Linear), Simd::Avx2);
    }

    #[test]
    fn cpu_info_names_the_level() {
        let info = CpuInfo::detect();
        let line = info.to_string();
        assert!(line.starts_with("cpu: "), "{line}");
        assert!(line.contains(&format!("kernels: {}", info.level)), "{line}");
        if info.best >= Simd::Avx2 {
            assert!(info.features.contains(&"avx2"), "{line}");
        }
    }
}
