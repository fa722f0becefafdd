//! [`by_name`]: a [`Solver`] from its name, a diffusers scheduler config and
//! the run-time [`SolverOptions`], as a `Box<dyn Solver>`; [`name_for_class`]
//! and [`default_for_config`]: the solver of a diffusers scheduler class.

use schedule::SchedulerConfig;

use crate::ddim::{Ddim, DdimOptions};
use crate::ddpm::Ddpm;
use crate::dpm_solver::{DpmSolverMultistep, DpmSolverOptions};
use crate::error::{Error, Result};
use crate::euler::{Euler, EulerOptions};
use crate::euler_ancestral::EulerAncestral;
use crate::heun::{Heun, HeunOptions};
use crate::pndm::{Pndm, PndmOptions};
use crate::solver::Solver;

/// The solver names [`by_name`] accepts.
pub const SOLVER_NAMES: &[&str] = &[
    "ddpm", "ddim", "dpm++2m", "euler", "euler-a", "heun", "pndm",
];

/// The diffusers scheduler classes with a solver here, and its name.
const CLASSES: &[(&str, &str)] = &[
    ("DDPMScheduler", "ddpm"),
    ("DDIMScheduler", "ddim"),
    ("DPMSolverMultistepScheduler", "dpm++2m"),
    ("EulerDiscreteScheduler", "euler"),
    ("EulerAncestralDiscreteScheduler", "euler-a"),
    ("HeunDiscreteScheduler", "heun"),
    ("PNDMScheduler", "pndm"),
];

/// The solver (one of [`SOLVER_NAMES`]) that implements the diffusers
/// scheduler class `class_name` (`PNDMScheduler` -> `pndm`,
/// `DDIMScheduler` -> `ddim`, ...), `None` for a class without one.
pub fn name_for_class(class_name: &str) -> Option<&'static str> {
    CLASSES
        .iter()
        .find(|(class, _)| *class == class_name)
        .map(|&(_, name)| name)
}

/// The solver a scheduler config was saved for: [`name_for_class`] of its
/// `_class_name`; `None` when the key is missing or names a class without
/// a solver here.
pub fn default_for_config(config: &SchedulerConfig) -> Option<&'static str> {
    config
        .extra
        .get("_class_name")
        .and_then(|v| v.as_str())
        .and_then(name_for_class)
}

/// Run-time choices that are not in a scheduler config. The solvers' config
/// options are typed too ([`DdimOptions`], [`DpmSolverOptions`],
/// [`EulerOptions`], [`HeunOptions`]); build a solver from them with its
/// `with_options`.
#[derive(Debug, Clone, Default)]
pub struct SolverOptions {
    /// DDIM's eta (0: deterministic DDIM, 1: DDPM-like); only `ddim` takes
    /// a non-zero value.
    pub eta: f64,
    /// Overrides the config's `use_karras_sigmas` (`dpm++2m`, `euler`,
    /// `heun`): `Some(true)` turns Karras sigmas on, `Some(false)` off.
    pub use_karras_sigmas: Option<bool>,
}

