//! `alexvgg tune`: the fastest kernel for each convolution on this machine, recorded for the CPU
//! engine ([`alexvgg_cpu::tune`], [`alexvgg_inference::tuning`]).

use alexvgg_cpu::Simd;
use alexvgg_cpu::simd::Kernel;
use alexvgg_cpu::tune::{
    Tuning, conv_keys, elementwise_levels, fastest, measure, measure_elementwise,
};
use alexvgg_inference::device::make_device;
use alexvgg_inference::tuning;
use alexvgg_models::NetworkShape;
use anyhow::{Result, bail};
use clap::Args;

use super::ModelArgs;

/// Most timed runs per kernel and batch size.
const MAX_ITERS: usize = 1000;

/// Time every kernel that can compute each convolution of a network, at batch 1 and batch 8 on
/// this machine, and record the fastest for the CPU engine (`tuning.txt` in the cache).
#[derive(Args)]
pub struct TuneArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Timed runs per kernel and batch size (the median counts), at most 1000.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Print the measurements without recording them.
    #[arg(long)]
    dry_run: bool,
}

/// Runs `alexvgg tune`.
pub fn run(a: TuneArgs) -> Result<()> {
    let arch = a.model.arch()?;
    if a.iters == 0 || a.iters > MAX_ITERS {
        bail!("--iters {} is out of range: 1 to {MAX_ITERS}", a.iters);
    }
    let (_, device) = make_device(Some("cpu"))?;
    let side = arch.input_size();
    let model = arch.init(&NetworkShape::default(), &device)?;
    let rows = model.layers([3, side, side])?;
    let simd = Simd::current();
    let machine = Tuning::machine_of(simd);
    let mut table = match tuning::read() {
        Ok(Some(t)) if t.machine == machine => t,
        Ok(Some(t)) => {
            eprintln!("replacing the table measured on {}", t.machine);
            Tuning::new(machine.clone())
        }
        Ok(None) => Tuning::new(machine.clone()),
        Err(e) => {
            eprintln!("warning: replacing the unreadable tuning table {e}");
            Tuning::new(machine.clone())
        }
    };
    outln!("{}", alexvgg_cpu::CpuInfo::detect());
    outln!(
        "{}: median ms of {} runs per kernel (* fastest)",
        arch.describe(),
        a.iters
    );
    outln!(
        "{:<9} {:<32} {:<22} {:>10} {:>10}",
        "layer",
        "shape",
        "kernel",
        "batch 1",
        "batch 8"
    );
    let mut done = Vec::new();
    for (layer, key) in conv_keys(&rows, 3) {
        if done.contains(&key) {
            outln!("{layer:<9} {key:<32} (as above)");
            continue;
        }
        let timings = measure(&key, simd, a.iters);
        let Some(choice) = fastest(&timings) else {
            continue;
        };
        for (i, t) in timings.iter().enumerate() {
            let mark = |on: bool| if on { "*" } else { " " };
            outln!(
                "{:<9} {:<32} {:<22} {:>9.2}{} {:>9.2}{}",
                if i == 0 { layer.as_str() } else { "" },
                if i == 0 {
                    key.to_string()
                } else {
                    String::new()
                },
                t.kernel.name(),
                t.batch1_ms,
                mark(t.kernel == choice.few),
                t.batch8_ms,
                mark(t.kernel == choice.many)
            );
        }
        table.entries.insert(key.clone(), choice);
        done.push(key);
    }
    // The element-wise kernels' level, where the CPU offers two, in the network as tuned so far.
    if elementwise_levels(simd).is_empty() {
        outln!(
            "element-wise kernels: {} (no other level on this CPU)",
            simd.for_kernel(Kernel::Elementwise)
        );
    } else {
        let timings = measure_elementwise(&model, &table, a.iters)?;
        let best = timings
            .iter()
            .min_by(|x, y| x.1.total_cmp(&y.1))
            .map(|t| t.0);
        let cells: Vec<String> = timings
            .iter()
            .map(|(level, ms)| {
                let mark = if Some(*level) == best { "*" } else { "" };
                format!("{level} {ms:.2} ms{mark}")
            })
            .collect();
        outln!(
            "element-wise kernels (Winograd transforms, LRN, max pool), whole network at batch 8: {}",
            cells.join(", ")
        );
        table.elementwise = best;
    }
    if a.dry_run {
        outln!("(--dry-run: nothing recorded)");
        return Ok(());
    }
    let path = tuning::save(&table).map_err(|e| anyhow::anyhow!("writing the tuning table {e}"))?;
    outln!(
        "recorded {} convolution shapes for {machine} in {}; the CPU engine uses them \
         ({}=off: its fixed rules)",
        table.entries.len(),
        path.display(),
        tuning::TUNING_ENV
    );
    Ok(())
}
