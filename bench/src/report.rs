//! The benchmark table: one row per figure, printed and optionally written as JSON.

use serde_json::json;
use std::time::Duration;

/// One measured figure, with what it is compared against in the same run.
pub struct Row {
    pub figure: String,
    pub value: f64,
    pub unit: &'static str,
    /// A reference measured in the same run (a floor, a ceiling, or for scale).
    pub reference: Option<(String, f64)>,
    pub target: String,
}

/// All rows of a run.
#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    /// Adds a row.
    pub fn add(&mut self, figure: &str, value: f64, unit: &'static str, target: &str) -> &mut Row {
        self.rows.push(Row {
            figure: figure.into(),
            value,
            unit,
            reference: None,
            target: target.into(),
        });
        self.rows.last_mut().expect("just pushed")
    }

    /// Prints the table.
    pub fn print(&self) {
        println!(
            "{:<52} {:>12} {:<6} {:<44} {:>8} target",
            "figure", "value", "unit", "reference (same run)", "ratio"
        );
        for r in &self.rows {
            let (reference, ratio) = match &r.reference {
                Some((name, v)) => (format!("{name} = {v:.2}"), format!("{:.2}", r.value / v)),
                None => (String::new(), String::new()),
            };
            println!(
                "{:<52} {:>12.2} {:<6} {:<44} {:>8} {}",
                r.figure, r.value, r.unit, reference, ratio, r.target
            );
        }
    }

    /// The same rows as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        json!(
            self.rows
                .iter()
                .map(|r| json!({
                    "figure": r.figure,
                    "value": r.value,
                    "unit": r.unit,
                    "reference": r.reference.as_ref().map(|(n, v)| json!({"name": n, "value": v})),
                    "target": r.target,
                }))
                .collect::<Vec<_>>()
        )
    }
}

/// Median and 99th percentile of `samples`, in milliseconds.
pub fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.99))
}
