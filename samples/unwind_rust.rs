// unwind_rust: Rust std threads parked in std::thread::sleep and on a Mutex.
// Prints "ready <pid>" once both workers are parked (the main thread joins).
use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

#[inline(never)]
fn sleeper(n: u32, acc: u64) -> u64 {
    if n == 0 {
        loop {
            thread::sleep(Duration::from_secs(1000));
        }
    }
    let a2 = black_box(acc * 3 + n as u64);
    sleeper(n - 1, a2) + a2
}

#[inline(never)]
fn waiter(n: u32, m: &Mutex<u64>, b: &Barrier) -> u64 {
    if n == 0 {
        b.wait();
        let g = m.lock().unwrap();
        return *g;
    }
    let v = black_box(n as u64);
    waiter(n - 1, m, b) + v
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
