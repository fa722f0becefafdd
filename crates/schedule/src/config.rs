//! [`SchedulerConfig`]: diffusers' `scheduler_config.json`, field for field.
//!
//! The field names are diffusers' keys, so a file that diffusers wrote (any
//! scheduler class: DDPM, DDIM, DPM-Solver, ...) loads as is and a file
//! written here loads in diffusers. A key the file lacks is `None`, and the
//! solver that reads it applies its own diffusers default. Keys this struct
//! does not know (`_class_name`, `_diffusers_version`, solver options such
//! as `solver_order`, which the solvers read into typed options) are kept
//! in [`SchedulerConfig::extra`], and [`SchedulerConfig::to_json_string`]
//! writes back exactly the keys that are set, sorted and indented as
//! diffusers writes them.
//!
//! Python's `json` writes `-Infinity`, `Infinity` and `NaN` as bare words
//! (DPM-Solver's `lambda_min_clipped` defaults to `-Infinity`); strict JSON
//! has no such values, so they are read into `extra` as the strings
//! `"-Infinity"`, `"Infinity"` and `"NaN"` ([`SchedulerConfig::extra_f64`]
//! reads them as numbers) and written back as bare words.

use std::collections::BTreeMap;
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
///
/// A key the file did not have is `None`: it takes the default of whichever
/// solver reads it, as diffusers' `<Scheduler>.from_config` does (DDIM spaces
/// its timesteps `leading`, Euler and DPM-Solver `linspace`, ...), and it is
/// not written back. [`SchedulerConfig::default()`] is the empty file `{}`;
/// [`SchedulerConfig::ddpm()`] has every key of `DDPMScheduler()`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// T, the number of training timesteps (default 1000).
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub num_train_timesteps: Option<usize>,
    /// First beta of the `linear`, `scaled_linear` and `sigmoid` schedules
    /// (the solver's default: 0.0001, Heun 0.00085).
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub beta_start: Option<f64>,
    /// Last beta of the `linear`, `scaled_linear` and `sigmoid` schedules
    /// (the solver's default: 0.02, Heun 0.012).
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub beta_end: Option<f64>,
    /// The beta schedule (default `linear`).
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub beta_schedule: Option<BetaSchedule>,
    /// Betas given directly; they take precedence over `beta_schedule`.
    /// `Some(None)` is the file's `null`.
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub trained_betas: Option<Option<Vec<f64>>>,
    /// Reverse-step variance (DDPM's default `fixed_small`); `Some(None)` is
    /// the file's `null`, as the configs of solvers without one have it.
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub variance_type: Option<Option<VarianceType>>,
    /// Whether the predicted x_0 is clipped to ±`clip_sample_range` (the
    /// solver's default: DDPM and DDIM clip, Heun does not).
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub clip_sample: Option<bool>,
    /// What the model predicts (default `epsilon`).
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub prediction_type: Option<PredictionType>,
    /// Whether dynamic thresholding (Imagen) is applied to the predicted x_0
    /// (default false).
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub thresholding: Option<bool>,
    /// The quantile of dynamic thresholding (default 0.995).
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub dynamic_thresholding_ratio: Option<f64>,
    /// The bound of sample clipping (default 1).
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub clip_sample_range: Option<f64>,
    /// The largest threshold of dynamic thresholding (default 1).
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub sample_max_value: Option<f64>,
    /// How inference timesteps are spread (the solver's default: DDPM and
    /// DDIM `leading`, the others `linspace`).
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub timestep_spacing: Option<TimestepSpacing>,
    /// An offset added to inference timesteps (default 0).
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub steps_offset: Option<usize>,
    /// Whether the betas are rescaled to zero terminal SNR (default false).
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub rescale_betas_zero_snr: Option<bool>,
    /// Every other key of the file (solver options such as `solver_order`
    /// among them), kept as read.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A key that is in the file: `Some`, whatever its value (a `null` is an
/// error unless the field's type takes it, as `Option<Option<T>>` does).
fn present<'de, D, T>(deserializer: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

