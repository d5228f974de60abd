//! The binary's heap: a counting global allocator, so `attnlab bench` can report each
//! measurement's own peak memory, and glibc tuned to keep freed tensor buffers. A process-wide
//! choice, so it is made here and not in the libraries.

use attnlab_eval::bench::CountingAllocator;
use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static ALLOCATOR: Heap = Heap;

/// The counting allocator, with a refusal turned into a one-line error and exit code 1 instead
/// of Rust's default abort ("memory allocation of N bytes failed", SIGABRT, a core dump). The
/// run directory needs nothing from the dying process: every file in it is complete.
struct Heap;

// SAFETY: every call forwards to `CountingAllocator` unchanged; a null result ends the process.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { CountingAllocator.alloc(layout) };
        if p.is_null() {
            out_of_memory(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { CountingAllocator.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { CountingAllocator.realloc(ptr, layout, new_size) };
        if p.is_null() {
            out_of_memory(new_size);
        }
        p
    }
}

/// Says the heap refused `size` bytes and exits. Nothing here may allocate: the message is
/// formatted into a stack buffer and written with one system call.
fn out_of_memory(size: usize) -> ! {
    use std::fmt::Write;
    struct Stack {
        bytes: [u8; 320],
        len: usize,
    }
    impl Write for Stack {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let n = s.len().min(self.bytes.len() - self.len);
            self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
            Ok(())
        }
    }
    let mut line = Stack { bytes: [0; 320], len: 0 };
    let _ = writeln!(
        line,
        "error: out of memory: the system refused {size} bytes; lower model.d_model, model.n_layers or train.batch_size (a run keeps its last complete checkpoint)"
    );
    // SAFETY: writes an initialised stack buffer to stderr, then ends the process without
    // running anything that could allocate.
    #[cfg(unix)]
    unsafe {
        libc::write(2, line.bytes.as_ptr().cast(), line.len);
        libc::_exit(1);
    }
    #[cfg(not(unix))]
    std::process::abort();
}

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
