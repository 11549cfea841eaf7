//! The f16 variant pickers: each `*_fast` function gives exactly the bits
//! of the plain kernel in [`crate::kernels::generic::f16`] and runs the best
//! variant for this CPU: F16C/AVX-512 on x86_64 under `std`, the FPU kernels
//! (`arm_fpu`) on the hard-float Arm targets.

use half::f16;

use crate::geometry::ConvGeom;
#[cfg(arm_fpu)]
use crate::kernels::arm_fpu;
#[cfg(not(arm_fpu))]
use crate::kernels::generic::f16::{conv2d_rows_by, dense, narrow};
#[cfg(all(feature = "std", x86_simd))]
use crate::kernels::x86::{self, f16 as x86_16};
use crate::model::F16Weights;

/// The plain kernel's narrowing, on every target.
#[inline(always)]
fn narrow_any(x: f32) -> f16 {
    crate::kernels::generic::f16::narrow(x)
}

/// [`conv2d`](crate::kernels::generic::f16::conv2d) with the same bits, faster where the CPU allows: under `std` on
/// x86_64 with F16C, [`x86_16::f16_conv2d_f16c`] (vectorised across
/// output channels, each lane keeping the plain summation order).
pub fn conv2d_fast(g: &ConvGeom, relu: bool, w: &F16Weights<'_>, input: &[f16], output: &mut [f16]) {
    conv2d_rows(g, relu, w, input, output, 0)
}

/// The output rows `oy_first..` of [`conv2d_fast`] (`output` holds exactly
/// those rows): what a layer split across threads runs per job.
pub fn conv2d_rows(g: &ConvGeom, relu: bool, w: &F16Weights<'_>, input: &[f16], output: &mut [f16], oy_first: usize) {
    if !g.is_square() {
        // Rectangular, dilated or heavily padded: the plain loop takes every geometry.
        let rows = oy_first..oy_first + output.len() / (g.out_w * g.out_c).max(1);
        return crate::kernels::generic::f16::conv2d_rows_by(g, relu, w, input, output, rows, f16::to_f32, narrow_any);
    }
    #[cfg(all(feature = "std", x86_simd))]
    {
        if x86::has_avx512_f16() {
            // SAFETY: the CPU supports AVX-512F, AVX2 and F16C, checked just above.
            return unsafe { x86_16::f16_conv2d_avx512_rows(g, relu, w, input, output, oy_first) };
        }
        if x86::has_f16c() {
            // SAFETY: the CPU supports AVX2 and F16C, checked just above.
            return unsafe { x86_16::f16_conv2d_f16c_rows(g, relu, w, input, output, oy_first) };
        }
    }
    let rows = oy_first..oy_first + output.len() / (g.out_w * g.out_c).max(1);
    #[cfg(arm_fpu)]
    return arm_fpu::conv2d_rows(g, relu, w, input, output, rows);
    #[cfg(not(arm_fpu))]
    conv2d_rows_by(g, relu, w, input, output, rows, f16::to_f32, narrow)
}

/// [`crate::kernels::generic::f16::dense`] with the same bits, faster where the CPU allows (F16C under
/// `std` on x86_64, see [`x86_16::f16_dense_f16c`]).
pub fn dense_fast(relu: bool, w: &F16Weights<'_>, input: &[f16], output: &mut [f16]) {
    #[cfg(all(feature = "std", x86_simd))]
    {
        if x86::has_avx512_f16() {
            // SAFETY: the CPU supports AVX-512F, AVX2 and F16C, checked just above.
            return unsafe { x86_16::f16_dense_avx512(relu, w, input, output) };
        }
        if x86::has_f16c() {
            // SAFETY: the CPU supports AVX2 and F16C, checked just above.
            return unsafe { x86_16::f16_dense_f16c(relu, w, input, output) };
        }
    }
    #[cfg(arm_fpu)]
    return arm_fpu::dense(relu, w, input, output);
    #[cfg(not(arm_fpu))]
    dense(relu, w, input, output)
}

/// [`batch_norm_in_place`](crate::kernels::generic::f16::batch_norm_in_place) with the same
/// bits, 16 channels per vector where the CPU has AVX-512.
pub fn batch_norm_in_place_fast(w: &F16Weights<'_>, data: &mut [f16]) {
    #[cfg(all(feature = "std", x86_simd))]
    if x86::has_avx512_f16() {
        // SAFETY: the CPU supports AVX-512F/BW, AVX2 and F16C, checked just above.
        return unsafe { x86_16::f16_batch_norm_in_place_avx512(w, data) };
    }
    #[cfg(arm_fpu)]
    return arm_fpu::batch_norm_in_place(w, data);
    #[cfg(not(arm_fpu))]
    crate::kernels::generic::f16::batch_norm_in_place(w, data)
}

/// [`max_pool`](crate::kernels::generic::f16::max_pool) with the same bits, 16 channels per
/// vector where the CPU has AVX-512.
pub fn max_pool_fast(g: &crate::geometry::PoolGeom, input: &[f16], output: &mut [f16]) {
    #[cfg(all(feature = "std", x86_simd))]
    if x86::has_avx512_f16() {
        // SAFETY: the CPU supports AVX-512F/BW, AVX2 and F16C, checked just above.
        return unsafe { x86_16::f16_max_pool_avx512(g, input, output) };
    }
    #[cfg(arm_fpu)]
    return arm_fpu::max_pool(g, input, output);
    #[cfg(not(arm_fpu))]
    crate::kernels::generic::f16::max_pool(g, input, output)
}
