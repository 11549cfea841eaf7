//! The max-pool walk both precisions share.

use crate::geometry::PoolGeom;

/// The max-pool walk both precisions share: every output starts at
/// `lowest`, and an input value replaces it when `greater(value, current)`.
/// The window is clipped to the image; channels are the innermost axis.
pub fn max_pool_by<T: Copy>(g: &PoolGeom, input: &[T], output: &mut [T], lowest: T, greater: impl Fn(T, T) -> bool) {
    assert!(input.len() == g.input_len() && output.len() == g.output_len(), "max_pool: length");
    let c = g.channels;
    for oy in 0..g.out_h {
        let (y0, y1) = g.window(oy, g.in_h);
        for ox in 0..g.out_w {
            let (x0, x1) = g.window(ox, g.in_w);
            let out = &mut output[(oy * g.out_w + ox) * c..][..c];
            out.fill(lowest);
            for y in y0..y1 {
                for x in x0..x1 {
                    let px = &input[(y * g.in_w + x) * c..][..c];
                    for (o, &v) in out.iter_mut().zip(px) {
                        if greater(v, *o) {
                            *o = v;
                        }
                    }
                }
            }
        }
    }
}
