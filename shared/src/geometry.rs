//! The geometry of Conv2D and the pools: output size, padding and the
//! in-image taps of a window, per QUANT-SPEC.md, with every check in one
//! place. The kernels, the engine, the quantizer and the host's float
//! network all take their conv geometry from here.
//!
//! A leaf: it depends only on [`crate::spec`].

use crate::spec::{axis, axis_pads, AxisPad, Conv2D, Hw, Padding, Shape};

/// The geometry of one Conv2D: NHWC input, OHWI weights, any kernel h×w,
/// strides, dilation and padding.
///
/// The fast kernels take the common case only (see [`ConvGeom::is_square`]);
/// the plain kernels take every geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub out_c: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    /// Input rows between two kernel taps (1: contiguous).
    pub dilation_h: usize,
    /// Input columns between two kernel taps.
    pub dilation_w: usize,
    /// Rows of zero padding above the image (SAME: `total / 2`).
    pub pad_top: usize,
    /// Columns of zero padding left of the image.
    pub pad_left: usize,
    /// Channel groups (1: every output reads every input channel; `in_c`
    /// and `out_c` are multiples of it).
    pub groups: usize,
}

impl ConvGeom {
    /// The geometry of `filters` square `kernel x kernel` filters with square
    /// `stride` over an `h x w x c` input; `None` if the output would be
    /// empty or a hyperparameter is 0.
    pub fn new(
        (in_h, in_w, in_c): (usize, usize, usize),
        filters: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
    ) -> Option<Self> {
        let sq = |n: usize| Hw::square(n as u32);
        Self::general((in_h, in_w, in_c), filters, sq(kernel), sq(stride), Hw::ONE, padding)
    }

    /// Any geometry: `kernel` and `stride` per axis, taps `dilation` apart.
    pub fn general(
        (in_h, in_w, in_c): (usize, usize, usize),
        filters: usize,
        kernel: Hw,
        stride: Hw,
        dilation: Hw,
        padding: Padding,
    ) -> Option<Self> {
        let (ph, pw) = axis_pads(padding);
        let (kernel_h, kernel_w) = (kernel.h as usize, kernel.w as usize);
        let (stride_h, stride_w) = (stride.h as usize, stride.w as usize);
        let (dilation_h, dilation_w) = (dilation.h as usize, dilation.w as usize);
        let (out_h, pad_top) = axis(in_h, kernel_h, stride_h, dilation_h, ph)?;
        let (out_w, pad_left) = axis(in_w, kernel_w, stride_w, dilation_w, pw)?;
        if in_c == 0 || filters == 0 {
            return None;
        }
        Some(ConvGeom {
            in_h,
            in_w,
            in_c,
            out_h,
            out_w,
            out_c: filters,
            kernel_h,
            kernel_w,
            stride_h,
            stride_w,
            dilation_h,
            dilation_w,
            pad_top,
            pad_left,
            groups: 1,
        })
    }

    /// The geometry of a spec layer on its input shape (`None` for a flat input).
    pub fn from_spec(c: &Conv2D, input: Shape) -> Option<Self> {
        let Shape::Image { h, w, c: ch } = input else { return None };
        let groups = c.groups as usize;
        if groups == 0 || !(ch as usize).is_multiple_of(groups) || !(c.filters as usize).is_multiple_of(groups) {
            return None;
        }
        let g = Self::general(
            (h as usize, w as usize, ch as usize),
            c.filters as usize,
            c.kernel,
            c.stride,
            c.dilation,
            c.padding,
        )?;
        Some(ConvGeom { groups, ..g })
    }

    /// Input channels each group reads.
    #[inline]
    pub fn in_per_group(&self) -> usize {
        self.in_c / self.groups
    }
    /// Output channels each group makes.
    #[inline]
    pub fn out_per_group(&self) -> usize {
        self.out_c / self.groups
    }

