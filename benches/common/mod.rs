//! What every CPU benchmark prints first: the machine it ran on and what it can do at best.

use earthmover::kernels::cpu::simd::{active_path, fma_peak_gflops, SimdPath};

/// The processor's model name (`lscpu`'s "Model name") with its family and model numbers (a
/// virtual machine often hides the name: "Intel(R) Xeon(R) Processor"), or what the platform
/// calls it.
pub fn cpu_model() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        cpuinfo
            .lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_string())
    };
    match (field("model name"), field("cpu family"), field("model")) {
        (Some(name), Some(family), Some(model)) => format!("{name} (family {family}, model {model})"),
        (Some(name), _, _) => name,
        _ => format!("unknown {} processor", std::env::consts::ARCH),
    }
}

/// The FMA peak of `path` on 1 thread and on `threads`, in GFLOP/s.
pub struct Peak {
    pub one: f64,
    pub all: f64,
}

/// Print the CPU model, the SIMD path in use (and the ones this processor has), the thread
/// count and the measured FMA peak of the path on one thread and on all; return the peak.
pub fn print_machine(threads: usize) -> Peak {
    let path = active_path();
    let setting =
        std::env::var("EARTHMOVER_SIMD").map_or("widest supported".to_string(), |v| format!("EARTHMOVER_SIMD={v}"));
    let supported: Vec<&str> = SimdPath::supported().iter().map(|p| p.name()).collect();
    println!("cpu: {}", cpu_model());
    println!(
        "simd path: {path} ({setting}; this processor has {})",
        supported.join(", ")
    );
    let peak = Peak {
        one: fma_peak_gflops(path, 1),
        all: fma_peak_gflops(path, threads),
    };
    println!(
        "FMA peak of the {path} path: {:.1} GFLOP/s on 1 thread, {:.1} on {threads}",
        peak.one, peak.all
    );
    peak
}
