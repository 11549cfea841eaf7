//! What a GEMM or transform applies to each output before it is stored:
//! bias, ReLU, a folded BatchNormalization. A leaf shared by the micro-kernels
//! and the Winograd transforms.

use std::ops::Range;

/// What is applied to `a w` before it is stored: `bias`, then ReLU when
/// `relu`, then `x * scale + shift` per channel when `affine` is given
/// (rounded as the eval pass of `batchnorm` rounds: a multiply, then an add).
#[derive(Clone, Copy)]
pub struct Epilogue<'a> {
    pub bias: &'a [f32],
    pub relu: bool,
    pub affine: Option<(&'a [f32], &'a [f32])>,
}

impl Epilogue<'_> {
    /// The epilogue of whole output pixels (`bias.len()` values each), in
    /// place, after a plain GEMM.
    pub fn apply_pixels(&self, px: &mut [f32]) {
        for px in px.chunks_exact_mut(self.bias.len()) {
            self.apply_run(0, px);
        }
    }

    /// The epilogue of channels `at .. at + vals.len()`, in place: one
    /// pixel's run, or a block of it still in registers (Winograd's output
    /// transform applies it before the store). Inlined always, so that the
    /// AVX-512 copies of its callers compile it 16 wide.
    #[inline(always)]
    pub fn apply_run(&self, at: usize, vals: &mut [f32]) {
        let n = vals.len();
        for (v, b) in vals.iter_mut().zip(&self.bias[at..][..n]) {
            let s = *v + b;
            *v = if self.relu && s < 0.0 { 0.0 } else { s };
        }
        if let Some((scale, shift)) = self.affine {
            for ((v, s), t) in vals.iter_mut().zip(&scale[at..][..n]).zip(&shift[at..][..n]) {
                *v = *v * s + t;
            }
        }
    }

    /// No epilogue: a plain product (`zeros` holds the channels' zero bias).
    pub fn plain(zeros: &[f32]) -> Epilogue<'_> {
        Epilogue { bias: zeros, relu: false, affine: None }
    }

    /// The epilogue of the output channels `cols` alone (for a GEMM or
    /// transform that writes only those).
    pub fn cols(&self, cols: Range<usize>) -> Epilogue<'_> {
        Epilogue {
            bias: &self.bias[cols.clone()],
            relu: self.relu,
            affine: self.affine.map(|(s, t)| (&s[cols.clone()], &t[cols])),
        }
    }

    /// The epilogue of one value of channel `j`, for the plain path and tests.
    pub fn apply(&self, j: usize, v: f32) -> f32 {
        let s = v + self.bias[j];
        let r = if self.relu && s < 0.0 { 0.0 } else { s };
        match self.affine {
            Some((scale, shift)) => r * scale[j] + shift[j],
            None => r,
        }
    }
}
