//! A counting allocator for the unit tests: the heap bytes the calling thread holds, so a test
//! can measure what a structure keeps whatever other tests run meanwhile. Counts the bytes
//! asked for, not the allocator's own overhead per block.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Allocated minus freed by this thread (a block freed by another thread than the one
    /// that allocated it moves the count of both).
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(bytes: isize) {
    // During thread teardown the slot may be gone: that thread's count no longer matters.
    let _ = LIVE.try_with(|live| live.set(live.get() + bytes));
}

/// Heap bytes this thread allocated and has not freed.
pub fn live_bytes() -> isize {
    LIVE.with(Cell::get)
}

pub struct Counting;

#[global_allocator]
static HEAP: Counting = Counting;

// SAFETY: every call is passed on unchanged to the system allocator, which upholds the
// GlobalAlloc contract; the counting touches only a thread-local Cell (const-initialised, no
// destructor, so it never allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller's layout, as GlobalAlloc::alloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: as for alloc.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: ptr was allocated by this allocator (the system one) with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: the caller's block and layout, as GlobalAlloc::realloc requires.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
