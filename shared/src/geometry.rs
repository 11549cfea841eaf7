//! The geometry of Conv2D and MaxPool2D: output size, padding and the
//! in-image taps of a window, per QUANT-SPEC.md, with every check in one
//! place. The kernels, the engine, the quantizer and the host's float
//! network all take their conv geometry from here.
//!
//! A leaf: it depends only on [`crate::spec`].

use crate::spec::{Padding, Shape};

/// The geometry of one Conv2D: NHWC input, OHWI weights, square kernel and stride.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub out_c: usize,
    pub kernel: usize,
    pub stride: usize,
    /// Rows of zero padding above the image (SAME: `total / 2`).
    pub pad_top: usize,
    /// Columns of zero padding left of the image.
    pub pad_left: usize,
}

/// Output size and leading padding of one spatial axis, per QUANT-SPEC.md.
fn axis(n: usize, k: usize, s: usize, padding: Padding) -> Option<(usize, usize)> {
    if k == 0 || s == 0 || n == 0 {
        return None;
    }
    match padding {
        Padding::Valid => (n >= k).then(|| ((n - k) / s + 1, 0)),
        Padding::Same => {
            let out = n.div_ceil(s);
            let total = ((out - 1) * s + k).saturating_sub(n);
            Some((out, total / 2))
        }
    }
}

impl ConvGeom {
    /// The geometry of `filters` `kernel x kernel` filters over an `h x w x c`
    /// input; `None` if the output would be empty or a hyperparameter is 0.
    pub fn new(
        (in_h, in_w, in_c): (usize, usize, usize),
        filters: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
    ) -> Option<Self> {
        let (out_h, pad_top) = axis(in_h, kernel, stride, padding)?;
        let (out_w, pad_left) = axis(in_w, kernel, stride, padding)?;
        if in_c == 0 || filters == 0 {
            return None;
        }
        Some(ConvGeom { in_h, in_w, in_c, out_h, out_w, out_c: filters, kernel, stride, pad_top, pad_left })
    }

    /// The geometry of a spec layer on its input shape (`None` for a flat input).
    pub fn from_spec(c: &crate::spec::Conv2D, input: Shape) -> Option<Self> {
        let Shape::Image { h, w, c: ch } = input else { return None };
        Self::new(
            (h as usize, w as usize, ch as usize),
            c.filters as usize,
            c.kernel as usize,
            c.stride as usize,
            c.padding,
        )
    }

    /// Rows of zero padding below the image: with [`ConvGeom::pad_top`], what
    /// SAME padding adds in total (`max((out - 1) * stride + kernel - in, 0)`,
    /// the odd row below); 0 for VALID.
    #[inline]
    pub fn pad_bottom(&self) -> usize {
        ((self.out_h - 1) * self.stride + self.kernel).saturating_sub(self.in_h + self.pad_top)
    }
    /// Columns of zero padding right of the image (see [`ConvGeom::pad_bottom`]).
    #[inline]
    pub fn pad_right(&self) -> usize {
        ((self.out_w - 1) * self.stride + self.kernel).saturating_sub(self.in_w + self.pad_left)
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
    /// Weight elements (`filters * k * k * in_c`).
    #[inline]
    pub fn weights_len(&self) -> usize {
        self.out_c * self.kernel * self.kernel * self.in_c
    }

    /// The in-image kernel taps along one axis for output coordinate `o`:
    /// `(first tap, one past the last tap, input coordinate of the first tap)`.
    /// Taps that fall in the padding are skipped, which is what makes them
    /// contribute exactly 0 whatever the input zero point.
    #[inline]
    pub fn taps(&self, o: usize, pad: usize, n: usize) -> (usize, usize, usize) {
        let start = (o * self.stride) as isize - pad as isize;
        let k0 = if start < 0 { (-start) as usize } else { 0 };
        let end = start + self.kernel as isize;
        let k1 = if end > n as isize { (n as isize - start) as usize } else { self.kernel };
        let k1 = k1.max(k0);
        (k0, k1, (start + k0 as isize) as usize)
    }
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
        let (out_h, _) = axis(in_h, pool, stride, Padding::Valid)?;
        let (out_w, _) = axis(in_w, pool, stride, Padding::Valid)?;
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
