use super::*;
use proptest::prelude::*;

/// A live block in the tests: where, its layout, and the byte it was filled with.
struct Live {
    ptr: *mut u8,
    layout: Layout,
    fill: u8,
}

fn fill(b: &Live) {
    // SAFETY: the block holds layout.size() bytes.
    unsafe { ptr::write_bytes(b.ptr, b.fill, b.layout.size()) };
}

fn intact(b: &Live, len: usize) -> bool {
    // SAFETY: as in `fill`, for the first `len <= size` bytes.
    let s = unsafe { std::slice::from_raw_parts(b.ptr, len) };
    s.iter().all(|&x| x == b.fill)
}

#[derive(Debug, Clone)]
enum Op {
    Alloc {
        size: usize,
        align_log: u32,
        zeroed: bool,
    },
    Free(usize),
    Realloc(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..20_000, 0u32..7, any::<bool>())
            .prop_map(|(size, align_log, zeroed)| Op::Alloc { size, align_log, zeroed }),
        3 => any::<usize>().prop_map(Op::Free),
        2 => (any::<usize>(), 1usize..20_000).prop_map(|(i, n)| Op::Realloc(i, n)),
    ]
}

/// Runs `ops` against the allocator and checks, after every step, that no live block was
/// written by another (each holds its own byte) and that realloc kept the contents.
fn run(ops: &[Op]) {
    let a = Cached;
    let mut live: Vec<Live> = Vec::new();
    let mut next = 1u8;
    for op in ops {
        match *op {
            Op::Alloc {
                size,
                align_log,
                zeroed,
            } => {
                let layout = Layout::from_size_align(size, 1 << align_log).unwrap();
                // SAFETY: a non-zero size.
                let p = unsafe {
                    if zeroed {
                        a.alloc_zeroed(layout)
                    } else {
                        a.alloc(layout)
                    }
                };
                assert!(!p.is_null());
                assert_eq!(p as usize % layout.align(), 0, "aligned");
                if zeroed {
                    // SAFETY: size bytes were just allocated.
                    let s = unsafe { std::slice::from_raw_parts(p, size) };
                    assert!(s.iter().all(|&x| x == 0), "zeroed");
                }
                let b = Live {
                    ptr: p,
                    layout,
                    fill: next,
                };
                next = next.wrapping_add(1).max(1);
                fill(&b);
                live.push(b);
            }
            Op::Free(i) if !live.is_empty() => {
                let b = live.swap_remove(i % live.len());
                assert!(intact(&b, b.layout.size()));
                // SAFETY: allocated above with this layout.
                unsafe { a.dealloc(b.ptr, b.layout) };
            }
            Op::Realloc(i, n) if !live.is_empty() => {
                let k = i % live.len();
                let b = &mut live[k];
                assert!(intact(b, b.layout.size()));
                // SAFETY: allocated above with this layout; n is non-zero.
                let p = unsafe { a.realloc(b.ptr, b.layout, n) };
                assert!(!p.is_null());
                let kept = b.layout.size().min(n);
                b.ptr = p;
                b.layout = Layout::from_size_align(n, b.layout.align()).unwrap();
                assert!(intact(b, kept), "realloc kept the contents");
                fill(b);
            }
            _ => {}
        }
        for b in &live {
            assert!(
                intact(b, b.layout.size().min(64)),
                "a live block was overwritten"
            );
        }
    }
    for b in &live {
        assert!(intact(b, b.layout.size()));
    }
    for b in live {
        // SAFETY: allocated above with this layout.
        unsafe { a.dealloc(b.ptr, b.layout) };
    }
}

fn on_a_caching_thread(ops: Vec<Op>) {
    std::thread::spawn(move || {
        enable_on_this_thread();
        run(&ops);
        disable_on_this_thread();
        assert_eq!(kept_here(), 0);
    })
    .join()
    .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn blocks_never_overlap_and_keep_their_contents(ops in proptest::collection::vec(op(), 1..400)) {
        on_a_caching_thread(ops.clone());
        // Without the cache too: the class rounding alone.
        run(&ops);
    }
}

#[test]
fn classes_are_powers_of_two_from_16_and_stop_at_the_limits() {
    let l = |size, align| Layout::from_size_align(size, align).unwrap();
    assert_eq!(class(&l(1, 1)), Some(0));
    assert_eq!(class(&l(16, 8)), Some(0));
    assert_eq!(class(&l(17, 8)), Some(1));
    assert_eq!(class(&l(4096, 16)), Some(8));
    assert_eq!(class(&l(MAX_CACHED, 16)), Some(CLASSES - 1));
    assert_eq!(class(&l(MAX_CACHED + 1, 16)), None);
    assert_eq!(
        class(&l(64, 32)),
        None,
        "over-aligned blocks are not cached"
    );
    assert_eq!(class_size(CLASSES - 1), MAX_CACHED);
}

