// diff_rust.rs — Rust sample for the LLDB differential test of the maps
// (tests/test_differential_lldb.py).  A comment "MT-LIVE: a b" on a line with
// calls names variables holding pointers (references, raw pointers, Box)
// that are used after every call on that line: the maps must hold them.
// Build: mappedtrace rustc -C opt-level=2 -g -o diff_rust samples/diff_rust.rs
use std::hint::black_box;

pub struct Node {
    pub value: u64,
    pub next: Option<Box<Node>>,
}

#[inline(never)]
fn touch<T: ?Sized>(p: &T) {
    black_box(p);
}

#[inline(never)]
fn make(value: u64, next: Option<Box<Node>>) -> Box<Node> {
    Box::new(Node { value, next })
}

#[inline(never)]
fn length(mut l: &Node) -> u64 {
    let mut n = 1;
    while let Some(x) = &l.next {
        n += 1;
        l = x;
    }
    n
}

#[inline(never)]
fn sum_raw(p: *const Node, q: *const Node) -> u64 {
    let a = length(unsafe { &*p }); /* MT-LIVE: p q */
    let b = length(unsafe { &*q });
    a + b + unsafe { (*p).value + (*q).value }
}

fn main() {
    let keep: Box<Node> = make(1, None);
    let list = make(2, Some(make(3, None))); /* MT-LIVE: keep */
    let n = length(&list); /* MT-LIVE: keep list */
    let total = sum_raw(&*list, &*keep); /* MT-LIVE: keep list */
    let r: &Node = &list;
    touch(&n); /* MT-LIVE: keep list r */
    println!("{} {} {}", n, total, r.value); /* MT-LIVE: keep list */
    touch(&*keep);
    touch(&*list);
}
