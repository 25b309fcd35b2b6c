//! A program that frees everything it allocates (Box, Vec, String, HashMap,
//! Rc without cycles, a Weak back-pointer): zero reports expected.
#[path = "truth.rs"]
mod truth;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

struct Parent {
    name: String,
    children: RefCell<Vec<Rc<Child>>>,
}

struct Child {
    id: u32,
    parent: RefCell<Weak<Parent>>,
}

#[inline(never)]
fn work(n: u32) -> usize {
    let mut map: HashMap<String, Vec<u32>> = HashMap::new();
    for i in 0..n {
        map.entry(format!("key{}", i % 7)).or_default().push(i);
    }
    let p = Rc::new(Parent { name: String::from("parent"), children: RefCell::new(Vec::new()) });
    for id in 0..n {
        let c = Rc::new(Child { id, parent: RefCell::new(Weak::new()) });
        *c.parent.borrow_mut() = Rc::downgrade(&p);
        p.children.borrow_mut().push(c);
    }
    let ids: u32 = p.children.borrow().iter().map(|c| c.id + c.parent.borrow().upgrade().map_or(0, |_| 1)).sum();
    let list: Option<Box<(u32, Option<Box<(u32, Option<Box<u32>>)>>)>> =
        Some(Box::new((1, Some(Box::new((2, Some(Box::new(3))))))));
    map.len() + p.name.len() + ids as usize + list.map_or(0, |b| b.0 as usize)
}

fn main() {
    let r = work(std::hint::black_box(40));
    println!("work {r}");
}
