//! A library crate of the workspace with a leak of its own (a forgotten Box
//! whose String buffer hangs off it); prints the truth like tests/leak_corpus_rust.
use std::ffi::c_void;

extern "C" {
    fn malloc_usable_size(ptr: *mut c_void) -> usize;
}

/// Report `p` as leaked ("direct" or "indirect") on stderr.
pub fn truth_leak<T: ?Sized>(p: *const T, how: &str) {
    let p = p as *const u8 as *mut c_void;
    eprintln!("truth leak {:p} {} {}", p, unsafe { malloc_usable_size(p) }, how);
}

pub struct Shelf {
    pub label: String,
    pub items: Vec<u64>,
}

#[inline(never)]
pub fn forget_shelf(n: u64) -> u64 {
    let s = Box::new(Shelf { label: format!("shelf with {n} items, a long label"), items: (0..n).collect() });
    truth_leak(&*s as *const Shelf, "direct");
    truth_leak(s.label.as_ptr(), "indirect");
    truth_leak(s.items.as_ptr(), "indirect");
    let sum = s.items.iter().sum();
    std::mem::forget(s);
    sum
}
