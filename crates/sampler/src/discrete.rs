//! What the discrete-time solvers (DDPM, DDIM, RePaint) share when built
//! from a scheduler config: the beta tables with their defaults and the
//! integer inference timesteps.

use schedule::{SchedulerConfig, TimestepSpacing};

use crate::error::Result;
use crate::keys::Keys;
use crate::tables::{check_steps, check_timesteps, spaced_timesteps, Tables};

/// What DDIM and DDPM share when built from a config, as diffusers'
/// `from_config` + `set_timesteps(steps)` does for both: the beta tables with
/// their defaults (0.0001 to 0.02, no zero-SNR rescaling) and the integer
/// timesteps (`leading` spacing and offset 0 by default).
pub(crate) fn discrete_setup(
    config: &SchedulerConfig,
    steps: usize,
) -> Result<(Keys<'_>, Tables, Vec<f64>)> {
    let keys = Keys::new(config);
    let tables = discrete_tables(config, keys)?;
    let train = tables.num_train_timesteps();
    check_steps(steps, train)?;
    let spacing = keys.typed(
        "timestep_spacing",
        config.timestep_spacing,
        TimestepSpacing::Leading,
    );
    let offset = keys.typed("steps_offset", config.steps_offset, 0);
    let timesteps = spaced_timesteps(spacing, train, steps, offset, true);
    check_timesteps(&timesteps, train)?;
    Ok((keys, tables, timesteps))
}

/// The beta tables of DDPM, DDIM and RePaint with their defaults (0.0001 to
/// 0.02, no zero-SNR rescaling).
pub(crate) fn discrete_tables(config: &SchedulerConfig, keys: Keys<'_>) -> Result<Tables> {
    Tables::new(
        config,
        keys.typed("beta_start", config.beta_start, 0.0001),
        keys.typed("beta_end", config.beta_end, 0.02),
        keys.typed(
            "rescale_betas_zero_snr",
            config.rescale_betas_zero_snr,
            false,
        ),
    )
}
