//! Figures: every scenario records its results with `fig` (under the prefix of the sweep point
//! it is at), `main` prints them as the one JSON line that ends every run; and the arithmetic
//! the result blocks share (percentiles, milliseconds, ratios).

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// The figures of this run, printed as one JSON line at the end.
static FIGURES: std::sync::Mutex<Vec<(String, Value)>> = std::sync::Mutex::new(Vec::new());
/// A prefix for the keys of the figures (the sweep point, e.g. `g100.`).
static FIG_PREFIX: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Records one figure for the final JSON line (NaN and infinities become null).
pub fn fig(key: &str, value: impl Into<Value>) {
    let prefix = FIG_PREFIX.lock().map(|p| p.clone()).unwrap_or_default();
    let mut value = value.into();
    if let Value::Number(n) = &value {
        if let Some(f) = n.as_f64() {
            if n.is_f64() {
                // Three significant decimals are plenty and keep the line short.
                value = json!((f * 1000.0).round() / 1000.0);
            }
        }
    }
    if let Ok(mut figures) = FIGURES.lock() {
        figures.push((format!("{prefix}{key}"), value));
    }
}

/// `fig` for a float that may be NaN or infinite.
pub fn fig_f(key: &str, value: f64) {
    if value.is_finite() {
        fig(key, value);
    } else {
        fig(key, Value::Null);
    }
}

/// Sets the prefix of the figures recorded from now on (`""`: none).
pub fn set_fig_prefix(prefix: &str) {
    if let Ok(mut p) = FIG_PREFIX.lock() {
        *p = prefix.to_string();
    }
}

/// Prints every figure recorded, as one JSON object on one line.
pub fn print_figures() {
    let mut map = serde_json::Map::new();
    if let Ok(figures) = FIGURES.lock() {
        for (k, v) in figures.iter() {
            map.insert(k.clone(), v.clone());
        }
    }
    println!("{}", Value::Object(map));
}

/// A figure recorded so far (NaN when absent).
pub fn figure(key: &str) -> f64 {
    FIGURES
        .lock()
        .ok()
        .and_then(|f| {
            f.iter()
                .rev()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.as_f64())
        })
        .unwrap_or(f64::NAN)
}

/// The `p` quantile (0..=1, nearest rank) of sorted microseconds, in milliseconds.
pub fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1] as f64 / 1000.0)
}

/// The median of a few readings, NaN ones left out (NaN for none).
pub fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A duration in whole microseconds (saturating).
pub fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Milliseconds with two decimals, `n/a` for none.
pub fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.2}"))
}

/// This machine's cores as the runtime sees them (0: unknown).
pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// `x / n`, NaN when there is nothing to divide by.
pub fn per(x: f64, n: f64) -> f64 {
    if n > 0.0 {
        x / n
    } else {
        f64::NAN
    }
}

/// Every task's latencies together, sorted (for `percentile`).
pub fn sorted_all<'a>(each: impl Iterator<Item = &'a Vec<u64>>) -> Vec<u64> {
    let mut all: Vec<u64> = each.flat_map(|v| v.iter().copied()).collect();
    all.sort_unstable();
    all
}

/// Every task's error counts (by code) added up.
pub fn sum_errors<'a>(
    each: impl Iterator<Item = &'a BTreeMap<String, u64>>,
) -> BTreeMap<String, u64> {
    let mut sum: BTreeMap<String, u64> = BTreeMap::new();
    for errors in each {
        for (k, v) in errors {
            *sum.entry(k.clone()).or_default() += v;
        }
    }
    sum
}
