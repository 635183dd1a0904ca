//! Denormal (subnormal) floats on the CPU: computed exactly, or flushed to zero for speed.
//!
//! A float smaller in magnitude than the smallest normal number (about 1.2e-38 in f32) is
//! denormal. x86-64 processors compute with denormal inputs or outputs through a microcode
//! assist that costs tens to a hundred cycles per instruction instead of one. A WGAN-GP run
//! meets them more and more as it trains (the default run's iterations slowed from 0.094 s to
//! 0.14 s over 10,000 iterations on the Intel Xeon, and a run resumed from iteration 10,000
//! stayed at the slow pace), and flushing them removed the whole slowdown
//! (docs/benchmarks/intel-xeon-early.md, "Denormals").
//!
//! Flushing sets two bits of each thread's floating-point control register: on x86-64,
//! MXCSR's flush-to-zero (a denormal result becomes 0) and denormals-are-zero (a denormal input
//! is read as 0); on aarch64, FPCR's FZ, which does both. It changes results only where they
//! are below 1.2e-38 in f32 (2.2e-308 in f64), far below anything a network's loss can feel: a
//! 10,000-iteration WGAN-GP run logged the same losses and scores, to the last digit, with and
//! without it. PyTorch calls the same switch `torch.set_flush_denormal`, off by
//! default; so is it here, for a library must not change its caller's arithmetic unasked. The
//! programs of this project turn it on (`EARTHMOVER_FLUSH_DENORMAL=0` keeps denormals).
//!
//! The register belongs to each thread. [`set_flush_denormal`] sets it on the calling thread
//! and on every thread of rayon's global pool (where the kernels run), and records the setting
//! with a generation number; every op dispatched through [`crate::Storage`] first brings its
//! own thread up to date ([`sync_this_thread`]: one relaxed atomic load and a thread-local
//! compare when nothing changed), so ops called from any thread follow the setting. A rayon
//! pool of the caller's own (`ThreadPool::install`) is not reached: call [`set_flush_denormal`]
//! inside it.
//!
//! Rust's documentation calls changing these bits undefined behaviour, because the compiler
//! assumes the default mode: an expression it folds at compile time keeps a denormal that the
//! same expression at run time would flush. No code here depends on denormals being kept, and
//! the kernels' tests run with the default mode; `tests/denormals.rs` checks both modes.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// The process's setting: bit 0 is "flush", the bits above are a generation number that grows
/// with every [`set_flush_denormal`], so a thread can tell whether its register is current.
/// 0 is the start: generation 0, not flushing, which every thread already is.
static SETTING: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// The setting this thread's register was last brought to.
    static APPLIED: Cell<u32> = const { Cell::new(0) };
}

/// Flush denormals to zero on every thread that runs this crate's CPU kernels (`true`), or
/// compute them exactly (`false`, the start). Returns whether this processor can (x86-64 and
/// aarch64 can; elsewhere nothing changes and it returns `false`), like
/// `torch.set_flush_denormal`.
pub fn set_flush_denormal(flush: bool) -> bool {
    if !is_supported() {
        return false;
    }
    // Two callers at once must not interleave their generation and their broadcast.
    static SETTING_CHANGE: Mutex<()> = Mutex::new(());
    let _serial = SETTING_CHANGE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let generation = (SETTING.load(Ordering::Relaxed) >> 1).wrapping_add(1);
    SETTING.store((generation << 1) | flush as u32, Ordering::Relaxed);
    sync_this_thread();
    // Each worker of the global pool runs this once; it waits for all of them.
    rayon::broadcast(|_| sync_this_thread());
    true
}

/// Whether denormals are flushed to zero ([`set_flush_denormal`]).
pub fn flush_denormal() -> bool {
    SETTING.load(Ordering::Relaxed) & 1 == 1
}

/// Whether this processor has a flush-to-zero switch this crate can set.
pub fn is_supported() -> bool {
    cfg!(any(target_arch = "x86_64", target_arch = "aarch64"))
}

