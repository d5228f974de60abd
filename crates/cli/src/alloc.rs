//! The binary's heap: a counting global allocator, so `attnlab bench` can report each
//! measurement's own peak memory, and glibc tuned to keep freed tensor buffers. A process-wide
//! choice, so it is made here and not in the libraries.

use attnlab_eval::bench::CountingAllocator;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Tells the bench that heap bytes are counted, and tunes glibc. Call first thing in `main`,
/// before any thread exists.
pub fn set_up() {
    CountingAllocator::mark_installed();
    tune_system_allocator();
}

/// Keeps freed tensor buffers in the process heap instead of returning them to the kernel.
///
/// A training step allocates and frees the same few hundred buffers every step, many above
/// glibc's default mmap threshold (128 KiB, adapting upward only slowly). Each such buffer was
/// a fresh `mmap`, page-faulted and zeroed by the kernel on first touch, then unmapped: ~4,800 page
/// faults per nanoGPT-recipe step. Raising the mmap and trim thresholds lets glibc reuse the
/// memory; measured on the 2-core box, page faults fell 12x and the step by 8-15% (docs/benchmarks.md).
/// The cost is resident memory that stays at the step's peak. A no-op off glibc.
fn tune_system_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation thresholds; it is called before any
    // thread is spawned.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
