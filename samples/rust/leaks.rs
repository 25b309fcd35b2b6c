// leaks.rs — Rust sample for MappedTrace: heap structures a tracer must find.
//
//   * a Box-linked list kept in a local across calls (reachable);
//   * an Rc cycle of 2 nodes whose last handles are dropped (leaked);
//   * a Box::leak'ed value stored in a static (reachable from a global);
//   * a Vec forgotten with mem::forget (leaked);
// Build: mappedtrace rustc -O -o leaks samples/rust/leaks.rs ; run: ./leaks
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicPtr, Ordering};

pub struct Node {
    pub value: u64,
    pub next: Option<Box<Node>>,
}

pub struct CycleNode {
    pub id: u32,
    pub other: RefCell<Option<Rc<CycleNode>>>,
}

pub struct Config {
    pub name: String,
    pub values: Vec<u64>,
}

static LEAKED_CONFIG: AtomicPtr<Config> = AtomicPtr::new(std::ptr::null_mut());

#[inline(never)]
fn make_list(n: u64) -> Option<Box<Node>> {
    let mut head: Option<Box<Node>> = None;
    for i in 0..n {
        head = Some(Box::new(Node { value: i, next: head }));
    }
    head
}

#[inline(never)]
fn sum(mut l: &Option<Box<Node>>) -> u64 {
    let mut s = 0;
    while let Some(n) = l {
        s += n.value;
        l = &n.next;
    }
    s
}

#[inline(never)]
fn make_cycle() {
    let a = Rc::new(CycleNode { id: 1, other: RefCell::new(None) });
    let b = Rc::new(CycleNode { id: 2, other: RefCell::new(Some(a.clone())) });
    *a.other.borrow_mut() = Some(b.clone());
    println!("cycle {} <-> {}", a.id, b.id);
}

#[inline(never)]
fn leak_config() {
    let c: &'static mut Config = Box::leak(Box::new(Config {
        name: String::from("leaked into a static"),
        values: (0..8).collect(),
    }));
    LEAKED_CONFIG.store(c, Ordering::SeqCst);
}

#[inline(never)]
fn forget_vec() {
    let v: Vec<u64> = (0..100).collect();
    println!("forgetting a vec of {}", v.len());
    std::mem::forget(v);
}

fn main() {
    let list = make_list(10);
    make_cycle();
    leak_config();
    forget_vec();
    let c = unsafe { &*LEAKED_CONFIG.load(Ordering::SeqCst) };
    println!("list sum {}, config {} ({} values)", sum(&list), c.name, c.values.len());
}
