//! An Rc cycle: a -> b -> c -> a, the last outside handles dropped.  The three
//! RcBox blocks are unreachable; the cycle's entry is reported direct, the other
//! two indirect (DESIGN.md: "the entry of an unreachable cycle").  Which member
//! is the entry is the analysis' choice, so the test compares the kinds as
//! counts for this program (1 direct, 2 indirect) and the addresses exactly.
//! Each node also owns a Vec buffer, reachable only through the cycle: indirect.
#[path = "truth.rs"]
mod truth;

use std::cell::RefCell;
use std::rc::Rc;

pub struct Node {
    pub id: u32,
    pub payload: Vec<u32>,
    pub next: RefCell<Option<Rc<Node>>>,
}

#[inline(never)]
fn node(id: u32) -> Rc<Node> {
    Rc::new(Node { id, payload: (0..id * 4 + 4).collect(), next: RefCell::new(None) })
}

/// The RcBox allocation behind an Rc (strong and weak counts come first).
fn block(r: &Rc<Node>) -> *const u8 {
    let p = Rc::into_raw(r.clone());
    let data = p as *const u8;
    // SAFETY: undo the into_raw above.
    unsafe { drop(Rc::from_raw(p)) };
    // RcBox<T> { strong: Cell<usize>, weak: Cell<usize>, value: T }: the value
    // sits 16 bytes in for a T aligned to at most 8.
    unsafe { data.sub(16) }
}

#[inline(never)]
fn make_cycle() -> u32 {
    let a = node(1);
    let b = node(2);
    let c = node(3);
    *a.next.borrow_mut() = Some(b.clone());
    *b.next.borrow_mut() = Some(c.clone());
    *c.next.borrow_mut() = Some(a.clone());
    for n in [&a, &b, &c] {
        // one of the three is the entry (direct), the others indirect: "cycle"
        truth::leak(block(n), "cycle");
        truth::leak(n.payload.as_ptr(), "indirect");
    }
    a.id + b.id + c.id
}

#[inline(never)]
fn make_tree() -> u32 {
    // not a cycle: freed when the handles drop
    let a = node(10);
    *a.next.borrow_mut() = Some(node(11));
    a.id
}

fn main() {
    let s = make_cycle() + make_tree();
    println!("cycle ids sum {s}");
}
