//! Times one benchmark workload (see `benches/workloads.rs`) in its own process and prints
//! one JSON line: step times, throughput unit, trainable parameters and peak RSS. The
//! autodidact half of `scripts/bench-vs-pytorch.sh`.
//!
//! ```text
//! cargo run --release --example bench_workload -- --workload mlm-small --threads 2
//! ```

#[path = "../benches/workloads.rs"]
mod workloads;

use anyhow::{Context, Result, bail};
use autodidact::burn::tensor::Device;
use clap::Parser;
use workloads::{Workload, median};

#[derive(Parser)]
struct Args {
    /// mlm-small, mlm-base, simclr-resnet or mae-vit; gemm-peak measures the fp32 GEMM rate.
    #[arg(long)]
    workload: String,
    /// Worker threads (rayon pool used by the CPU backends).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// CPU backend: flex or ndarray.
    #[arg(long, default_value = "flex")]
    backend: String,
}

/// Peak resident set size of this process in MB (`VmHWM`, Linux).
fn peak_rss_mb() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM in /proc/self/status")?;
    let kb: f64 = line.split_whitespace().nth(1).context("malformed VmHWM")?.parse().context("malformed VmHWM")?;
    Ok(kb / 1024.0)
}

fn main() -> Result<()> {
    autodidact::core::alloc::retain_freed_memory();
    let args = Args::parse();
    if args.workload == "gemm-peak" {
        rayon::ThreadPoolBuilder::new().num_threads(args.threads).build_global().context("building the thread pool")?;
        let record = serde_json::json!({"impl": "autodidact", "workload": "gemm-peak", "threads": args.threads, "gflops": workloads::gemm_peak(&Device::flex())});
        println!("{record}");
        return Ok(());
    }
    let Some(workload) = Workload::parse(&args.workload) else {
        bail!("unknown workload {:?}: expected one of {:?}", args.workload, Workload::ALL.map(Workload::name));
    };
    rayon::ThreadPoolBuilder::new().num_threads(args.threads).build_global().context("building the thread pool")?;
    #[allow(deprecated)]
    let device = match args.backend.as_str() {
        "flex" => Device::flex(),
        "ndarray" => Device::ndarray(),
        other => bail!("unknown backend {other:?}: expected flex or ndarray"),
    };
    let times = workloads::run(workload, &device, args.warmup, args.steps);
    let (items, unit) = workload.items_per_step();
    let record = serde_json::json!({
        "impl": "autodidact",
        "version": format!("burn 0.22.1 {}", args.backend),
        "workload": workload.name(),
        "threads": args.threads,
        "step_seconds": times.seconds,
        "median_step_seconds": median(&times.seconds),
        "items_per_step": items,
        "unit": unit,
        "params": times.params,
        "peak_rss_mb": peak_rss_mb()?,
    });
    println!("{record}");
    Ok(())
}