#[test]
fn a_class_keeps_no_more_than_its_budget() {
    std::thread::spawn(|| {
        enable_on_this_thread();
        let a = Cached;
        for size in [24, 300, 2000, 5000, 16_000] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            // SAFETY: non-zero sizes; each block freed once with its layout.
            let blocks: Vec<*mut u8> = (0..200).map(|_| unsafe { a.alloc(layout) }).collect();
            for b in blocks {
                // SAFETY: blocks allocated by `Cached` with this layout, each used once.
                unsafe { a.dealloc(b, layout) };
            }
            let c = class(&layout).unwrap();
            let (len, bytes) = LISTS.with(|l| {
                // SAFETY: this thread's lists, no other borrow alive.
                let list = unsafe { (*l.get())[c] };
                (list.len, list.len * class_size(c))
            });
            assert!(
                len <= MAX_BLOCKS && bytes <= BUDGET,
                "size {size}: {len} blocks kept"
            );
            // Classes up to the budget keep some; larger ones keep none.
            assert_eq!(len > 0, class_size(c) <= BUDGET, "size {size}: {len} kept");
        }
        disable_on_this_thread();
    })
    .join()
    .unwrap();
}

/// Blocks in this thread's lists, over every class.
fn kept_here() -> usize {
    // SAFETY: this thread's lists, no other borrow alive.
    LISTS.with(|l| unsafe { (*l.get()).iter().map(|list| list.len).sum() })
}

#[test]
fn a_thread_that_stops_caching_gives_every_block_back_and_keeps_none_after() {
    std::thread::spawn(|| {
        enable_on_this_thread();
        let a = Cached;
        let layouts: Vec<Layout> = [16, 100, 3000, 16_000]
            .iter()
            .map(|&s| Layout::from_size_align(s, 8).unwrap())
            .collect();
        let free_some = || {
            for layout in &layouts {
                // SAFETY: a non-zero size; every block is freed once, with its layout.
                let blocks: Vec<*mut u8> = (0..8).map(|_| unsafe { a.alloc(*layout) }).collect();
                for b in blocks {
                    // SAFETY: allocated just above with this layout.
                    unsafe { a.dealloc(b, *layout) };
                }
            }
        };
        free_some();
        assert!(kept_here() > 0, "freed blocks are kept while caching");
        disable_on_this_thread();
        assert_eq!(kept_here(), 0, "every kept block went back");
        free_some();
        assert_eq!(kept_here(), 0, "nothing is kept once off");
        // Harmless twice (tokio may stop a thread that never started caching).
        disable_on_this_thread();
    })
    .join()
    .unwrap();
}

#[test]
fn blocks_may_be_freed_on_another_thread_in_either_direction() {
    let layout = Layout::from_size_align(100, 8).unwrap();
    let a = Cached;
    // Allocated on a thread without the cache, freed (and kept) on one with it, and then
    // served again there.
    let plain: Vec<usize> = std::thread::spawn(move || {
        (0..32)
            // SAFETY: a non-zero size; every block is freed once, with its layout.
            .map(|_| unsafe { a.alloc(layout) } as usize)
            .collect()
    })
    .join()
    .unwrap();
    let cached: Vec<usize> = std::thread::spawn(move || {
        enable_on_this_thread();
        let a = Cached;
        for &p in &plain {
            // SAFETY: blocks allocated by `Cached` with this layout, each used once.
            unsafe { a.dealloc(p as *mut u8, layout) };
        }
        let again: Vec<usize> = (0..64)
            // SAFETY: a non-zero size; every block is freed once, with its layout.
            .map(|_| unsafe { a.alloc(layout) } as usize)
            .collect();
        for &p in &again {
            // SAFETY: each holds the class size, 128 bytes.
            unsafe { ptr::write_bytes(p as *mut u8, 0x5A, 128) };
        }
        again
    })
    .join()
    .unwrap();
    // And freed on a thread without the cache.
    std::thread::spawn(move || {
        let a = Cached;
        for p in cached {
            // SAFETY: blocks allocated by `Cached` with this layout, each used once.
            unsafe { a.dealloc(p as *mut u8, layout) };
        }
    })
    .join()
    .unwrap();
}
