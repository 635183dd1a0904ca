//! `set_flush_denormal` on the CPU kernels: off at the start, then on and off again, seen from
//! the calling thread, rayon's workers, the `gemm` matmul and a thread started later. A process
//! of its own, because the switch changes every thread's arithmetic.

use earthmover_kernels::cpu::denormals::{flush_denormal, is_supported, set_flush_denormal};
use earthmover_kernels::cpu::PARALLEL_THRESHOLD;
use earthmover_kernels::{BinaryOp, ConvGeometry, MatmulProblem, Storage};

/// Half the smallest normal f32: a denormal, and the product of two normal numbers.
const HALF_MIN_F32: f32 = f32::MIN_POSITIVE / 2.0;

/// What each CPU dispatch makes of denormals: `tiny * 0.5` elementwise, on a buffer large
/// enough for rayon's workers and on one small enough for the calling thread alone; `tiny + 0`,
/// which only denormals-are-zero (or aarch64's FZ) flushes; the same in f64; a matmul and a
/// convolution whose products are denormal.
///
/// Each result is read as its values' bits with the sign cleared: on a thread that flushes, a
/// float comparison or conversion would read a kept denormal as zero too.
fn results() -> Vec<(&'static str, Vec<u64>)> {
    let f32_bits = |s: Storage| {
        s.to_f32_vec()
            .iter()
            .map(|v| u64::from(v.to_bits() & !(1 << 31)))
            .collect()
    };
    let f64_bits = |s: Storage| s.to_f64_vec().iter().map(|v| v.to_bits() & !(1 << 63)).collect();
    let halve = |len: usize| {
        let tiny = Storage::from_f32(vec![f32::MIN_POSITIVE; len]);
        let half = Storage::from_f32(vec![0.5; len]);
        f32_bits(tiny.binary(BinaryOp::Mul, &[len], &half, &[len], &[len]))
    };
    let large = 4 * PARALLEL_THRESHOLD + 3;
    let denormal = Storage::from_f32(vec![HALF_MIN_F32; 5]);
    let zeros = Storage::from_f32(vec![0.0; 5]);
    let tiny64 = Storage::from_f64(vec![f64::MIN_POSITIVE; 7]);
    let half64 = Storage::from_f64(vec![0.5; 7]);
    // 2^-70 * 2^-70 summed 96 times: 96 * 2^-140, a denormal f32.
    let (m, n, k) = (65, 67, 96);
    let a = Storage::from_f32(vec![2f32.powi(-70); m * k]);
    let b = Storage::from_f32(vec![2f32.powi(-70); k * n]);
    let g = ConvGeometry::conv2d([2, 3, 9, 9], [4, 3, 3, 3], (1, 1), (1, 1), (1, 1)).unwrap();
    let x = Storage::from_f32(vec![2f32.powi(-70); 2 * 3 * 9 * 9]);
    let w = Storage::from_f32(vec![2f32.powi(-70); 4 * 3 * 3 * 3]);
    vec![
        ("f32 mul on rayon's workers", halve(large)),
        ("f32 mul on the calling thread", halve(5)),
        (
            "f32 denormal + 0",
            f32_bits(denormal.binary(BinaryOp::Add, &[5], &zeros, &[5], &[5])),
        ),
        (
            "f64 mul",
            f64_bits(tiny64.binary(BinaryOp::Mul, &[7], &half64, &[7], &[7])),
        ),
        ("f32 matmul", f32_bits(a.matmul(&b, &MatmulProblem::plain(m, n, k)))),
        ("f32 conv2d", f32_bits(x.conv2d_forward(&w, None, None, &g))),
    ]
}

/// Whether every value of every result is zero (flushed) or every one is a nonzero denormal
/// (kept); anything else fails with the result's name.
fn all_flushed(results: &[(&'static str, Vec<u64>)]) -> bool {
    let flushed: Vec<bool> = results
        .iter()
        .map(|(name, values)| {
            let zeros = values.iter().filter(|bits| **bits == 0).count();
            assert!(
                zeros == 0 || zeros == values.len(),
                "{name}: {zeros} of {} values flushed",
                values.len()
            );
            zeros > 0
        })
        .collect();
    assert!(
        flushed.iter().all(|f| *f == flushed[0]),
        "some results flushed and some not: {:?}",
        results.iter().map(|(n, _)| n).zip(&flushed).collect::<Vec<_>>()
    );
    flushed[0]
}

/// A thread started before any switch (threads inherit their creator's register on Linux, so
/// one started later would prove nothing) that runs [`results`] whenever asked.
struct OlderThread {
    ask: std::sync::mpsc::Sender<()>,
    answer: std::sync::mpsc::Receiver<bool>,
}

impl OlderThread {
    fn start() -> OlderThread {
        let (ask, asked) = std::sync::mpsc::channel::<()>();
        let (tell, answer) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for () in asked {
                tell.send(all_flushed(&results())).unwrap();
            }
        });
        OlderThread { ask, answer }
    }

    fn all_flushed(&self) -> bool {
        self.ask.send(()).unwrap();
        self.answer.recv().expect("the older thread's results failed")
    }
}

#[test]
fn denormals_are_kept_then_flushed_then_kept_on_every_thread() {
    let older = OlderThread::start();
    assert!(!flush_denormal(), "a library keeps denormals unless asked");
    assert!(!all_flushed(&results()), "kept at the start");
    assert!(!older.all_flushed());
    if !is_supported() {
        assert!(!set_flush_denormal(true));
        println!("skipped: this processor has no flush-to-zero switch here");
        return;
    }

    assert!(set_flush_denormal(true));
    assert!(flush_denormal());
    assert!(
        all_flushed(&results()),
        "flushed on the thread that asked and on the workers"
    );
    assert!(
        older.all_flushed(),
        "another thread follows the switch from its next op"
    );

    assert!(set_flush_denormal(false));
    assert!(!flush_denormal());
    assert!(!all_flushed(&results()), "kept again");
    assert!(!older.all_flushed());
}
