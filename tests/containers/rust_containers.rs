//! rust_containers.rs — a live Rust heap of std containers whose buffers the
//! tracer must name from their holders (issue #14): a growing `Vec<Node>`
//! (each node owning a `String` and a `Vec<u32>`), a `HashMap<String, Vec<u8>>`
//! and an `Rc` cycle, all held by one boxed `State` that `main` keeps.
//!
//! It prints the truth on stdout, then "ready", and waits until stdin closes:
//!
//!   truth vec ADDR LEN CAP          the Vec<Node>'s buffer
//!   truth name ADDR LEN CAP         a node's String buffer (one line per node)
//!   truth tags ADDR LEN CAP         a node's Vec<u32> buffer (one line per node)
//!   truth map ITEMS                 entries of the HashMap (each: a String key, a Vec<u8> value)
//!   truth rc ADDR                   an RcInner of the cycle (two lines)
//!   truth slice ADDR LEN            the Box<[u64]>'s buffer
//!   truth arc ADDR                  the ArcInner of the Arc<Vec<u16>>, and its Vec's buffer
//!   truth queue LEN                 strings in the VecDeque<String> (each with its buffer)
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::rc::Rc;
use std::sync::Arc;

pub struct Node {
    pub id: u64,
    pub name: String,
    pub tags: Vec<u32>,
}

pub struct Ring {
    pub id: u64,
    pub next: RefCell<Option<Rc<Ring>>>,
}

pub struct State {
    pub nodes: Vec<Node>,
    pub map: HashMap<String, Vec<u8>>,
    pub ring: Rc<Ring>,
    pub slice: Box<[u64]>,
    pub shared: Arc<Vec<u16>>,
    pub queue: VecDeque<String>,
}

#[inline(never)]
fn build(n: u64, m: u64) -> Box<State> {
    let mut nodes = Vec::new();
    for i in 0..n {
        // grows: the buffer is reallocated on the way (capacity 4, 8, …)
        nodes.push(Node { id: i, name: format!("node number {i:04} of the vector"),
                          tags: (0..(i as u32 % 3 + 1) * 4).collect() });
    }
    let mut map = HashMap::new();
    for k in 0..m {
        map.insert(format!("key {k:03} of the table, long enough"), vec![k as u8; 40 + k as usize]);
    }
    let a = Rc::new(Ring { id: 1, next: RefCell::new(None) });
    let b = Rc::new(Ring { id: 2, next: RefCell::new(Some(a.clone())) });
    *a.next.borrow_mut() = Some(b.clone());
    let slice: Box<[u64]> = (0..n * 3).collect::<Vec<u64>>().into_boxed_slice();
    let shared = Arc::new((0..40u16).collect::<Vec<u16>>());
    // a ring whose head has moved: 6 pushed, 3 popped from the front, 6 more pushed
    let mut queue = VecDeque::with_capacity(8);
    for k in 0..6 {
        queue.push_back(format!("queued string {k:02} of the deque"));
    }
    for _ in 0..3 {
        queue.pop_front();
    }
    for k in 6..12 {
        queue.push_back(format!("queued string {k:02} of the deque"));
    }
    Box::new(State { nodes, map, ring: a, slice, shared, queue })
}

fn rc_block<T>(r: &Rc<T>) -> *const u8 {
    // RcInner<T> { strong, weak, value }: the value sits 16 bytes in
    unsafe { (Rc::as_ptr(r) as *const u8).sub(16) }
}

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let st = std::hint::black_box(build(n, 6));
    println!("truth vec {:p} {} {}", st.nodes.as_ptr(), st.nodes.len(), st.nodes.capacity());
    for x in &st.nodes {
        println!("truth name {:p} {} {}", x.name.as_ptr(), x.name.len(), x.name.capacity());
        println!("truth tags {:p} {} {}", x.tags.as_ptr(), x.tags.len(), x.tags.capacity());
    }
    println!("truth map {}", st.map.len());
    println!("truth rc {:p}", rc_block(&st.ring));
    if let Some(b) = st.ring.next.borrow().as_ref() {
        println!("truth rc {:p}", rc_block(b));
    }
    println!("truth slice {:p} {}", st.slice.as_ptr(), st.slice.len());
    println!("truth queue {}", st.queue.len());
    // ArcInner<T> { strong, weak, data }: the data sits 16 bytes in
    println!("truth arc {:p} {:p}", unsafe { (Arc::as_ptr(&st.shared) as *const u8).sub(16) }, st.shared.as_ptr());
    println!("ready");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    let total: u64 = st.nodes.iter().map(|x| x.id + x.tags.len() as u64).sum::<u64>() + st.map.len() as u64;
    println!("done {} {}", total, std::hint::black_box(&st).ring.id);
}
