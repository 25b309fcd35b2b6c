//! mem::forget of a Box: the block is never freed and nothing points to it: a
//! direct leak.  Its String buffer is reachable only from it: an indirect leak.
#[path = "truth.rs"]
mod truth;

pub struct Record {
    pub id: u64,
    pub label: String,
    pub weight: f64,
}

#[inline(never)]
fn make(id: u64) -> Box<Record> {
    Box::new(Record { id, label: format!("record number {id} with a long label"), weight: id as f64 * 0.5 })
}

#[inline(never)]
fn forget_one(id: u64) -> u64 {
    let r = make(id);
    let sum = r.id + r.label.len() as u64 + r.weight as u64;
    truth::leak(&*r as *const Record, "direct");
    truth::leak(r.label.as_ptr(), "indirect");
    std::mem::forget(r);
    sum
}

#[inline(never)]
fn drop_one(id: u64) -> u64 {
    let r = make(id);
    r.id + r.label.len() as u64
}

fn main() {
    let a = forget_one(std::hint::black_box(7));
    let b = drop_one(std::hint::black_box(8));
    println!("forgot a record ({a}), dropped one ({b})");
}
