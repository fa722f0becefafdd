//! [`Keys`]: reads a scheduler config the way diffusers'
//! `<Scheduler>.from_config` does.

use schedule::SchedulerConfig;
use serde_json::Value;

use crate::error::{Error, Result};

/// Reads a scheduler config the way diffusers' `<Scheduler>.from_config`
/// does: a key the file has wins, a key it lacks takes the solver's own
/// default.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keys<'a> {
    cfg: &'a SchedulerConfig,
}

impl<'a> Keys<'a> {
    pub fn new(cfg: &'a SchedulerConfig) -> Self {
        Keys { cfg }
    }

    /// Whether a typed key of [`SchedulerConfig`] was in the file.
    pub fn present(&self, key: &str) -> bool {
        !self.cfg.absent_keys.contains(key)
    }

    /// A typed field: its value when the file had it, else `default`.
    pub fn typed<T>(&self, key: &str, value: T, default: T) -> T {
        if self.present(key) {
            value
        } else {
            default
        }
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
