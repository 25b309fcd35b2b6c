// where.rs — Rust twin of tests/pass_inputs/where.c: hold() prints the
// addresses of three heap objects it keeps across the call to pause_here();
// a debugger stopped in pause_here() must find them in hold()'s record.
use std::hint::black_box;
use std::io::Write;

pub struct Node {
    pub v: u64,
    pub next: Option<Box<Node>>,
}

#[inline(never)]
#[no_mangle]
pub extern "C" fn pause_here(i: u64) {
    static SINK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    SINK.fetch_add(i, std::sync::atomic::Ordering::Relaxed);
}

#[inline(never)]
#[no_mangle]
pub extern "Rust" fn hold(n: u64) -> u64 {
    let a = Box::new(Node { v: n, next: None });
    let b = Box::new(Node { v: n + 1, next: None });
    let c: Vec<u64> = (0..n + 4).collect();
    println!("a={:p} b={:p} c={:p}", &*a, &*b, c.as_ptr());
    std::io::stdout().flush().unwrap();
    pause_here(n);
    let r = black_box(&a).v + black_box(&b).v + black_box(&c).iter().sum::<u64>();
    r
}

fn main() {
    let n = std::env::args().count() as u64;
    println!("{}", hold(n));
}