impl SchedulerConfig {
    /// diffusers' `DDPMScheduler()` config: every key set to its default
    /// (what `DDPMScheduler().config` holds and `save_config` writes).
    pub fn ddpm() -> Self {
        SchedulerConfig {
            num_train_timesteps: Some(1000),
            beta_start: Some(0.0001),
            beta_end: Some(0.02),
            beta_schedule: Some(BetaSchedule::Linear),
            trained_betas: Some(None),
            variance_type: Some(Some(VarianceType::FixedSmall)),
            clip_sample: Some(true),
            prediction_type: Some(PredictionType::Epsilon),
            thresholding: Some(false),
            dynamic_thresholding_ratio: Some(0.995),
            clip_sample_range: Some(1.0),
            sample_max_value: Some(1.0),
            timestep_spacing: Some(TimestepSpacing::Leading),
            steps_offset: Some(0),
            rescale_betas_zero_snr: Some(false),
            extra: BTreeMap::new(),
        }
    }

    /// The betas given directly, if any.
    pub fn given_betas(&self) -> Option<&[f64]> {
        self.trained_betas.as_ref().and_then(|b| b.as_deref())
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
            error: source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, context: &str) -> Result<Self> {
        let json_err = |source| Error::Json {
            context: context.to_string(),
            source,
        };
        serde_json::from_str(&quote_non_finite(text)).map_err(json_err)
    }

    /// The config as a JSON object: the keys that are set (`Some`) and
    /// `extra`, sorted.
    pub fn to_json_value(&self) -> Value {
        let Ok(Value::Object(map)) = serde_json::to_value(self) else {
            unreachable!("a SchedulerConfig always serialises to a JSON object")
        };
        let sorted: BTreeMap<String, Value> = map.into_iter().collect();
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

    /// Sets a numeric key of `extra` (e.g. a solver option); a non-finite
    /// value is kept as Python's spelling and written as a bare word.
    pub fn set_extra_f64(&mut self, key: &str, value: f64) {
        let v = if value.is_finite() {
            Value::from(value)
        } else if value.is_nan() {
            Value::from("NaN")
        } else if value > 0.0 {
            Value::from("Infinity")
        } else {
            Value::from("-Infinity")
        };
        self.extra.insert(key.to_string(), v);
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
    fn absent_keys_are_none_and_ddpm_has_them_all() {
        let c = SchedulerConfig::from_json_str("{}").unwrap();
        assert_eq!(c, SchedulerConfig::default());
        assert_eq!(c.num_train_timesteps, None);
        assert_eq!(c.variance_type, None);
        // Nothing was in the file, so nothing is written back.
        assert_eq!(c.to_json_string(), "{}\n");
        let d = SchedulerConfig::ddpm();
        assert_eq!(d.num_train_timesteps, Some(1000));
        assert_eq!((d.beta_start, d.beta_end), (Some(0.0001), Some(0.02)));
        assert_eq!(d.beta_schedule, Some(BetaSchedule::Linear));
        assert_eq!(d.variance_type, Some(Some(VarianceType::FixedSmall)));
        assert_eq!(d.timestep_spacing, Some(TimestepSpacing::Leading));
        // Every key is written, and read back the same.
        let v = d.to_json_value();
        assert_eq!(v.as_object().unwrap().len(), 15);
        assert_eq!(v["trained_betas"], Value::Null);
        assert_eq!(
            SchedulerConfig::from_json_str(&d.to_json_string()).unwrap(),
            d
        );
    }

    #[test]
    fn null_is_kept_where_diffusers_writes_it_and_refused_elsewhere() {
        let c = SchedulerConfig::from_json_str(r#"{"trained_betas": null}"#).unwrap();
        assert_eq!(c.trained_betas, Some(None));
        assert_eq!(c.given_betas(), None);
        assert!(c.to_json_string().contains("\"trained_betas\": null"));
        let e = SchedulerConfig::from_json_str(r#"{"clip_sample": null}"#).unwrap_err();
        assert!(e.to_string().contains("null"), "{e}");
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
        assert_eq!(c.variance_type, Some(None));
        assert_eq!(c.extra_f64("lambda_min_clipped"), Some(f64::NEG_INFINITY));
        assert_eq!(c.extra_f64("solver_order"), Some(2.0));
        assert_eq!(c.extra["note"], "say \"NaN\" -Infinity");
        let mut set = c.clone();
        set.set_extra_f64("lambda_min_clipped", f64::NEG_INFINITY);
        assert_eq!(set.to_json_string(), c.to_json_string());
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
        c.beta_schedule = Some(BetaSchedule::SquaredcosCapV2);
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
