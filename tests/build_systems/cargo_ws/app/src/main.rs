//! The binary crate: leaks one record itself, and one shelf through the
//! `store` path dependency.
pub struct Record {
    pub id: u64,
    pub name: String,
}

#[inline(never)]
fn forget_record(id: u64) -> u64 {
    let r = Box::new(Record { id, name: format!("record {id} of the app crate") });
    store::truth_leak(&*r as *const Record, "direct");
    store::truth_leak(r.name.as_ptr(), "indirect");
    let v = r.id + r.name.len() as u64;
    std::mem::forget(r);
    v
}

fn main() {
    let a = forget_record(std::hint::black_box(3));
    let b = store::forget_shelf(std::hint::black_box(9));
    println!("{a} {b}");
}
