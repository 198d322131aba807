//! Medians over runs, percentiles within a run, and the figures collected.

use std::collections::BTreeMap;
use std::time::Duration;

/// The median of `values` (the mean of the middle two for an even count);
/// `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    })
}

/// The `q`-quantile (0..=1) of sorted `values`, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "quantile of nothing");
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Events per second.
pub fn rate(events: usize, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64()
}

/// Every figure measured, by name and system, one value per run; and text
/// notes (such as crash-recovery outcomes) in the same way.
#[derive(Debug, Default)]
pub struct Figures {
    values: BTreeMap<(String, String), Vec<f64>>,
    notes: BTreeMap<(String, String), Vec<String>>,
}

impl Figures {
    /// Records one run's value of `figure` for `system`.
    pub fn add(&mut self, figure: &str, system: &str, value: f64) {
        self.values
            .entry((figure.to_owned(), system.to_owned()))
            .or_default()
            .push(value);
    }

    /// Records one run's note on `figure` for `system`.
    pub fn note(&mut self, figure: &str, system: &str, note: String) {
        self.notes
            .entry((figure.to_owned(), system.to_owned()))
            .or_default()
            .push(note);
    }

    /// The median of `figure` for `system` over the runs that measured it.
    pub fn median(&self, figure: &str, system: &str) -> Option<f64> {
        self.values
            .get(&(figure.to_owned(), system.to_owned()))
            .and_then(|values| median(values))
    }

    /// Every run's value, for the raw dump.
    pub fn all(&self, figure: &str, system: &str) -> &[f64] {
        self.values
            .get(&(figure.to_owned(), system.to_owned()))
            .map_or(&[], Vec::as_slice)
    }

    /// The names of every figure with values, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .values
            .keys()
            .map(|(figure, _)| figure.clone())
            .collect();
        names.dedup();
        names
    }

    /// Every run's note.
    pub fn notes(&self, figure: &str, system: &str) -> &[String] {
        self.notes
            .get(&(figure.to_owned(), system.to_owned()))
            .map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_quantiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&sorted, 0.5), 50.0);
        assert_eq!(quantile(&sorted, 0.99), 99.0);
        assert_eq!(quantile(&sorted, 1.0), 100.0);
    }
}