/// The setting `EARTHMOVER_FLUSH_DENORMAL` asks for (`1`/`on`/`true` or `0`/`off`/`false`;
/// `default` when it is unset or empty), applied with [`set_flush_denormal`]: returns whether
/// denormals are now flushed, or an error naming a value it does not know. Programs call it at
/// start, like [`super::simd::configured_path`].
pub fn configure_flush_denormal(default: bool) -> Result<bool, String> {
    let flush = match std::env::var("EARTHMOVER_FLUSH_DENORMAL") {
        Ok(value) if !value.trim().is_empty() => parse_switch(&value)
            .ok_or_else(|| format!("EARTHMOVER_FLUSH_DENORMAL={value}: expected 1, on, true, 0, off or false"))?,
        _ => default,
    };
    Ok(set_flush_denormal(flush) && flush)
}

fn parse_switch(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "on" | "true" | "yes" => Some(true),
        "0" | "off" | "false" | "no" => Some(false),
        _ => None,
    }
}

/// Bring this thread's register to the process's setting, if it is not already. Called by
/// every op's dispatch in [`crate::Storage`] before a CPU kernel runs.
#[inline]
pub(crate) fn sync_this_thread() {
    let setting = SETTING.load(Ordering::Relaxed);
    APPLIED.with(|applied| {
        if applied.get() != setting {
            set_thread_flush(setting & 1 == 1);
            applied.set(setting);
        }
    });
}

/// MXCSR's denormals-are-zero (bit 6) and flush-to-zero (bit 15).
#[cfg(target_arch = "x86_64")]
const MXCSR_DAZ_FTZ: u32 = (1 << 6) | (1 << 15);

#[cfg(target_arch = "x86_64")]
fn set_thread_flush(flush: bool) {
    let mut mxcsr: u32 = 0;
    // SAFETY: stmxcsr stores the 4-byte register into `mxcsr`, a live local.
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut mxcsr, options(nostack, preserves_flags)) };
    let mxcsr = if flush {
        mxcsr | MXCSR_DAZ_FTZ
    } else {
        mxcsr & !MXCSR_DAZ_FTZ
    };
    // SAFETY: ldmxcsr loads the register from `mxcsr`; only the two bits above changed (the
    // module's documentation says what that means for the compiler's constant folding).
    unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &mxcsr, options(nostack, preserves_flags, readonly)) };
}

/// FPCR's flush-to-zero (bit 24): denormal inputs and results both become zero.
#[cfg(target_arch = "aarch64")]
const FPCR_FZ: u64 = 1 << 24;

#[cfg(target_arch = "aarch64")]
fn set_thread_flush(flush: bool) {
    let mut fpcr: u64;
    // SAFETY: reading FPCR has no side effect.
    unsafe { std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags)) };
    fpcr = if flush { fpcr | FPCR_FZ } else { fpcr & !FPCR_FZ };
    // SAFETY: only the FZ bit changed (see the module's documentation).
    unsafe { std::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack, preserves_flags)) };
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn set_thread_flush(_flush: bool) {}

#[cfg(test)]
mod tests {
    use super::*;

    // The switch itself is tested in tests/denormals.rs, a process of its own: it changes the
    // arithmetic of every thread, which the other unit tests here must not see.

    #[test]
    fn switch_values_are_read_or_refused() {
        assert_eq!(parse_switch(" ON "), Some(true));
        assert_eq!(parse_switch("0"), Some(false));
        assert_eq!(parse_switch("false"), Some(false));
        assert_eq!(parse_switch("maybe"), None);
    }

    #[test]
    fn denormals_are_kept_until_asked() {
        assert!(!flush_denormal());
        // black_box: computed at run time, by the processor, under this thread's register.
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        assert!(std::hint::black_box(tiny * 0.5) > 0.0);
    }
}
