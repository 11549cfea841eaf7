//! The f16 variant pickers: each `*_fast` function gives exactly the bits
//! of the plain kernel in [`crate::kernels::generic::f16`] and runs the best
//! variant for this CPU.

use half::f16;

use crate::geometry::ConvGeom;
use crate::kernels::generic::f16::{conv2d, dense};
#[cfg(all(feature = "std", x86_simd))]
use crate::kernels::x86::{self, f16 as x86_16};
use crate::model::F16Weights;

/// [`conv2d`](crate::kernels::generic::f16::conv2d) with the same bits, faster where the CPU allows: under `std` on
/// x86_64 with F16C, [`x86_16::f16_conv2d_f16c`] (vectorised across
/// output channels, each lane keeping the plain summation order).
pub fn conv2d_fast(g: &ConvGeom, relu: bool, w: &F16Weights<'_>, input: &[f16], output: &mut [f16]) {
    #[cfg(all(feature = "std", x86_simd))]
    if x86::has_f16c() {
        // SAFETY: the CPU supports AVX2 and F16C, checked just above.
        return unsafe { x86_16::f16_conv2d_f16c(g, relu, w, input, output) };
    }
    conv2d(g, relu, w, input, output)
}

/// [`dense`](crate::kernels::generic::f16::dense) with the same bits, faster where the CPU allows (F16C under
/// `std` on x86_64, see [`x86_16::f16_dense_f16c`]).
pub fn dense_fast(relu: bool, w: &F16Weights<'_>, input: &[f16], output: &mut [f16]) {
    #[cfg(all(feature = "std", x86_simd))]
    if x86::has_f16c() {
        // SAFETY: the CPU supports AVX2 and F16C, checked just above.
        return unsafe { x86_16::f16_dense_f16c(relu, w, input, output) };
    }
    dense(relu, w, input, output)
}
