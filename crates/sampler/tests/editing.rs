//! The editing functions on the bundled trained model
//! (`assets/models/digits`: 28x28 grey digits, class-conditional with the
//! null label 10, v-prediction, cosine schedule) and real digits from the
//! bundled data set. Run with `--nocapture` to see the measured numbers.

use std::path::PathBuf;

use data_pipeline::source::SourceSpec;
use sampler::pipeline::scheduler_config_for;
use sampler::{
    by_name, ddim_invert, denoise, edit, estimate_noise_sigma, inpaint, inversion_ddim, sample,
    Cond, Conditioning, Denoiser, RePaint, ReplayNoise, SolverOptions, SOLVER_NAMES,
};
use schedule::SchedulerConfig;
use tch::{Device, Kind, Tensor};
use tensor::image::{load_image, save_image, BitDepth};
use unet::UNet;

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/models/digits")
}

struct Fixture {
    unet: UNet,
    config: SchedulerConfig,
}

impl Fixture {
    fn new() -> Self {
        let dir = model_dir();
        Fixture {
            unet: UNet::load(&dir, Device::Cpu).unwrap(),
            config: scheduler_config_for(&dir).unwrap(),
        }
    }

    fn model(&self) -> &dyn Denoiser {
        &self.unet
    }
}

/// Bundled digits `[N, 1, 28, 28]` in [-1, 1] (index 500 k + i is of class k).
fn digits(indices: &[usize]) -> Tensor {
    let set = "digits"
        .parse::<SourceSpec>()
        .unwrap()
        .open(&Default::default())
        .unwrap();
    let images: Vec<Tensor> = indices
        .iter()
        .map(|&i| tensor::image::image_to_tensor(&set.image(i).unwrap()))
        .collect();
    Tensor::stack(&images, 0)
}

fn labels(values: &[i64]) -> Tensor {
    Tensor::from_slice(values)
}

/// Mean squared error in [0, 1] pixel units.
fn mse(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a.clamp(-1.0, 1.0) - b.clamp(-1.0, 1.0)) / 2.0;
    d.square().mean(Kind::Double).double_value(&[])
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).norm().double_value(&[]) / b.norm().double_value(&[])
}

#[test]
fn edit_strength_0_is_the_input_and_strength_1_is_plain_sampling() {
    let f = Fixture::new();
    let model = f.model();
    let x0 = digits(&[1507, 4007]);
    let l = labels(&[8, 1]);
    let cond = Conditioning::from(Cond::labels(l));
    tch::manual_seed(0);
    let noise = Tensor::randn([2, 1, 28, 28], (Kind::Float, Device::Cpu));
    let draws = Tensor::randn([40, 2, 1, 28, 28], (Kind::Float, Device::Cpu));
    for name in SOLVER_NAMES {
        let mut solver = by_name(name, &f.config, 8, &SolverOptions::default()).unwrap();
        let mut rng = ReplayNoise::new(&draws);
        let same = edit(
            model,
            solver.as_mut(),
            &x0,
            0.0,
            &noise,
            &cond,
            &mut rng,
            &mut |_| {},
        )
        .unwrap();
        assert!(same.equal(&x0), "{name}: strength 0 changed the image");
        let mut evals = 0;
        let edited = edit(
            model,
            solver.as_mut(),
            &x0,
            1.0,
            &noise,
            &cond,
            &mut ReplayNoise::new(&draws),
            &mut |_| evals += 1,
        )
        .unwrap();
        assert_eq!(evals, solver.timesteps().len(), "{name}");
        let plain = sample(
            model,
            solver.as_mut(),
            &noise,
            &cond,
            &mut ReplayNoise::new(&draws),
            &mut |_| {},
        )
        .unwrap();
        let diff = (&edited - &plain).abs().max().double_value(&[]);
        eprintln!("{name}: strength 1 vs plain sampling, max |difference| {diff:e}");
        assert!(diff <= 1e-6, "{name}: {diff}");
    }
}

#[test]
fn a_weak_edit_stays_closer_to_the_input_than_a_strong_one() {
    let f = Fixture::new();
    let model = f.model();
    let x0 = digits(&[7, 2507]);
    let l = labels(&[10, 10]);
    let cond = Conditioning::from(Cond::labels(l));
    tch::manual_seed(1);
    let noise = Tensor::randn([2, 1, 28, 28], (Kind::Float, Device::Cpu));
    let mut errors = Vec::new();
    for strength in [0.3, 1.0] {
        let mut solver = by_name("ddim", &f.config, 20, &SolverOptions::default()).unwrap();
        let out = edit(
            model,
            solver.as_mut(),
            &x0,
            strength,
            &noise,
            &cond,
            &mut sampler::TorchRng,
            &mut |_| {},
        )
        .unwrap();
        errors.push(mse(&out, &x0));
    }
    eprintln!(
        "edit MSE to the input: strength 0.3 {:.5}, strength 1 {:.5}",
        errors[0], errors[1]
    );
    assert!(errors[0] < errors[1] / 2.0, "{errors:?}");
}

