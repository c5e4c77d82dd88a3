//! The global allocator: the system's, with a small cache of freed blocks on the threads
//! that serve requests (the runtime's one thread in http, static and worker mode, each of
//! its pool's threads in the fork modes, given back when such a thread exits).
//!
//! musl's allocator (mallocng) is compact and returns memory eagerly, which keeps idle RSS
//! low, but each call takes its global lock and walks its metadata, and a size class that
//! goes between zero and a few live blocks maps and unmaps a page over and over. A proxied
//! request allocates and frees the same few dozen blocks every time, so keeping a few freed
//! ones per size for the next request saves most of those calls. Faster general-purpose
//! allocators (mimalloc, jemalloc) keep several megabytes resident after a burst, which the
//! soak test's "back within 10 %" rule does not allow.
//!
//! # Invariants
//!
//! 1. Every block of at most [`MAX_CACHED`] bytes and alignment at most [`MAX_ALIGN`] is
//!    allocated from the system at its class size (the size rounded up to a power of two,
//!    at least 16), on every thread, so any freed block of a class can serve any request of
//!    that class, whichever thread allocated it. Larger or more aligned blocks go to the
//!    system as asked.
//! 2. Only a thread that called [`enable_on_this_thread`] keeps freed blocks, and only that
//!    thread's own list is ever touched, so the lists need no lock. It must call
//!    [`disable_on_this_thread`] before it exits, or live as long as the process: the lists
//!    have no destructor (one would make the first allocation of a thread register it,
//!    which allocates), so a cache left on an exiting thread would leak.
//! 3. A class keeps at most [`BUDGET`] bytes (and at most [`MAX_BLOCKS`] blocks): a thread's
//!    cache can never hold more than about 30 KB.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, UnsafeCell};
use std::ptr;

/// Largest block size the cache keeps.
pub const MAX_CACHED: usize = 16 * 1024;
/// Largest alignment the cache serves (what the system allocator gives every block).
pub const MAX_ALIGN: usize = 16;
/// Bytes a class may keep. 4 KiB saves as many instructions and system calls per proxied
/// request as 16 KiB did (callgrind, `strace -c`), and holds far fewer pages: at 16 KiB a
/// soak's RSS ended 9–11 % over its warm-up figure in http mode, against 0.6 % now (the
/// soak allows 10 %).
pub const BUDGET: usize = 4 * 1024;
/// Blocks a class may keep.
pub const MAX_BLOCKS: usize = 64;

/// Classes 16, 32, ..., 16384 bytes.
const CLASSES: usize = 11;

/// The allocator: [`System`] underneath, see the module's invariants.
pub struct Cached;

/// One class's freed blocks, linked through their first word.
#[derive(Clone, Copy)]
struct FreeList {
    head: *mut u8,
    len: usize,
}

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    static LISTS: UnsafeCell<[FreeList; CLASSES]> =
        const { UnsafeCell::new([FreeList { head: ptr::null_mut(), len: 0 }; CLASSES]) };
}

/// Lets this thread keep freed blocks. A thread that may exit first must call
/// [`disable_on_this_thread`] before it does (invariant 2).
pub fn enable_on_this_thread() {
    ENABLED.with(|e| e.set(true));
}

/// Stops keeping freed blocks on this thread and gives the kept ones back to the system:
/// for a runtime thread that is about to exit (tokio's `on_thread_stop`).
pub fn disable_on_this_thread() {
    // Freeing to the system does not come back through the cache, so `with_lists` holds.
    let _ = with_lists(|lists| {
        for (c, list) in lists.iter_mut().enumerate() {
            while !list.head.is_null() {
                let block = list.head;
                // SAFETY: a cached block holds the next link in its first word, and was
                // allocated by the system at its class size (invariant 1).
                unsafe {
                    list.head = block.cast::<*mut u8>().read();
                    System.dealloc(
                        block,
                        Layout::from_size_align_unchecked(class_size(c), MAX_ALIGN),
                    );
                }
            }
            list.len = 0;
        }
    });
    let _ = ENABLED.try_with(|e| e.set(false));
}

/// The class of a block with this layout, `None` when blocks like it are not cached.
fn class(layout: &Layout) -> Option<usize> {
    if layout.size() > MAX_CACHED || layout.align() > MAX_ALIGN {
        return None;
    }
    let rounded = layout.size().max(16).next_power_of_two();
    Some(rounded.trailing_zeros() as usize - 4)
}

fn class_size(c: usize) -> usize {
    16 << c
}

fn class_capacity(c: usize) -> usize {
    (BUDGET / class_size(c)).min(MAX_BLOCKS)
}

/// The layout the system allocates for `layout` (invariant 1).
fn system_layout(layout: Layout) -> Layout {
    match class(&layout) {
        // Sizes and alignments here are small powers of two: always a valid layout.
        Some(c) => Layout::from_size_align(class_size(c), layout.align()).unwrap_or(layout),
        None => layout,
    }
}

fn enabled() -> bool {
    ENABLED.try_with(|e| e.get()).unwrap_or(false)
}

/// Runs `f` on this thread's lists when it keeps a cache.
fn with_lists<R>(f: impl FnOnce(&mut [FreeList; CLASSES]) -> R) -> Option<R> {
    if !enabled() {
        return None;
    }
    // SAFETY: the lists belong to this thread, nothing else reaches them, and `f` does not
    // allocate (it links and unlinks blocks, or frees them to the system), so this borrow
    // is the only one.
    LISTS.try_with(|l| f(unsafe { &mut *l.get() })).ok()
}

// SAFETY: every block comes from `System` with the layout `system_layout` gives (invariant
// 1), goes back to it with that layout, and in between is either the caller's or linked in
// exactly one list of the one thread that may touch it (invariant 2).
unsafe impl GlobalAlloc for Cached {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(c) = class(&layout) {
            let hit = with_lists(|lists| {
                let list = &mut lists[c];
                let block = list.head;
                if !block.is_null() {
                    // SAFETY: a cached block is at least 16 bytes and holds the next link.
                    list.head = unsafe { block.cast::<*mut u8>().read() };
                    list.len -= 1;
                }
                block
            });
            if let Some(block) = hit.filter(|b| !b.is_null()) {
                return block;
            }
        }
        // SAFETY: a valid, non-zero-sized layout, as the caller promised for `layout`.
        unsafe { System.alloc(system_layout(layout)) }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if let Some(c) = class(&layout) {
            let kept = with_lists(|lists| {
                let list = &mut lists[c];
                if list.len >= class_capacity(c) {
                    return false;
                }
                // SAFETY: the block is ours now and at least 16 bytes (its class size).
                unsafe { block.cast::<*mut u8>().write(list.head) };
                list.head = block;
                list.len += 1;
                true
            });
            if kept == Some(true) {
                return;
            }
        }
        // SAFETY: allocated by the system with this layout (invariant 1).
        unsafe { System.dealloc(block, system_layout(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if class(&layout).is_none() {
            // SAFETY: as for `alloc`.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // SAFETY: as for `alloc`; the block holds at least `layout.size()` bytes.
        unsafe {
            let block = self.alloc(layout);
            if !block.is_null() {
                ptr::write_bytes(block, 0, layout.size());
            }
            block
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = system_layout(layout);
        let Ok(asked) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        let new = system_layout(asked);
        if old.size() == new.size() {
            // Same class: the block already has the room.
            return block;
        }
        // SAFETY: `block` was allocated by the system with `old` (invariant 1), and `new` is
        // what the system must hold for a block of `new_size` bytes.
        unsafe { System.realloc(block, old, new.size()) }
    }
}

#[cfg(test)]
mod tests;
