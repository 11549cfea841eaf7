//! The max-pool walk every precision and ISA shares.

use crate::geometry::PoolGeom;

/// The input pixels one output pixel's window reads (clipped to the image).
#[derive(Clone, Copy, Debug)]
pub struct Window {
    y: (usize, usize),
    x: (usize, usize),
    in_w: usize,
    channels: usize,
}

impl Window {
    /// Call `f` with the element offset of each input pixel of the window
    /// (row-major), where its `channels` values start. (A closure, not a
    /// `flat_map` iterator: that cost the AVX-512 f16 pool ~15 %.)
    #[inline(always)]
    pub fn for_each_pixel(self, mut f: impl FnMut(usize)) {
        let Window { y: (y0, y1), x: (x0, x1), in_w, channels } = self;
        for y in y0..y1 {
            for x in x0..x1 {
                f((y * in_w + x) * channels);
            }
        }
    }
}

/// Call `visit(window, out)` for every output pixel: `out` is its `channels`
/// values of `output`, `window` the input pixels it pools. Checks the lengths.
#[inline]
pub fn for_each_window<T>(g: &PoolGeom, input: &[T], output: &mut [T], mut visit: impl FnMut(Window, &mut [T])) {
    assert!(input.len() == g.input_len() && output.len() == g.output_len(), "max_pool: length");
    let c = g.channels;
    for oy in 0..g.out_h {
        let y = g.window(oy, g.in_h);
        for ox in 0..g.out_w {
            let window = Window { y, x: g.window(ox, g.in_w), in_w: g.in_w, channels: c };
            visit(window, &mut output[(oy * g.out_w + ox) * c..][..c]);
        }
    }
}

/// The plain max-pool of both precisions: every output starts at `lowest`,
/// and an input value replaces it when `greater(value, current)`.
pub fn max_pool_by<T: Copy>(g: &PoolGeom, input: &[T], output: &mut [T], lowest: T, greater: impl Fn(T, T) -> bool) {
    let c = g.channels;
    for_each_window(g, input, output, |window, out| {
        out.fill(lowest);
        window.for_each_pixel(|at| {
            for (o, &v) in out.iter_mut().zip(&input[at..at + c]) {
                if greater(v, *o) {
                    *o = v;
                }
            }
        });
    });
}