#[test]
fn inpainting_keeps_the_known_region() {
    let f = Fixture::new();
    let model = f.model();
    let x0 = digits(&[7, 3007]);
    let l = labels(&[10, 10]);
    let cond = Conditioning::from(Cond::labels(l));
    // Fill the right half.
    let fill = Tensor::zeros([1, 1, 28, 28], (Kind::Float, Device::Cpu));
    let _ = fill.narrow(3, 14, 14).fill_(1.0);
    let repaint = RePaint::new(&f.config, 20, 5, 2, 1.0).unwrap();
    tensor::seed::seed_everything(2);
    let out = inpaint(
        model,
        &repaint,
        &x0,
        &fill,
        &cond,
        &mut sampler::TorchRng,
        &mut |_| {},
    )
    .unwrap();
    let known = fill.ones_like() - &fill;
    let exact = ((&out - &x0) * &known).abs().max().double_value(&[]);
    assert_eq!(exact, 0.0);
    // After quantisation to 8 bits, in [0, 1] pixel units.
    let dir = tempfile::tempdir().unwrap();
    for i in 0..2 {
        let path = dir.path().join(format!("{i}.png"));
        save_image(&path, &out.get(i), BitDepth::Eight).unwrap();
        let back = load_image(&path).unwrap();
        let diff = ((back - x0.get(i)) * known.get(0))
            .abs()
            .max()
            .double_value(&[])
            / 2.0;
        assert!(diff <= 1.0 / 255.0, "image {i}: {diff}");
    }
    let filled = (&out * &fill).abs().sum(Kind::Double).double_value(&[]);
    assert!(filled > 0.0 && out.isfinite().all().int64_value(&[]) == 1);
    eprintln!(
        "inpainting ({} model evaluations): known region exact; MSE of the filled half to the truth {:.4}",
        repaint.model_evaluations(),
        mse(&(&out * &fill), &(&x0 * &fill)) * 2.0
    );
}

#[test]
fn denoising_lowers_the_error_to_the_clean_image() {
    let f = Fixture::new();
    let model = f.model();
    let x0 = digits(&[7, 1007, 2007, 4507]);
    let l = labels(&[10; 4]);
    let cond = Conditioning::from(Cond::labels(l));
    let sigma = 0.2;
    tch::manual_seed(3);
    // sigma in [0, 1] pixel units is 2 sigma in the model's [-1, 1].
    let noisy = &x0 + Tensor::randn([4, 1, 28, 28], (Kind::Float, Device::Cpu)) * (2.0 * sigma);
    let estimate = estimate_noise_sigma(&noisy).unwrap();
    let done = denoise(model, &f.config, &noisy, sigma, 50, &cond, &mut |_| {}).unwrap();
    let (before, after) = (mse(&noisy, &x0), mse(&done.images, &x0));
    eprintln!(
        "denoise sigma {sigma}: timestep {} ({} DDIM steps), MSE {before:.5} -> {after:.5}; \
         estimated sigma {estimate:.4}",
        done.timestep, done.steps
    );
    assert!(after < before / 2.0, "{before} -> {after}");
    assert!((estimate - sigma).abs() < 0.15 * sigma, "{estimate}");
    // The same noise clipped to [0, 1] and quantised to 8 bits, as in a PNG.
    let png = ((noisy.clamp(-1.0, 1.0) + 1.0) * 127.5).round() / 127.5 - 1.0;
    let done = denoise(model, &f.config, &png, sigma, 50, &cond, &mut |_| {}).unwrap();
    let (before, after) = (mse(&png, &x0), mse(&done.images, &x0));
    eprintln!("denoise sigma {sigma}, clipped 8-bit input: MSE {before:.5} -> {after:.5}");
    assert!(after < before, "{before} -> {after}");
}

#[test]
fn ddim_inversion_then_sampling_reconstructs() {
    let f = Fixture::new();
    let model = f.model();
    let x0 = digits(&[7, 3507]);
    let l = labels(&[10, 10]);
    let cond = Conditioning::from(Cond::labels(l));
    for (refine, bound) in [(0, 5e-2), (1, 1e-2)] {
        let mut ddim = inversion_ddim(&f.config, 50).unwrap();
        let x_t = ddim_invert(model, &mut ddim, &x0, &cond, refine, &mut |_, _| {}).unwrap();
        let back = sample(
            model,
            &mut ddim,
            &x_t,
            &cond,
            &mut sampler::TorchRng,
            &mut |_| {},
        )
        .unwrap();
        let err = rel_l2(&back, &x0);
        let std = x_t.std(true).double_value(&[]);
        eprintln!(
            "DDIM inversion, 50 steps, {refine} refinement(s): relative L2 of the reconstruction \
             {err:.4} (x_T std {std:.3})"
        );
        assert!(err <= bound, "refine {refine}: {err}");
    }
}
