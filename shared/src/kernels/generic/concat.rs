//! The channel walk of CONCATENATION, for any element type: each of
//! `pixels` output pixels gets `a`'s channels, then `b`'s, each value
//! mapped on the way (int8: requantized; f16: copied). The int8 and f16
//! kernels differ only in the map (as `pool::max_pool_by` is shared).

/// `out[p] = [map_a(a[p]) .., map_b(b[p]) ..]` for each of `pixels` pixels
/// (1 for flat vectors). Panics unless the lengths split into whole pixels.
#[inline(always)]
pub fn concat_by<T: Copy>(
    pixels: usize,
    a: &[T],
    b: &[T],
    out: &mut [T],
    map_a: impl Fn(T) -> T,
    map_b: impl Fn(T) -> T,
) {
    assert!(pixels > 0, "concat: pixels");
    let (ca, cb) = (a.len() / pixels, b.len() / pixels);
    assert!(ca * pixels == a.len() && cb * pixels == b.len() && out.len() == a.len() + b.len(), "concat: length");
    for ((o, xa), xb) in out.chunks_exact_mut(ca + cb).zip(a.chunks_exact(ca.max(1))).zip(b.chunks_exact(cb.max(1))) {
        let (oa, ob) = o.split_at_mut(ca);
        for (d, &x) in oa.iter_mut().zip(xa) {
            *d = map_a(x);
        }
        for (d, &x) in ob.iter_mut().zip(xb) {
            *d = map_b(x);
        }
    }
}
