//! Output buffers for kernels that return fresh tensors.
//!
//! A 64 MiB result in fresh memory costs 16,384 page faults of 4 KiB — several times the
//! decoding itself. On Linux we ask for transparent huge pages (`MADV_HUGEPAGE`) on large
//! buffers, so the first touch faults 2 MiB at a time. Where THP is disabled the advice is
//! ignored and nothing changes but speed.

/// Buffers smaller than this are not worth the system call.
const HUGE_PAGE_MIN_BYTES: usize = 8 << 20;

/// A zero-initialised `Vec` of `n` elements, advised to use huge pages when large.
pub(crate) fn zeroed_vec<T: num_traits::Zero + Clone>(n: usize) -> Vec<T> {
    let v = vec![T::zero(); n];
    advise_huge_pages(&v);
    v
}

#[cfg(target_os = "linux")]
fn advise_huge_pages<T>(v: &[T]) {
    const HUGE: usize = 2 << 20;
    let bytes = std::mem::size_of_val(v);
    if bytes < HUGE_PAGE_MIN_BYTES {
        return;
    }
    // madvise wants a page-aligned start; advise the 2 MiB-aligned interior.
    let start = (v.as_ptr() as usize).next_multiple_of(HUGE);
    let end = (v.as_ptr() as usize + bytes) / HUGE * HUGE;
    if end > start {
        // SAFETY: [start, end) lies inside the live allocation `v`; MADV_HUGEPAGE changes
        // only how the kernel backs those pages, never their contents. The result is
        // ignored: the advice is an optimisation.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages<T>(_: &[T]) {}
