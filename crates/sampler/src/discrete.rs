//! What the discrete-time solvers (DDPM, DDIM, RePaint) share when built
//! from a scheduler config: the beta tables with their defaults and the
//! integer inference timesteps.

use schedule::{SchedulerConfig, TimestepSpacing};

use crate::error::Result;
use crate::tables::{check_steps, check_timesteps, spaced_timesteps, Tables};

/// What DDIM and DDPM share when built from a config, as diffusers'
/// `from_config` + `set_timesteps(steps)` does for both: the beta tables with
/// their defaults (0.0001 to 0.02, no zero-SNR rescaling) and the integer
/// timesteps (`leading` spacing and offset 0 by default).
pub(crate) fn discrete_setup(config: &SchedulerConfig, steps: usize) -> Result<(Tables, Vec<f64>)> {
    let tables = discrete_tables(config)?;
    let train = tables.num_train_timesteps();
    check_steps(steps, train)?;
    let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Leading);
    let offset = config.steps_offset.unwrap_or(0);
    let timesteps = spaced_timesteps(spacing, train, steps, offset, true);
    check_timesteps(&timesteps, train)?;
    Ok((tables, timesteps))
}

/// The beta tables of DDPM, DDIM and RePaint with their defaults (0.0001 to
/// 0.02, no zero-SNR rescaling).
pub(crate) fn discrete_tables(config: &SchedulerConfig) -> Result<Tables> {
    Tables::new(
        config,
        config.beta_start.unwrap_or(0.0001),
        config.beta_end.unwrap_or(0.02),
        config.rescale_betas_zero_snr.unwrap_or(false),
    )
}