    /// One group, undilated, each padding less than the kernel along its
    /// axis: the geometry the Arm DSP conv's tiles take (every Keras
    /// `Conv2D(f, (kh, kw), strides=(sh, sw), padding=...)`, DS-CNN's 10x4
    /// first conv among them).
    #[inline]
    pub fn is_tileable(&self) -> bool {
        self.groups == 1
            && self.dilation_h == 1
            && self.dilation_w == 1
            && self.pad_top < self.kernel_h
            && self.pad_left < self.kernel_w
            && self.pad_bottom() < self.kernel_h
            && self.pad_right() < self.kernel_w
    }

    /// A square kernel and stride, undilated, with each padding less than
    /// the kernel: the geometry the x86 fast kernels were written for (every
    /// Keras `Conv2D(f, k, strides=s, padding=...)` of a stack). Everything
    /// else runs on the plain kernels there.
    #[inline]
    pub fn is_square(&self) -> bool {
        self.is_tileable() && self.kernel_h == self.kernel_w && self.stride_h == self.stride_w
    }

    /// A depthwise conv with a depth multiplier of 1 (each output channel
    /// filters its own input channel): what the depthwise fast kernels take,
    /// any kernel, stride, dilation and padding.
    #[inline]
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.in_c && self.out_c == self.in_c
    }

    /// The kernel size of a square geometry (see [`ConvGeom::is_square`]).
    #[inline]
    pub fn kernel(&self) -> usize {
        debug_assert!(self.kernel_h == self.kernel_w, "a square kernel");
        self.kernel_h
    }
    /// The stride of a square geometry.
    #[inline]
    pub fn stride(&self) -> usize {
        debug_assert!(self.stride_h == self.stride_w, "a square stride");
        self.stride_h
    }

    /// The span of the dilated kernel along the height: `(kh - 1) * dh + 1`.
    #[inline]
    pub fn span_h(&self) -> usize {
        (self.kernel_h - 1) * self.dilation_h + 1
    }
    /// The span of the dilated kernel along the width.
    #[inline]
    pub fn span_w(&self) -> usize {
        (self.kernel_w - 1) * self.dilation_w + 1
    }

    /// Rows of zero padding below the image that a window reaches: with
    /// [`ConvGeom::pad_top`], what SAME padding adds in total
    /// (`max((out - 1) * stride + span - in, 0)`, the odd row below); 0 for
    /// VALID; for explicit padding, the part of the bottom pad a window
    /// touches (a pad no window reaches changes nothing).
    #[inline]
    pub fn pad_bottom(&self) -> usize {
        ((self.out_h - 1) * self.stride_h + self.span_h()).saturating_sub(self.in_h + self.pad_top)
    }
    /// Columns of zero padding right of the image (see [`ConvGeom::pad_bottom`]).
    #[inline]
    pub fn pad_right(&self) -> usize {
        ((self.out_w - 1) * self.stride_w + self.span_w()).saturating_sub(self.in_w + self.pad_left)
    }

    /// Input elements (`h * w * c`).
    #[inline]
    pub fn input_len(&self) -> usize {
        self.in_h * self.in_w * self.in_c
    }
    /// Output elements.
    #[inline]
    pub fn output_len(&self) -> usize {
        self.out_h * self.out_w * self.out_c
    }
    /// Weight elements (`filters * kh * kw * in_c / groups`).
    #[inline]
    pub fn weights_len(&self) -> usize {
        self.out_c * self.filter_len()
    }
    /// Weights of one filter (`kh * kw * in_c / groups`).
    #[inline]
    pub fn filter_len(&self) -> usize {
        self.kernel_h * self.kernel_w * self.in_per_group()
    }

    /// The in-image kernel taps along the height for output row `oy`:
    /// `(first tap, one past the last tap, input row of the first tap)`;
    /// the taps between are `dilation_h` rows apart. Taps that fall in the
    /// padding are skipped, which is what makes them contribute exactly 0
    /// whatever the input zero point.
    #[inline]
    pub fn taps_h(&self, oy: usize) -> (usize, usize, usize) {
        axis_taps(oy * self.stride_h, self.pad_top, self.in_h, self.kernel_h, self.dilation_h)
    }
    /// The in-image kernel taps along the width for output column `ox` (see [`ConvGeom::taps_h`]).
    #[inline]
    pub fn taps_w(&self, ox: usize) -> (usize, usize, usize) {
        axis_taps(ox * self.stride_w, self.pad_left, self.in_w, self.kernel_w, self.dilation_w)
    }

    /// [`ConvGeom::taps_h`] for the square, undilated geometry the fast
    /// kernels take: `pad` and `n` name the axis.
    #[inline]
    pub fn taps(&self, o: usize, pad: usize, n: usize) -> (usize, usize, usize) {
        axis_taps(o * self.stride_h, pad, n, self.kernel_h, 1)
    }
}

