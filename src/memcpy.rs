//! `memcpy` for the static musl binary.
//!
//! musl's x86_64 `memcpy` is `rep movsq` with byte loops before and after. `rep movs` has a
//! start-up cost of tens of cycles, and the byte loops cost a few more per byte, which is
//! fine for the large copies it was written for and slow for the small ones a proxy makes
//! (about a hundred per request, 47 instructions on average, headers and buffer splits):
//! 17 % of the watchdog's user time in http mode went there (`perf`, docs/performance.md).
//!
//! This one copies up to 64 bytes with two to four overlapping loads and stores, up to
//! 2 KiB in 32-byte steps, and leaves larger copies to `rep movsb`, which current x86
//! cores run at full speed. It is written in assembly so that the compiler cannot turn it
//! back into a call to itself.
//!
//! It is always assembled as `fwatchdog_memcpy` on x86_64 (the tests call it there with
//! either libc); only the musl build also exports it as `memcpy`, which the linker then
//! takes instead of libc.a's. The glibc build keeps glibc's, which is already fast.

#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".globl fwatchdog_memcpy",
    ".type fwatchdog_memcpy,@function",
    ".p2align 4",
    "fwatchdog_memcpy:",
    "    mov rax, rdi",
    "    cmp rdx, 16",
    "    ja 3f",
    "    cmp rdx, 8",
    "    jb 1f",
    // 8..=16 bytes: the first and the last eight, overlapping in the middle.
    "    mov rcx, [rsi]",
    "    mov r8, [rsi + rdx - 8]",
    "    mov [rdi], rcx",
    "    mov [rdi + rdx - 8], r8",
    "    ret",
    "1:",
    "    cmp rdx, 4",
    "    jb 2f",
    // 4..=7 bytes
    "    mov ecx, [rsi]",
    "    mov r8d, [rsi + rdx - 4]",
    "    mov [rdi], ecx",
    "    mov [rdi + rdx - 4], r8d",
    "    ret",
    "2:",
    "    test rdx, rdx",
    "    jz 9f",
    // 1..=3 bytes: the first, the middle and the last (some of them the same byte).
    "    mov r9, rdx",
    "    shr r9, 1",
    "    movzx ecx, byte ptr [rsi]",
    "    movzx r8d, byte ptr [rsi + rdx - 1]",
    "    movzx r10d, byte ptr [rsi + r9]",
    "    mov [rdi], cl",
    "    mov [rdi + r9], r10b",
    "    mov [rdi + rdx - 1], r8b",
    "9:",
    "    ret",
    "3:",
    "    cmp rdx, 32",
    "    ja 4f",
    // 17..=32 bytes
    "    movups xmm0, [rsi]",
    "    movups xmm1, [rsi + rdx - 16]",
    "    movups [rdi], xmm0",
    "    movups [rdi + rdx - 16], xmm1",
    "    ret",
    "4:",
    "    cmp rdx, 64",
    "    ja 5f",
    // 33..=64 bytes
    "    movups xmm0, [rsi]",
    "    movups xmm1, [rsi + 16]",
    "    movups xmm2, [rsi + rdx - 32]",
    "    movups xmm3, [rsi + rdx - 16]",
    "    movups [rdi], xmm0",
    "    movups [rdi + 16], xmm1",
    "    movups [rdi + rdx - 32], xmm2",
    "    movups [rdi + rdx - 16], xmm3",
    "    ret",
    "5:",
    "    cmp rdx, 2048",
    "    jae 7f",
    // 65..2047 bytes: 32 at a time while more than 32 are left, then the last 32 (which
    // may overlap bytes already copied, with the same values).
    "    movups xmm2, [rsi + rdx - 32]",
    "    movups xmm3, [rsi + rdx - 16]",
    "    lea r8, [rdi + rdx - 32]",
    "6:",
    "    movups xmm0, [rsi]",
    "    movups xmm1, [rsi + 16]",
    "    movups [rdi], xmm0",
    "    movups [rdi + 16], xmm1",
    "    add rsi, 32",
    "    add rdi, 32",
    "    sub rdx, 32",
    "    cmp rdx, 32",
    "    ja 6b",
    "    movups [r8], xmm2",
    "    movups [r8 + 16], xmm3",
    "    ret",
    "7:",
    "    mov rcx, rdx",
    "    rep movsb",
    "    ret",
    ".size fwatchdog_memcpy, . - fwatchdog_memcpy",
);

