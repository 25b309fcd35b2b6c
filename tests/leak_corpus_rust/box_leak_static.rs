//! Box::leak kept in a static: reachable from a global at exit, so NOT a leak.
//! Its String and Vec buffers hang off the leaked Box: reachable too.
//! Expected report: no leaks (exit code 0).
#[path = "truth.rs"]
mod truth;

use std::sync::atomic::{AtomicPtr, Ordering};

pub struct Config {
    pub name: String,
    pub values: Vec<u64>,
    pub next: Option<Box<Config>>,
}

static CONFIG: AtomicPtr<Config> = AtomicPtr::new(std::ptr::null_mut());

#[inline(never)]
fn install(n: u64) {
    let inner = Box::new(Config { name: format!("inner {n}"), values: (0..n).collect(), next: None });
    let c: &'static mut Config = Box::leak(Box::new(Config {
        name: format!("config with {n} values"),
        values: (0..n * 2).collect(),
        next: Some(inner),
    }));
    truth::kept(c as *const Config);
    truth::kept(c.name.as_ptr());
    truth::kept(c.values.as_ptr());
    let i = c.next.as_ref().unwrap();
    truth::kept(&**i as *const Config);
    truth::kept(i.name.as_ptr());
    truth::kept(i.values.as_ptr());
    CONFIG.store(c, Ordering::SeqCst);
}

fn main() {
    install(std::hint::black_box(12));
    let c = unsafe { &*CONFIG.load(Ordering::SeqCst) };
    let s: u64 = c.values.iter().sum::<u64>() + c.next.as_ref().map_or(0, |n| n.values.iter().sum());
    println!("{}: sum {}", c.name, s);
}
