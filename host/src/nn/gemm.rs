//! The one matrix-multiply entry point of the float network.
//!
//! Backed by the `gemm` crate (faer's) built with its `x86-v4` feature: it has
//! AVX-512 f32 micro-kernels and runtime CPU dispatch, which ndarray's default
//! `matrixmultiply` lacks (AVX2 at best), and convolutions here are almost all GEMM.

/// A read-only row-major-or-transposed view: `a[i, j] = data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A contiguous row-major `rows x cols` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat { data, rows, cols, rs: cols, cs: 1 }
    }
    /// The transpose, without copying.
    pub fn t(self) -> Self {
        Mat { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(last < self.data.len(), "matrix view out of bounds");
        }
    }
}

/// Whether the GEMM may use every rayon thread or must stay on the caller's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Par {
    /// Single-threaded: the caller already runs one GEMM per rayon task.
    Seq,
    /// Split across the rayon pool (large dense layers).
    Rayon,
}

/// `c = a * b` (or `c += a * b` when `accumulate`), `c` contiguous row-major `a.rows x b.cols`.
///
/// Panics if the shapes disagree or a view runs past its slice: callers derive
/// every shape from a validated `ModelSpec`, so a mismatch is a bug, never user data.
pub fn matmul(a: Mat, b: Mat, c: &mut [f32], accumulate: bool, par: Par) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions differ");
    assert_eq!(c.len(), m * n, "output has the wrong size");
    a.check();
    b.check();
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    let parallelism = match par {
        Par::Seq => gemm::Parallelism::None,
        Par::Rayon => gemm::Parallelism::Rayon(rayon::current_num_threads()),
    };
    // SAFETY: every index the kernel touches, (i*rs + j*cs) for i < rows, j < cols,
    // was bounds-checked above for a, b, and c (contiguous m x n of length m*n).
    // `c` is exclusively borrowed, so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: Mat, b: Mat) -> Vec<f32> {
        let mut c = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                let mut s = 0.0f64;
                for p in 0..a.cols {
                    s += a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64;
                }
                c[i * b.cols + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn matches_naive_with_transposes_and_accumulation() {
        let (m, k, n) = (37, 29, 53);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5).collect();
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        for (av, par) in [(Mat::new(&a, m, k), Par::Seq), (Mat::new(&at, k, m).t(), Par::Rayon)] {
            let want = naive(av, Mat::new(&b, k, n));
            let mut c = vec![1.0; m * n];
            matmul(av, Mat::new(&b, k, n), &mut c, false, par);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-4);
            }
            matmul(av, Mat::new(&b, k, n), &mut c, true, par);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - 2.0 * y).abs() < 2e-4);
            }
        }
    }
}