/// The in-image taps of a window of `k` taps `d` apart whose first tap sits
/// at padded coordinate `at` (`pad` before an axis of `n`).
#[inline]
fn axis_taps(at: usize, pad: usize, n: usize, k: usize, d: usize) -> (usize, usize, usize) {
    let start = at as isize - pad as isize;
    let d_i = d as isize;
    // First tap at or after 0: ceil(-start / d).
    let k0 = if start < 0 { ((-start + d_i - 1) / d_i) as usize } else { 0 };
    // One past the last tap before n: ceil((n - start) / d).
    let room = n as isize - start;
    let k1 = if room <= 0 { 0 } else { (((room + d_i - 1) / d_i) as usize).min(k) };
    let k1 = k1.max(k0).min(k.max(k0));
    (k0, k1, (start + (k0 as isize) * d_i).max(0) as usize)
}

/// The geometry of a MaxPool2D (valid padding, the window clipped to the image).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    pub in_h: usize,
    pub in_w: usize,
    pub channels: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub pool: usize,
    pub stride: usize,
}

impl PoolGeom {
    /// `pool x pool` windows every `stride` pixels over `h x w x c`; `None` if empty.
    pub fn new((in_h, in_w, channels): (usize, usize, usize), pool: usize, stride: usize) -> Option<Self> {
        let (out_h, _) = axis(in_h, pool, stride, 1, AxisPad::Valid)?;
        let (out_w, _) = axis(in_w, pool, stride, 1, AxisPad::Valid)?;
        (channels > 0).then_some(PoolGeom { in_h, in_w, channels, out_h, out_w, pool, stride })
    }

    /// The geometry of a spec MaxPool2D on its input shape.
    pub fn from_spec(pool: u32, stride: u32, input: Shape) -> Option<Self> {
        let Shape::Image { h, w, c } = input else { return None };
        Self::new((h as usize, w as usize, c as usize), pool as usize, stride as usize)
    }

    /// Input elements.
    #[inline]
    pub fn input_len(&self) -> usize {
        self.in_h * self.in_w * self.channels
    }
    /// Output elements.
    #[inline]
    pub fn output_len(&self) -> usize {
        self.out_h * self.out_w * self.channels
    }
    /// Window rows/columns along one axis, clipped to the image.
    #[inline]
    pub fn window(&self, o: usize, n: usize) -> (usize, usize) {
        let s = o * self.stride;
        (s, (s + self.pool).min(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SAME padding splits `max((out - 1) * s + k - n, 0)` with the smaller
    /// half first (Keras); VALID pads nothing.
    #[test]
    fn padding_before_and_after() {
        for n in 1..12 {
            for k in 1..7 {
                for s in 1..5 {
                    let g = ConvGeom::new((n, n + 1, 1), 1, k, s, Padding::Same).unwrap();
                    let total = |n: usize| ((n.div_ceil(s) - 1) * s + k).saturating_sub(n);
                    assert_eq!((g.pad_top, g.pad_bottom()), (total(n) / 2, total(n) - total(n) / 2));
                    assert_eq!((g.pad_left, g.pad_right()), (total(n + 1) / 2, total(n + 1) - total(n + 1) / 2));
                    if let Some(v) = ConvGeom::new((n, n, 1), 1, k, s, Padding::Valid) {
                        assert_eq!((v.pad_top, v.pad_bottom(), v.pad_left, v.pad_right()), (0, 0, 0, 0));
                    }
                }
            }
        }
    }
}
