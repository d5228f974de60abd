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
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
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

/// Products this large (multiply-adds) are split over rayon's threads.
const PARALLEL_MIN: usize = 192 * 192 * 192;

/// `dst ← c·(a·b)` (or `+=` with `accumulate`) at `dst`, row stride `dst_rs`, unit column stride.
///
/// # Safety
/// `a` and `b` are bounds-checked views; `dst` must be valid for writes (and reads, with
/// `accumulate`) of the `a.rows × b.cols` window, which no one else touches meanwhile.
unsafe fn gemm_raw(
    dst: *mut f32,
    dst_rs: usize,
    a: View<'_>,
    b: View<'_>,
    c: f32,
    accumulate: bool,
) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: forwarded from the caller's contract and the views' bounds checks.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr().add(a.offset),
            a.col_stride,
            a.row_stride,
            b.data.as_ptr().add(b.offset),
            b.col_stride,
            b.row_stride,
            1.0,
            c,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// A pointer the parallel blocks share; each block writes its own disjoint window.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: the blocks that receive it write disjoint windows (see `matmul`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The element `offset` past the start (a method, so closures capture the whole wrapper).
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// `a · b` as a new row-major `a.rows × b.cols` buffer. With `init = Some(row)`, each output
/// row starts as `row` (a bias) and the product is added to it.
///
/// Large products are cut into one block of output rows (or columns, when the output is wider
/// than tall) per rayon thread, each a serial gemm: on the 2-core box this scales better than
/// gemm's own threading at these sizes (BENCHMARKS.md).
pub fn matmul(a: View<'_>, b: View<'_>, init: Option<&[f32]>) -> Vec<f32> {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    a.check();
    b.check();
    let (m, n, k) = (a.rows, b.cols, a.cols);
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    let accumulate = match init {
        Some(row) => {
            assert_eq!(row.len(), n, "bias length");
            for _ in 0..m {
                out.extend_from_slice(row);
            }
            true
        }
        None => false,
    };
    let threads = rayon::current_num_threads();
    let forward_strides = a.row_stride >= 0 && b.col_stride >= 0;
    let parts = if m * n * k >= PARALLEL_MIN && forward_strides {
        threads.min(m.max(n) / 16).max(1)
    } else {
        1
    };
    let dst = SharedOut(out.as_mut_ptr());
    let block = move |part: usize| {
        let by_rows = m >= n;
        let len = if by_rows { m } else { n };
        let (start, end) = (part * len / parts, (part + 1) * len / parts);
        let (a, b, at) = if by_rows {
            (
                View { offset: a.offset + start * a.row_stride as usize, rows: end - start, ..a },
                b,
                start * n,
            )
        } else {
            (
                a,
                View { offset: b.offset + start * b.col_stride as usize, cols: end - start, ..b },
                start,
            )
        };
        // SAFETY: the views stay inside the checked ones (non-negative strides: `start` only
        // moves forward along an axis whose stride is the one added); blocks cover disjoint rows
        // or columns of `out`, which has capacity m·n and holds initialised values when
        // `accumulate`.
        unsafe { gemm_raw(dst.at(at), n, a, b, 1.0, accumulate) };
    };
    if parts > 1 {
        use rayon::prelude::*;
        (0..parts).into_par_iter().for_each(block);
    } else {
        block(0);
    }
    // SAFETY: the blocks above wrote all m·n elements.
    unsafe { out.set_len(m * n) };
    out
}

/// `dst ← c·(a · b)`, or `dst ← dst + c·(a · b)` with `accumulate`, into a strided
/// `a.rows × b.cols` window of `dst` (row stride `dst_row_stride`, unit column stride, starting at
/// `dst_offset`). Serial: meant for the many small products inside an already parallel kernel.
pub fn matmul_into(
    dst: &mut [f32],
    dst_offset: usize,
    dst_row_stride: usize,
    a: View<'_>,
    b: View<'_>,
    c: f32,
    accumulate: bool,
) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    a.check();
    b.check();
    let (m, n) = (a.rows, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    assert!(n <= dst_row_stride || m == 1, "destination rows overlap");
    assert!(
        dst_offset + (m - 1) * dst_row_stride + n <= dst.len(),
        "destination window out of bounds"
    );
    // SAFETY: all three windows were bounds-checked above, and the destination rows are disjoint.
    unsafe { gemm_raw(dst.as_mut_ptr().add(dst_offset), dst_row_stride, a, b, c, accumulate) };
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
        let at = |v: &View, i: usize, j: usize| {
            v.data[(v.offset as isize + i as isize * v.row_stride + j as isize * v.col_stride)
                as usize]
        };
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                out[i * b.cols + j] = (0..a.cols)
                    .map(|p| at(a, i, p) as f64 * at(b, p, j) as f64)
                    .sum::<f64>() as f32;
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32
                    / (1 << 24) as f32)
                    - 0.5
            })
            .collect()
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
                assert!(
                    (got[i] - want[i]).abs() <= tol,
                    "{m}x{k}x{n} element {i}: {} vs {}",
                    got[i],
                    want[i]
                );
                assert!(
                    (with_bias[i] - want[i] - bias[i % n]).abs() <= tol,
                    "bias {m}x{k}x{n} element {i}"
                );
            }
        }
    }

    /// Split over three threads, by rows (tall output) and by columns (wide output), with a bias.
    #[test]
    fn parallel_blocks_match_the_triple_loop() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for (m, k, n) in [(301, 200, 190), (150, 260, 400)] {
            let (a, b, bias) = (values(m * k, 4), values(k * n, 5), values(n, 6));
            let (av, bv) = (View::row_major(&a, m, k), View::row_major(&b, k, n));
            let want = naive(&av, &bv);
            let got = pool.install(|| matmul(av, bv, Some(&bias)));
            for i in 0..m * n {
                assert!((got[i] - want[i] - bias[i % n]).abs() <= 1e-4, "{m}x{k}x{n} element {i}");
            }
        }
    }

    #[test]
    fn column_sums_add_up_each_column() {
        assert_eq!(column_sums(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3), vec![5.0, 7.0, 9.0]);
    }
}
