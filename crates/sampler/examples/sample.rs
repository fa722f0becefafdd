//! Sample 16 digits from the bundled model with a chosen solver and save
//! them as a grid, using the `sampler` library alone.
//!
//! ```text
//! cargo run -p sampler --example sample -- [SOLVER] [STEPS] [OUT.png]
//! cargo run -p sampler --example sample -- dpm++2m 20 grid.png
//! ```

use sampler::{by_name, sample, Conditioning, Pipeline, SolverOptions, TorchRng};
use tch::{Device, Kind, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let solver_name = args.next().unwrap_or_else(|| "dpm++2m".into());
    let steps: usize = args.next().map_or(Ok(20), |s| s.parse())?;
    let out = args.next().unwrap_or_else(|| "grid.png".into());

    // A diffusers pipeline folder: U-Net, scheduler config and run.json.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/models/digits");
    let pipe = Pipeline::open(dir)?;
    let unet = pipe.load_unet(Device::Cpu)?;
    let mut solver = by_name(
        &solver_name,
        &pipe.scheduler,
        steps,
        &SolverOptions::default(),
    )?;

    // 16 images, digits 0..9 cycling, guided (scale 2) away from the null label.
    tch::manual_seed(0);
    let x_t = Tensor::randn([16, 1, 28, 28], (Kind::Float, Device::Cpu));
    let labels = Tensor::arange(16, (Kind::Int64, Device::Cpu)).remainder(10);
    let cond = Conditioning::class(Some(labels), 2.0, pipe.null_label(unet.config()))?;
    let images = sample(
        &unet,
        solver.as_mut(),
        &x_t,
        &cond,
        &mut TorchRng,
        &mut |_| {},
    )?;

    tensor::image::save_grid(&out, &images.clamp(-1.0, 1.0), 4)?;
    println!("{solver_name}, {steps} steps: wrote {out}");
    Ok(())
}