// musl's `memmove` jumps to `__memcpy_fwd` (defined beside its `memcpy`) when a forward
// copy is safe, that is when `dst` is below `src` or the regions do not overlap. This copy
// is safe there too: every path loads a block before storing it, the last 32 bytes of the
// loop's range are loaded first, and `rep movsb` is a forward copy by definition. Both
// names have to be defined here, or the linker takes libc.a's memcpy object for the one
// and then finds `memcpy` twice.
#[cfg(all(target_arch = "x86_64", target_env = "musl"))]
std::arch::global_asm!(
    ".globl memcpy",
    ".type memcpy,@function",
    ".set memcpy, fwatchdog_memcpy",
    ".globl __memcpy_fwd",
    ".hidden __memcpy_fwd",
    ".type __memcpy_fwd,@function",
    ".set __memcpy_fwd, fwatchdog_memcpy",
);

#[cfg(target_arch = "x86_64")]
extern "C" {
    /// The copy above, under its own name: `memcpy(dst, src, n)`, regions not overlapping.
    pub fn fwatchdog_memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8;
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::fwatchdog_memcpy;
    use proptest::prelude::*;

    /// Copies `n` bytes from `src[so..]` to `dst[d_off..]` and checks every byte of `dst`:
    /// the copied range equals the source, nothing around it was touched.
    fn check(n: usize, so: usize, d_off: usize) {
        let src: Vec<u8> = (0..n + so + 64).map(|i| (i * 7 + 3) as u8).collect();
        let mut dst = vec![0xAAu8; n + d_off + 64];
        // SAFETY: both ranges are in bounds and in different allocations.
        let ret = unsafe { fwatchdog_memcpy(dst.as_mut_ptr().add(d_off), src.as_ptr().add(so), n) };
        assert_eq!(ret, dst.as_mut_ptr().wrapping_add(d_off));
        assert!(dst[..d_off].iter().all(|&b| b == 0xAA), "before, n={n}");
        assert_eq!(
            &dst[d_off..d_off + n],
            &src[so..so + n],
            "n={n} so={so} do={d_off}"
        );
        assert!(dst[d_off + n..].iter().all(|&b| b == 0xAA), "after, n={n}");
    }

    #[test]
    fn every_size_up_to_past_the_rep_threshold_at_every_alignment() {
        for n in 0..2200 {
            for (so, d_off) in [(0, 0), (1, 0), (0, 3), (7, 9), (15, 1)] {
                check(n, so, d_off);
            }
        }
        for n in [4095, 4096, 65_536, 100_003] {
            check(n, 5, 11);
        }
    }

    /// What musl's `memmove` relies on (`__memcpy_fwd`): with `dst` below `src` the regions
    /// may overlap, and the result is still the source as it was.
    fn check_forward_overlap(n: usize, shift: usize) {
        let orig: Vec<u8> = (0..n + shift).map(|i| (i * 13 + 1) as u8).collect();
        let mut buf = orig.clone();
        // SAFETY: both ranges lie inside `buf`; dst is below src, as __memcpy_fwd is used.
        unsafe { fwatchdog_memcpy(buf.as_mut_ptr(), buf.as_ptr().add(shift), n) };
        assert_eq!(&buf[..n], &orig[shift..shift + n], "n={n} shift={shift}");
    }

    #[test]
    fn a_forward_overlapping_copy_is_a_move() {
        for n in 0..2200 {
            for shift in [1, 2, 7, 16, 31, 33, 100] {
                check_forward_overlap(n, shift);
            }
        }
        check_forward_overlap(100_000, 3);
    }

    proptest! {
        #[test]
        fn copies_exactly_the_bytes_asked_for(n in 0usize..5000, so in 0usize..64, d_off in 0usize..64) {
            check(n, so, d_off);
        }

        #[test]
        fn moves_down_over_itself(n in 0usize..5000, shift in 1usize..200) {
            check_forward_overlap(n, shift);
        }
    }
}