/// Builds the solver `name` (see [`SOLVER_NAMES`]) for `steps` inference
/// steps from a diffusers scheduler config. `plms` is `pndm` with
/// `skip_prk_steps` on whatever the config says (PNDM's linear multistep
/// part alone, as Stable Diffusion runs it).
pub fn by_name(
    name: &str,
    config: &SchedulerConfig,
    steps: usize,
    options: &SolverOptions,
) -> Result<Box<dyn Solver>> {
    let canonical = match name.trim().to_ascii_lowercase().as_str() {
        "ddpm" => "ddpm",
        "ddim" => "ddim",
        "dpm++2m" | "dpm++" | "dpmsolver++" | "dpm-solver++" => "dpm++2m",
        "euler" => "euler",
        "euler-a" | "euler_a" | "euler-ancestral" => "euler-a",
        "heun" => "heun",
        "pndm" => "pndm",
        "plms" => "plms",
        _ => {
            return Err(Error::UnknownSolver {
                name: name.to_string(),
                valid: SOLVER_NAMES.join(", "),
            })
        }
    };
    if options.eta != 0.0 && canonical != "ddim" {
        return Err(Error::Unsupported(format!(
            "eta {} applies to the ddim sampler only, not {canonical}",
            options.eta
        )));
    }
    if options.use_karras_sigmas == Some(true) && !matches!(canonical, "dpm++2m" | "euler" | "heun")
    {
        return Err(Error::Unsupported(format!(
            "Karras sigmas apply to dpm++2m, euler and heun, not {canonical}"
        )));
    }
    let karras = options.use_karras_sigmas;
    Ok(match canonical {
        "ddpm" => Box::new(Ddpm::new(config, steps)?),
        "ddim" => {
            let ddim = DdimOptions {
                eta: options.eta,
                ..DdimOptions::from_config(config)?
            };
            Box::new(Ddim::with_options(config, steps, ddim)?)
        }
        "dpm++2m" => {
            let mut dpm = DpmSolverOptions::from_config(config)?;
            dpm.sigma_spacing = dpm.sigma_spacing.with_karras(karras);
            Box::new(DpmSolverMultistep::with_options(config, steps, dpm)?)
        }
        "euler" => {
            let mut euler = EulerOptions::from_config(config)?;
            euler.sigma_spacing = euler.sigma_spacing.with_karras(karras);
            Box::new(Euler::with_options(config, steps, euler)?)
        }
        "euler-a" => Box::new(EulerAncestral::new(config, steps)?),
        "pndm" => Box::new(Pndm::new(config, steps)?),
        "plms" => {
            let plms = PndmOptions {
                skip_prk_steps: true,
                ..PndmOptions::from_config(config)?
            };
            Box::new(Pndm::with_options(config, steps, plms)?)
        }
        _ => {
            let mut heun = HeunOptions::from_config(config)?;
            heun.sigma_spacing = heun.sigma_spacing.with_karras(karras);
            Box::new(Heun::with_options(config, steps, heun)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor};

    use super::*;
    use crate::solver::StepIndex;

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let cfg = SchedulerConfig::ddpm();
        let e = by_name("lms", &cfg, 10, &SolverOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"lms\"") && e.contains("ddpm, ddim, dpm++2m, euler, euler-a, heun, pndm"),
            "{e}"
        );
        for name in SOLVER_NAMES {
            let s = by_name(name, &cfg, 10, &SolverOptions::default()).unwrap();
            assert_eq!(s.name(), *name);
        }
    }

    #[test]
    fn plms_is_pndm_without_runge_kutta_steps() {
        let cfg = SchedulerConfig::ddpm();
        let opts = SolverOptions::default();
        let pndm = by_name("PNDM", &cfg, 10, &opts).unwrap();
        let plms = by_name("plms", &cfg, 10, &opts).unwrap();
        assert_eq!((pndm.name(), plms.name()), ("pndm", "pndm"));
        assert_eq!(pndm.timesteps().len(), 19);
        assert_eq!(plms.timesteps().len(), 11);
        assert_eq!(crate::solver::inference_steps(plms.as_ref()), 10);
    }

    #[test]
    fn scheduler_classes_name_their_solver() {
        for (class, name) in [
            ("PNDMScheduler", "pndm"),
            ("DDIMScheduler", "ddim"),
            ("DPMSolverMultistepScheduler", "dpm++2m"),
            ("EulerDiscreteScheduler", "euler"),
            ("EulerAncestralDiscreteScheduler", "euler-a"),
            ("HeunDiscreteScheduler", "heun"),
            ("DDPMScheduler", "ddpm"),
        ] {
            assert_eq!(name_for_class(class), Some(name));
            let cfg = SchedulerConfig::from_json_str(&format!(r#"{{"_class_name": "{class}"}}"#))
                .unwrap();
            assert_eq!(default_for_config(&cfg), Some(name));
        }
        for (_, name) in CLASSES {
            assert!(SOLVER_NAMES.contains(name), "{name}");
        }
        assert_eq!(name_for_class("LMSDiscreteScheduler"), None);
        assert_eq!(default_for_config(&SchedulerConfig::ddpm()), None);
    }

    #[test]
    fn steps_are_checked() {
        let cfg = SchedulerConfig::ddpm();
        for name in SOLVER_NAMES {
            let e = by_name(name, &cfg, 1001, &SolverOptions::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("1001") && e.contains("1000"), "{name}: {e}");
            assert!(by_name(name, &cfg, 0, &SolverOptions::default()).is_err());
        }
        let eta = SolverOptions {
            eta: 0.5,
            ..Default::default()
        };
        assert!(by_name("euler", &cfg, 10, &eta).is_err());
        assert!(by_name("ddim", &cfg, 10, &eta).is_ok());
    }

    /// A key the file did not have, assigned in code, is what every solver
    /// uses: with `prediction_type` set to `sample`, x̂_0 is the model output.
    #[test]
    fn keys_assigned_in_code_are_used() {
        let mut cfg = SchedulerConfig::from_json_str("{}").unwrap();
        cfg.prediction_type = Some(schedule::PredictionType::Sample);
        for name in SOLVER_NAMES {
            if *name == "pndm" {
                // diffusers' PNDM takes epsilon and v only, and says so.
                let e = by_name(name, &cfg, 5, &SolverOptions::default()).unwrap_err();
                assert!(e.to_string().contains("prediction_type"), "{e}");
                continue;
            }
            let mut s = by_name(name, &cfg, 5, &SolverOptions::default()).unwrap();
            let x = Tensor::randn([2, 1, 3, 3], (Kind::Float, Device::Cpu));
            let out = x.tanh() * 0.5;
            let step = s
                .step(&out, StepIndex::Batch(0), &x, &mut crate::noise::TorchRng)
                .unwrap();
            assert_eq!(step.pred_original_sample, out, "{name}");
        }
    }

    /// A run with per-sample positions (all equal) is the batch run, for
    /// every solver, the multistep and two-stage ones included.
    #[test]
    fn per_sample_positions_agree_with_batch_positions() {
        let cfg = SchedulerConfig::ddpm();
        for name in SOLVER_NAMES {
            let mut runs = Vec::new();
            for per_sample in [false, true] {
                let mut s = by_name(name, &cfg, 6, &SolverOptions::default()).unwrap();
                tensor::seed::seed_everything(5);
                let mut x = Tensor::randn([2, 1, 3, 3], (Kind::Float, Device::Cpu));
                for i in 0..s.timesteps().len() {
                    let both = [i, i];
                    let at = if per_sample {
                        StepIndex::PerSample(&both)
                    } else {
                        StepIndex::Batch(i)
                    };
                    let input = s.scale_model_input(&x, at).unwrap();
                    let out = input.tanh() * 0.5;
                    x = s
                        .step(&out, at, &x, &mut crate::noise::TorchRng)
                        .unwrap()
                        .prev_sample;
                }
                runs.push(x);
            }
            let diff = (&runs[0] - &runs[1]).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "{name}: {diff}");
        }
    }

    #[test]
    fn euler_per_sample_positions_are_independent() {
        let cfg = SchedulerConfig::ddpm();
        let mut s = by_name("euler", &cfg, 10, &SolverOptions::default()).unwrap();
        let x = Tensor::randn([2, 1, 3, 3], (Kind::Float, Device::Cpu));
        let out = x.tanh();
        let both = s
            .step(
                &out,
                StepIndex::PerSample(&[1, 8]),
                &x,
                &mut crate::noise::TorchRng,
            )
            .unwrap()
            .prev_sample;
        for (k, i) in [(0, 1), (1, 8)] {
            let one = s
                .step(
                    &out.narrow(0, k, 1),
                    StepIndex::Batch(i),
                    &x.narrow(0, k, 1),
                    &mut crate::noise::TorchRng,
                )
                .unwrap()
                .prev_sample;
            let diff = (one - both.narrow(0, k, 1)).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "sample {k}: {diff}");
        }
        let e = s
            .step(
                &out,
                StepIndex::PerSample(&[1]),
                &x,
                &mut crate::noise::TorchRng,
            )
            .unwrap_err();
        assert!(e.to_string().contains("batch of 2"), "{e}");
    }
}
