// unwind_rust: Rust std threads parked in std::thread::sleep and on a Mutex.
// Prints "ready <pid>" once both workers are parked (the main thread joins).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

// An opaque value (instead of std::hint::black_box, which is inline asm and
// makes the MappedTrace pass skip the function): keeps the recursion a recursion.
static OPAQUE: AtomicU64 = AtomicU64::new(1);

fn opaque(v: u64) -> u64 {
    OPAQUE.fetch_add(v, Ordering::Relaxed)
}

#[inline(never)]
fn sleeper(n: u32, acc: u64) -> u64 {
    if n == 0 {
        loop {
            thread::sleep(Duration::from_secs(1000));
        }
    }
    let a2 = opaque(acc * 3 + n as u64);
    sleeper(n - 1, a2) * 3 + a2
}

#[inline(never)]
fn waiter(n: u32, m: &Mutex<u64>, b: &Barrier) -> u64 {
    if n == 0 {
        b.wait();
        let g = m.lock().unwrap();
        return *g;
    }
    let v = opaque(n as u64);
    waiter(n - 1, m, b) * 3 + v
}

fn main() {
    let m = Arc::new(Mutex::new(7u64));
    let b = Arc::new(Barrier::new(3));
    let guard = m.lock().unwrap();
    let (m2, b2) = (m.clone(), b.clone());
    let w = thread::spawn(move || waiter(4, &m2, &b2));
    let b3 = b.clone();
    let s = thread::spawn(move || {
        b3.wait();
        sleeper(3, 1)
    });
    b.wait();
    println!("ready {}", std::process::id());
    let r = w.join().unwrap() + s.join().unwrap();
    drop(guard);
    println!("{}", r);
}
