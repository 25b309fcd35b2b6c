// live_leaks.rs — a long-running Rust process with a known leak, for
// `mappedtrace leaks PID` locally and `--remote` (tests/test_remote.py).
//
// Keeps a Vec of boxes (reachable from main's frame), leaks a Box-linked list
// of sessions each owning a Vec buffer, prints "truth leak ADDR" for the list's
// head on stderr, "ready" on stdout, then waits until stdin closes.
// Build: mappedtrace rustc -C opt-level=2 -g -o live_leaks samples/rust/live_leaks.rs
use std::io::{Read, Write};

pub struct Session {
    pub id: u64,
    pub buf: Vec<u8>,
    pub next: Option<Box<Session>>,
}

#[inline(never)]
fn leak_sessions(n: u64) {
    let mut head: Option<Box<Session>> = None;
    for i in 0..n {
        head = Some(Box::new(Session { id: i, buf: vec![i as u8; 100], next: head }));
    }
    let p = Box::into_raw(head.unwrap());
    eprintln!("truth leak {:p}", p);
}

fn main() {
    let kept: Vec<Box<u64>> = (0..8).map(Box::new).collect();
    leak_sessions(5);
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).unwrap();
    println!("{} {}", kept.iter().map(|b| **b).sum::<u64>(), s.len());
}
