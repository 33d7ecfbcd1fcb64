//! Runtime selection of vector instructions for the element-wise kernels.
//!
//! The crate is compiled for the baseline target (SSE2 on x86-64) so that one binary runs on any
//! machine; [`multiversion!`](crate::multiversion) compiles a kernel body a second time with
//! AVX2 + FMA enabled and picks that copy when the CPU has them. (The GEMMs dispatch inside the
//! `gemm` crate.)

/// Defines `fn NAME(args) -> ret { body }` whose body is compiled twice, for the baseline and for
/// AVX2 + FMA, the latter used when the running CPU supports it.
#[macro_export]
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn inner($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    inner($($arg),*)
                }
                if $crate::simd::has_avx2_fma() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}

/// Whether the running CPU has AVX2 and FMA (always false off x86-64).
#[inline]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
