//! A Vec<Box<Item>> forgotten with mem::forget: its buffer is a direct leak and
//! every Box it holds (and each Box's own String buffer) an indirect one.
//! A second vector, kept in a local until main returns, is reachable.
#[path = "truth.rs"]
mod truth;

pub struct Item {
    pub key: u64,
    pub name: String,
}

#[inline(never)]
fn items(n: u64, tag: &str) -> Vec<Box<Item>> {
    (0..n).map(|k| Box::new(Item { key: k, name: format!("{tag} item {k:04}") })).collect()
}

#[inline(never)]
fn forget_them(n: u64) -> u64 {
    let v = items(n, "forgotten");
    let total = v.iter().map(|i| i.key + i.name.len() as u64).sum();
    truth::leak(v.as_ptr(), "direct");
    for i in &v {
        truth::leak(&**i as *const Item, "indirect");
        truth::leak(i.name.as_ptr(), "indirect");
    }
    std::mem::forget(v);
    total
}

fn main() {
    let kept = items(std::hint::black_box(5), "kept");
    truth::kept(kept.as_ptr());
    for i in &kept {
        truth::kept(&**i as *const Item);
    }
    let t = forget_them(std::hint::black_box(6));
    println!("forgot items ({t}), kept {}", kept.iter().map(|i| i.name.len()).sum::<usize>());
}
