//! [`Extra`]: reads the solver options of a scheduler config, the keys that
//! [`SchedulerConfig`] keeps in `extra`, with the solver's diffusers
//! defaults for the keys the file lacks (as `<Scheduler>.from_config` does).

use schedule::SchedulerConfig;
use serde_json::Value;

use crate::error::{Error, Result};

/// The `extra` keys of a scheduler config, read as typed values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Extra<'a> {
    cfg: &'a SchedulerConfig,
}

impl<'a> Extra<'a> {
    pub fn new(cfg: &'a SchedulerConfig) -> Self {
        Extra { cfg }
    }

    fn extra(&self, key: &str) -> Option<&'a Value> {
        match self.cfg.extra.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.extra(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(Error::config(
                key,
                format!("expected true or false, got {v}"),
            )),
        }
    }

    pub fn usize(&self, key: &str, default: usize) -> Result<usize> {
        match self.extra(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| Error::config(key, format!("expected a whole number, got {v}"))),
        }
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.extra(key) {
            None => Ok(None),
            Some(v) => self
                .cfg
                .extra_f64(key)
                .map(Some)
                .ok_or_else(|| Error::config(key, format!("expected a number, got {v}"))),
        }
    }

    pub fn f64(&self, key: &str, default: f64) -> Result<f64> {
        Ok(self.opt_f64(key)?.unwrap_or(default))
    }

    pub fn string(&self, key: &str, default: &str) -> Result<String> {
        match self.extra(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(Error::config(key, format!("expected a string, got {v}"))),
        }
    }

    /// A string key that must be one of `valid`.
    pub fn choice(&self, key: &str, default: &str, valid: &[&str]) -> Result<String> {
        let s = self.string(key, default)?;
        if valid.contains(&s.as_str()) {
            Ok(s)
        } else {
            Err(Error::config(
                key,
                format!(
                    "{s:?} is not supported: expected one of {}",
                    valid.join(", ")
                ),
            ))
        }
    }
}

/// Writes a string option into `extra`.
pub(crate) fn set_str(config: &mut SchedulerConfig, key: &str, value: &str) {
    config.extra.insert(key.to_string(), Value::from(value));
}

/// Writes a boolean option into `extra`.
pub(crate) fn set_bool(config: &mut SchedulerConfig, key: &str, value: bool) {
    config.extra.insert(key.to_string(), Value::from(value));
}

/// Writes an optional numeric option into `extra` (`None` removes it).
pub(crate) fn set_opt_f64(config: &mut SchedulerConfig, key: &str, value: Option<f64>) {
    match value {
        Some(v) => config.set_extra_f64(key, v),
        None => {
            config.extra.remove(key);
        }
    }
}
