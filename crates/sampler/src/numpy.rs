//! numpy's float helpers as diffusers' schedulers call them, value for
//! value: `linspace`, `arange`, `interp`, and float32 rounding.

/// numpy's `linspace(start, stop, num)` (endpoint included).
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// numpy's `arange(start, stop, step)` for floats (its length and fill rule).
pub(crate) fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let len = len as usize;
    let delta = (start + step) - start;
    (0..len)
        .map(|i| {
            if i == 0 {
                start
            } else {
                start + i as f64 * delta
            }
        })
        .collect()
}

/// numpy's `interp(x, arange(len(fp)), fp)`.
pub(crate) fn interp(x: f64, fp: &[f32]) -> f64 {
    let n = fp.len();
    if x <= 0.0 {
        return f64::from(fp[0]);
    }
    if x >= (n - 1) as f64 {
        return f64::from(fp[n - 1]);
    }
    let j = x.floor() as usize;
    let (a, b) = (f64::from(fp[j]), f64::from(fp[j + 1]));
    if x == j as f64 {
        return a;
    }
    (b - a) * (x - j as f64) + a
}

/// Rounds to float32, as diffusers' tables are stored.
pub(crate) fn f32r(x: f64) -> f64 {
    f64::from(x as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_linspace_and_arange() {
        assert_eq!(np_linspace(0.0, 999.0, 1), vec![0.0]);
        assert_eq!(np_linspace(0.0, 10.0, 3), vec![0.0, 5.0, 10.0]);
        assert_eq!(
            np_arange(1000.0, 0.0, -250.0),
            vec![1000.0, 750.0, 500.0, 250.0]
        );
        assert_eq!(np_arange(1000.0, 0.0, -1000.0 / 3.0).len(), 3);
    }
}
