//! Strided single-precision matrix products on the `gemm` crate (the kernels burn-flex uses),
//! writing into buffers this module allocates itself: Burn's flex matmul zero-fills a byte
//! buffer and then copies it into an aligned one for every output, two passes that cost
//! ~12% of a training step of the nanoGPT recipe (perf, 2-core box).

/// A read-only matrix view: element `(i, j)` is `data[offset + i·row_stride + j·col_stride]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: isize,
    pub col_stride: isize,
}

impl<'a> View<'a> {
    /// A row-major `rows × cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "matrix of {rows}x{cols} over {} values", data.len());
        Self { data, offset: 0, rows, cols, row_stride: cols as isize, col_stride: 1 }
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    /// Checks that every element the view can address lies inside `data`.
    fn check(&self) {
        if self.rows == 0 || self.cols == 0 {
            return;
        }
        let last = self.offset as isize
            + (self.rows as isize - 1) * self.row_stride.max(0)
            + (self.cols as isize - 1) * self.col_stride.max(0);
        let first = self.offset as isize
            + (self.rows as isize - 1) * self.row_stride.min(0)
            + (self.cols as isize - 1) * self.col_stride.min(0);
        assert!(first >= 0 && (last as usize) < self.data.len(), "matrix view out of bounds");
    }
}

/// Products this large (multiply-adds) are split over rayon's threads, as burn-flex does.
const PARALLEL_MIN: usize = 192 * 192 * 192;

/// `a · b` as a new row-major `a.rows × b.cols` buffer. With `init = Some(row)`, each output
/// row starts as `row` (a bias) and the product is added to it.
pub fn matmul(a: View<'_>, b: View<'_>, init: Option<&[f32]>) -> Vec<f32> {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    a.check();
    b.check();
    let (m, n, k) = (a.rows, b.cols, a.cols);
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    let read_dst = match init {
        Some(row) => {
            assert_eq!(row.len(), n, "bias length");
            for _ in 0..m {
                out.extend_from_slice(row);
            }
            true
        }
        None => false,
    };
    if m * n > 0 {
        let parallelism = if m * n * k >= PARALLEL_MIN && rayon::current_num_threads() > 1 {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: both views were bounds-checked above; `out` has capacity m·n and gemm writes
        // exactly the m·n row-major elements (reading them first only when `read_dst`, in which
        // case they were initialised above).
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                read_dst,
                a.data.as_ptr().add(a.offset),
                a.col_stride,
                a.row_stride,
                b.data.as_ptr().add(b.offset),
                b.col_stride,
                b.row_stride,
                if read_dst { 1.0 } else { 0.0 },
                1.0,
                false,
                false,
                false,
                parallelism,
            );
            out.set_len(m * n);
        }
    }
    out
}

/// Column sums of a row-major `rows × cols` matrix (the bias gradient).
pub fn column_sums(data: &[f32], cols: usize) -> Vec<f32> {
    let mut sums = vec![0.0; cols];
    for row in data.chunks_exact(cols) {
        for (s, x) in sums.iter_mut().zip(row) {
            *s += x;
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &View, b: &View) -> Vec<f32> {
        let at = |v: &View, i: usize, j: usize| v.data[(v.offset as isize + i as isize * v.row_stride + j as isize * v.col_stride) as usize];
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                out[i * b.cols + j] = (0..a.cols).map(|p| at(a, i, p) as f64 * at(b, p, j) as f64).sum::<f64>() as f32;
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32) - 0.5).collect()
    }

    /// Row-major, transposed and bias-initialised products equal the triple loop.
    #[test]
    fn strided_products_match_the_triple_loop() {
        for (m, k, n) in [(1, 1, 1), (7, 5, 3), (64, 33, 17), (200, 190, 210)] {
            let (a, b, bias) = (values(m * k, 1), values(n * k, 2), values(n, 3));
            let a_view = View::row_major(&a, m, k);
            // b stored as n×k, used transposed: a k×n operand with column stride k.
            let b_view = View::row_major(&b, n, k).t();
            let want = naive(&a_view, &b_view);
            let got = matmul(a_view, b_view, None);
            let with_bias = matmul(a_view, b_view, Some(&bias));
            for i in 0..m * n {
                let tol = 1e-5 * (k as f32).sqrt();
                assert!((got[i] - want[i]).abs() <= tol, "{m}x{k}x{n} element {i}: {} vs {}", got[i], want[i]);
                assert!((with_bias[i] - want[i] - bias[i % n]).abs() <= tol, "bias {m}x{k}x{n} element {i}");
            }
        }
    }

    #[test]
    fn column_sums_add_up_each_column() {
        assert_eq!(column_sums(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3), vec![5.0, 7.0, 9.0]);
    }
}
