//! [`SchedulerConfig`]: diffusers' `scheduler_config.json`, field for field.
//!
//! The field names are diffusers' keys and the defaults are those of
//! diffusers' `DDPMScheduler`, so a file that diffusers wrote (any scheduler
//! class: DDPM, DDIM, DPM-Solver, ...) loads as is and a file written here
//! loads in diffusers. Keys this struct does not know (`_class_name`,
//! `_diffusers_version`, solver options such as `solver_order`) are kept in
//! [`SchedulerConfig::extra`], and [`SchedulerConfig::to_json_string`] writes
//! back exactly the keys that were read, sorted and indented as diffusers
//! writes them.
//!
//! Python's `json` writes `-Infinity`, `Infinity` and `NaN` as bare words
//! (DPM-Solver's `lambda_min_clipped` defaults to `-Infinity`); strict JSON
//! has no such values, so they are read into `extra` as the strings
//! `"-Infinity"`, `"Infinity"` and `"NaN"` ([`SchedulerConfig::extra_f64`]
//! reads them as numbers) and written back as bare words.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::betas::BetaSchedule;
use crate::prediction::PredictionType;
use crate::{Error, Result};

string_enum! {
    /// The variance of the reverse step (diffusers' `variance_type`).
    pub enum VarianceType as "variance_type" {
        /// The posterior variance beta~_t.
        FixedSmall = "fixed_small",
        /// beta~_t, computed through its log.
        FixedSmallLog = "fixed_small_log",
        /// beta_t.
        FixedLarge = "fixed_large",
        /// beta_t, computed through its log.
        FixedLargeLog = "fixed_large_log",
        /// Predicted by the model.
        Learned = "learned",
        /// Predicted by the model as an interpolation between the fixed ones.
        LearnedRange = "learned_range",
    }
}

string_enum! {
    /// How inference timesteps are spread over [0, T) (diffusers'
    /// `timestep_spacing`; Lin et al. 2023, table 2).
    pub enum TimestepSpacing as "timestep_spacing" {
        /// Evenly spaced, both ends included.
        Linspace = "linspace",
        /// Multiples of T / steps, counted from 0.
        Leading = "leading",
        /// Multiples of T / steps, counted back from T.
        Trailing = "trailing",
    }
}

/// A scheduler configuration with diffusers' `scheduler_config.json` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// T, the number of training timesteps.
    pub num_train_timesteps: usize,
    /// First beta of the `linear`, `scaled_linear` and `sigmoid` schedules.
    pub beta_start: f64,
    /// Last beta of the `linear`, `scaled_linear` and `sigmoid` schedules.
    pub beta_end: f64,
    /// The beta schedule.
    pub beta_schedule: BetaSchedule,
    /// Betas given directly; they take precedence over `beta_schedule`.
    pub trained_betas: Option<Vec<f64>>,
    /// Reverse-step variance; `null` in the configs of solvers without one.
    pub variance_type: Option<VarianceType>,
    /// Whether the predicted x_0 is clipped to ±`clip_sample_range`.
    pub clip_sample: bool,
    /// What the model predicts.
    pub prediction_type: PredictionType,
    /// Whether dynamic thresholding (Imagen) is applied to the predicted x_0.
    pub thresholding: bool,
    /// The quantile of dynamic thresholding.
    pub dynamic_thresholding_ratio: f64,
    /// The bound of sample clipping.
    pub clip_sample_range: f64,
    /// The largest threshold of dynamic thresholding.
    pub sample_max_value: f64,
    /// How inference timesteps are spread.
    pub timestep_spacing: TimestepSpacing,
    /// An offset added to inference timesteps.
    pub steps_offset: usize,
    /// Whether the betas are rescaled to zero terminal SNR.
    pub rescale_betas_zero_snr: bool,
    /// Every other key of the file, kept as read.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
    /// Keys of the fields above that the file read did not have;
    /// [`SchedulerConfig::to_json_string`] leaves them out again while they
    /// keep their default value. Not serialised.
    #[serde(skip)]
    pub absent_keys: BTreeSet<String>,
}

impl Default for SchedulerConfig {
    /// diffusers' `DDPMScheduler()` defaults.
    fn default() -> Self {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            variance_type: Some(VarianceType::FixedSmall),
            clip_sample: true,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            clip_sample_range: 1.0,
            sample_max_value: 1.0,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
            extra: BTreeMap::new(),
            absent_keys: BTreeSet::new(),
        }
    }
}

/// Python's spellings of the non-finite floats.
const NON_FINITE: [&str; 3] = ["-Infinity", "Infinity", "NaN"];

