//! Loops compiled for the CPU's widest vectors: one macro, [`vectorized`].

/// Defines `fn $name` whose body is compiled for AVX-512 where the CPU has
/// it, else for AVX2 (8 wide: AMD's Zen 3, Intel's client cores), else as usual. For plain loops over channel runs, which a generic
/// x86-64 build compiles to 4-wide SSE2 (2-wide for f64 sums): Winograd's
/// transforms took 40 % of F(4x4, 5x5)'s forward that way. Helpers they
/// call must be `#[inline(always)]` to be compiled into the wide copy too.
/// The wide copy is the body itself, not a call to an inlined one: a closure
/// takes the target features of the function it is written in, and the
/// transforms' closures (a third of their work) ran 4 wide in `body`.
/// Without fast-math the compiler cannot reorder or fuse float operations,
/// so both copies give the same bits.
macro_rules! vectorized {
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        fn $name($($a: $t),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($a: $t),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                #[allow(clippy::too_many_arguments)]
                fn wide($($a: $t),*) $body
                if shared::kernels::x86::has_avx512f() {
                    // SAFETY: the running CPU has AVX-512F (checked just above).
                    return unsafe { wide($($a),*) };
                }
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                fn wide_avx2($($a: $t),*) $body
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the running CPU has AVX2 (checked just above).
                    return unsafe { wide_avx2($($a),*) };
                }
            }
            body($($a),*)
        }
    };
}

pub(crate) use vectorized;
