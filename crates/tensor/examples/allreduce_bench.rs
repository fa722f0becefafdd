//! Times `ProcessGroup::all_reduce` (Gloo, CPU) on a gradient-sized list of
//! tensors. Run one process per rank with torchrun's variables, e.g.
//!
//! ```sh
//! cargo build --release -p tensor --example allreduce_bench
//! for r in 0 1; do MASTER_ADDR=127.0.0.1 MASTER_PORT=29555 WORLD_SIZE=2 RANK=$r \
//!     target/release/examples/allreduce_bench 1100000 50 & done; wait
//! ```
//!
//! Arguments: number of f32 values (default 1.1 M, the default preset's
//! U-Net) and repetitions (default 50).

use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};
use tensor::distributed::{Backend, ProcessGroup, ReduceOp};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let numel: i64 = args.next().map_or(Ok(1_100_000), |a| a.parse())?;
    let reps: usize = args.next().map_or(Ok(50), |a| a.parse())?;
    let pg = ProcessGroup::from_env(Backend::Gloo, Duration::from_secs(60))?;
    // About 60 tensors, as the parameters of a small U-Net.
    let sizes: Vec<i64> = (0..60)
        .map(|i| numel / 60 + i64::from(i == 0) * (numel % 60))
        .collect();
    let grads: Vec<Tensor> = sizes
        .iter()
        .map(|&n| Tensor::ones([n], (Kind::Float, Device::Cpu)))
        .collect();
    pg.all_reduce(&grads, ReduceOp::Avg)?; // warm-up: connections, buffers
    pg.barrier()?;
    let t0 = Instant::now();
    for _ in 0..reps {
        pg.all_reduce(&grads, ReduceOp::Avg)?;
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3 / reps as f64;
    println!(
        "rank {} of {}: all_reduce of {numel} f32 in {} tensors: {ms:.2} ms",
        pg.rank(),
        pg.world_size(),
        grads.len()
    );
    Ok(())
}