impl SchedulerConfig {
    /// Parses a `scheduler_config.json` text (Python's bare `-Infinity`,
    /// `Infinity` and `NaN` included).
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::parse(text, "scheduler config")
    }

    /// Reads a `scheduler_config.json` file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, context: &str) -> Result<Self> {
        let json_err = |source| Error::Json {
            context: context.to_string(),
            source,
        };
        let value: Value = serde_json::from_str(&quote_non_finite(text)).map_err(json_err)?;
        let mut config: SchedulerConfig =
            serde_json::from_value(value.clone()).map_err(json_err)?;
        if let Value::Object(map) = &value {
            config.absent_keys = typed_keys()
                .into_iter()
                .filter(|k| !map.contains_key(k))
                .collect();
        }
        Ok(config)
    }

    /// The config as a JSON object: every key that was read (or, for a
    /// config built in code, every key), sorted.
    pub fn to_json_value(&self) -> Value {
        let Ok(Value::Object(map)) = serde_json::to_value(self) else {
            unreachable!("a SchedulerConfig always serialises to a JSON object")
        };
        let defaults = serde_json::to_value(SchedulerConfig::default()).unwrap_or(Value::Null);
        let sorted: BTreeMap<String, Value> = map
            .into_iter()
            .filter(|(k, v)| !(self.absent_keys.contains(k) && defaults.get(k) == Some(v)))
            .collect();
        Value::Object(sorted.into_iter().collect())
    }

    /// The config as diffusers writes it: sorted keys, two-space indent, a
    /// final newline, non-finite floats as Python's bare words.
    pub fn to_json_string(&self) -> String {
        let text = serde_json::to_string_pretty(&self.to_json_value())
            .expect("JSON values always serialise");
        unquote_non_finite(&text) + "\n"
    }

    /// Writes the config atomically (see [`tensor::fs`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        Ok(tensor::fs::write_bytes_atomic(
            path.as_ref(),
            self.to_json_string().as_bytes(),
        )?)
    }

    /// A numeric key of `extra` (e.g. a solver option), reading Python's
    /// non-finite spellings as numbers.
    pub fn extra_f64(&self, key: &str) -> Option<f64> {
        match self.extra.get(key)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => match s.as_str() {
                "-Infinity" => Some(f64::NEG_INFINITY),
                "Infinity" => Some(f64::INFINITY),
                "NaN" => Some(f64::NAN),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The keys of the typed fields.
fn typed_keys() -> Vec<String> {
    match serde_json::to_value(SchedulerConfig::default()) {
        Ok(Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Quotes Python's bare `-Infinity`, `Infinity` and `NaN` outside strings
/// so that strict JSON parsers read them (as strings).
fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    let mut in_string = false;
    while let Some(c) = rest.chars().next() {
        if in_string {
            match c {
                '\\' => {
                    let len = c.len_utf8() + rest[1..].chars().next().map_or(0, char::len_utf8);
                    out.push_str(&rest[..len]);
                    rest = &rest[len..];
                    continue;
                }
                '"' => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(word) = NON_FINITE.iter().find(|w| rest.starts_with(**w)) {
            out.push('"');
            out.push_str(word);
            out.push('"');
            rest = &rest[word.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Undoes [`quote_non_finite`] on serde_json's output: a string value (not
/// a key) equal to one of Python's non-finite spellings becomes a bare word.
fn unquote_non_finite(text: &str) -> String {
    let mut out = text.to_string();
    for word in NON_FINITE {
        let quoted = format!("\"{word}\"");
        let mut from = 0;
        while let Some(pos) = out[from..].find(&quoted).map(|p| p + from) {
            let end = pos + quoted.len();
            let is_key = out[end..].trim_start().starts_with(':');
            if is_key {
                from = end;
            } else {
                out.replace_range(pos..end, word);
                from = pos + word.len();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_diffusers_ddpm() {
        let c = SchedulerConfig::from_json_str("{}").unwrap();
        assert_eq!(c.num_train_timesteps, 1000);
        assert_eq!((c.beta_start, c.beta_end), (0.0001, 0.02));
        assert_eq!(c.beta_schedule, BetaSchedule::Linear);
        assert_eq!(c.variance_type, Some(VarianceType::FixedSmall));
        assert!(c.clip_sample && !c.thresholding && !c.rescale_betas_zero_snr);
        assert_eq!(c.timestep_spacing, TimestepSpacing::Leading);
        // Nothing was in the file, so nothing is written back.
        assert_eq!(c.to_json_string(), "{}\n");
        // Built in code, every key is written.
        let v = SchedulerConfig::default().to_json_value();
        assert_eq!(v.as_object().unwrap().len(), 15);
    }

    #[test]
    fn unknown_beta_schedule_is_named() {
        let e = SchedulerConfig::from_json_str(r#"{"beta_schedule": "laplace"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown beta_schedule \"laplace\"")
                && e.contains("linear, scaled_linear, squaredcos_cap_v2 (alias cosine), sigmoid"),
            "{e}"
        );
    }

    #[test]
    fn extra_keys_and_non_finite_round_trip() {
        let text = r#"{"_class_name": "X", "lambda_min_clipped": -Infinity,
            "note": "say \"NaN\" -Infinity", "list": [NaN, 1.5, Infinity],
            "variance_type": null, "solver_order": 2}"#;
        let c = SchedulerConfig::from_json_str(text).unwrap();
        assert_eq!(c.variance_type, None);
        assert_eq!(c.extra_f64("lambda_min_clipped"), Some(f64::NEG_INFINITY));
        assert_eq!(c.extra_f64("solver_order"), Some(2.0));
        assert_eq!(c.extra["note"], "say \"NaN\" -Infinity");
        let out = c.to_json_string();
        assert!(out.contains("\"lambda_min_clipped\": -Infinity"), "{out}");
        assert!(out.contains("\"variance_type\": null"), "{out}");
        assert!(!out.contains("num_train_timesteps"), "{out}");
        let again = SchedulerConfig::from_json_str(&out).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn changed_absent_keys_are_written() {
        let mut c = SchedulerConfig::from_json_str(r#"{"_class_name": "DDIMScheduler"}"#).unwrap();
        c.beta_schedule = BetaSchedule::SquaredcosCapV2;
        let v = c.to_json_value();
        assert_eq!(v["beta_schedule"], "squaredcos_cap_v2");
        assert!(v.get("beta_start").is_none());
    }

    #[test]
    fn quoting_respects_strings_and_keys() {
        assert_eq!(quote_non_finite(r#"{"a":NaN}"#), r#"{"a":"NaN"}"#);
        assert_eq!(
            quote_non_finite(r#"{"NaN":"x\"NaN"}"#),
            r#"{"NaN":"x\"NaN"}"#
        );
        assert_eq!(unquote_non_finite(r#"{"NaN": "NaN"}"#), r#"{"NaN": NaN}"#);
    }
}
