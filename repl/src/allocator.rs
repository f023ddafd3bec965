//! The allocator and how it asks the system for memory.
//!
//! Loading a large world allocates and frees millions of small values (YAML trees, Cedar
//! entities); mimalloc does that markedly faster than the system allocator. What remains is
//! the kernel's cost of handing out fresh memory: a 10,000-service plan touches about
//! 650 MB, and on virtual machines zeroing that in 4 KiB pages (one fault each) cost as much
//! as a second of system time, more than some phases of the plan. Asking for transparent
//! huge pages takes one fault per 2 MiB instead.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Variables through which mimalloc's own environment settings choose huge pages; a user
/// who sets either keeps their choice.
const USER_CHOICE: [&str; 2] = ["MIMALLOC_ALLOW_LARGE_OS_PAGES", "MIMALLOC_LARGE_OS_PAGES"];

/// Has mimalloc ask for transparent huge pages (`madvise(MADV_HUGEPAGE)`, which only
/// matters where the system's THP mode is `madvise`; where huge pages cannot be had it falls
/// back to ordinary pages). Called first thing in `main`, before the large allocations.
pub fn prefer_huge_pages() {
    if USER_CHOICE.iter().any(|v| std::env::var_os(v).is_some()) {
        return;
    }
    // SAFETY: setting a mimalloc option has no preconditions.
    unsafe { libmimalloc_sys::mi_option_set(libmimalloc_sys::mi_option_large_os_pages, 1) }
}

/// Returns freed memory to the system at once instead of after mimalloc's purge delay (a
/// full second in mimalloc 3): a scan frees the world's YAML trees while it builds the
/// snapshot, and at estate scale the delay keeps about 100 MB of freed pages resident at
/// the peak. The Rust bindings do not name this option; 15 is `mi_option_purge_delay` in
/// both mimalloc 2 and 3, and its default (10 ms in 2, 1000 ms in 3) is checked before it is
/// changed, so another numbering changes nothing.
pub fn purge_freed_memory_promptly() {
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: reading and setting a mimalloc option has no preconditions.
    unsafe {
        if matches!(
            libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
            10 | 1000
        ) {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
    }
}
