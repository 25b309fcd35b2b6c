//! truth.rs — how a Rust corpus program tells the test the right answer, in the
//! same format as tests/leak_corpus/truth.h: on stderr, one line per object,
//! `truth leak <addr> <size> <direct|indirect>` for an object the program leaks,
//! `truth kept <addr>` for one that stays reachable.  SIZE is glibc's
//! malloc_usable_size (what the heap walker reports).  std only, no crates.
//! Included by each program with `#[path = "truth.rs"] mod truth;`.
#![allow(dead_code)]

use std::ffi::c_void;

extern "C" {
    fn malloc_usable_size(ptr: *mut c_void) -> usize;
}

/// Report `p` (the start of a heap block) as leaked: `how` is "direct" or "indirect".
pub fn leak<T: ?Sized>(p: *const T, how: &str) {
    let p = p as *const u8 as *mut c_void;
    let size = unsafe { malloc_usable_size(p) };
    eprintln!("truth leak {:p} {} {}", p, size, how);
}

/// Report `p` (the start of a heap block) as reachable at exit.
pub fn kept<T: ?Sized>(p: *const T) {
    eprintln!("truth kept {:p}", p as *const u8);
}
