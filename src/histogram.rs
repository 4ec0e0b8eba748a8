//! A lock-free latency histogram: log-spaced buckets from 1 µs to 1 hour with under 1%
//! relative error, mergeable, plus exact cumulative buckets for Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Bucket growth ratio: the geometric midpoint of a bucket is within sqrt(1.02) - 1 < 1% of
/// every value in it.
const RATIO: f64 = 1.02;
/// The smallest value told apart, in microseconds.
const MIN_US: f64 = 1.0;
/// The largest value told apart: one hour, in microseconds.
const MAX_US: f64 = 3_600_000_000.0;

fn bucket_count() -> usize {
    ((MAX_US / MIN_US).ln() / RATIO.ln()).ceil() as usize + 2
}

/// Prometheus bucket bounds in seconds: tools answer in milliseconds to minutes. Public as
/// [`Histogram::PROMETHEUS_BOUNDS`].
pub(crate) const PROMETHEUS_BOUNDS: [f64; 20] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
];

fn bucket_of(us: u64) -> usize {
    let v = (us as f64).max(MIN_US);
    if v <= MIN_US {
        return 0;
    }
    let i = ((v / MIN_US).ln() / RATIO.ln()).floor() as usize + 1;
    i.min(bucket_count() - 1)
}

/// Microseconds, fine bucket and Prometheus bucket of one value.
fn locate(latency: Duration) -> (u64, usize, Option<usize>) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    let secs = latency.as_secs_f64();
    let prometheus = PROMETHEUS_BOUNDS.iter().position(|&le| secs <= le);
    (us, bucket_of(us), prometheus)
}

/// The value reported for bucket `i`: its geometric midpoint, in microseconds.
fn bucket_value(i: usize) -> f64 {
    if i == 0 {
        return MIN_US;
    }
    MIN_US * RATIO.powf(i as f64 - 0.5)
}

/// Records latencies from one thread at a time without locks; read from anywhere.
#[derive(Debug)]
pub(crate) struct AtomicHistogram {
    buckets: Box<[AtomicU64]>,
    prometheus: [AtomicU64; PROMETHEUS_BOUNDS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
    min_us: AtomicU64,
    max_us: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            buckets: (0..bucket_count()).map(|_| AtomicU64::new(0)).collect(),
            prometheus: Default::default(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            min_us: AtomicU64::new(u64::MAX),
            max_us: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    pub(crate) fn record(&self, latency: Duration) {
        let (us, bucket, prometheus) = locate(latency);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        if let Some(i) = prometheus {
            self.prometheus[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.min_us.fetch_min(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Histogram {
        let mut h = Histogram::default();
        for (dst, src) in h.buckets.iter_mut().zip(self.buckets.iter()) {
            *dst += src.load(Ordering::Relaxed);
        }
        for (dst, src) in h.prometheus.iter_mut().zip(self.prometheus.iter()) {
            *dst += src.load(Ordering::Relaxed);
        }
        let count = self.count.load(Ordering::Relaxed);
        if count > 0 {
            h.min_us = h.min_us.min(self.min_us.load(Ordering::Relaxed));
            h.max_us = h.max_us.max(self.max_us.load(Ordering::Relaxed));
        }
        h.count += count;
        h.sum_us += self.sum_us.load(Ordering::Relaxed);
        h
    }
}

/// A plain (non-atomic) latency histogram: a snapshot or a merge of several.
///
/// Percentiles are within 1% relative error from 1 µs to 1 hour and always within the exact
/// minimum and maximum.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Fine bucket counts (serialised compactly as `[index, count]` pairs of non-empty ones).
    #[serde(with = "sparse")]
    buckets: Vec<u64>,
    /// Counts per [`Histogram::PROMETHEUS_BOUNDS`] bucket (not cumulative); larger values count only in
    /// `count`.
    pub prometheus: [u64; PROMETHEUS_BOUNDS.len()],
    /// How many values.
    pub count: u64,
    /// Their sum, in microseconds.
    pub sum_us: u64,
    /// The smallest, in microseconds (`u64::MAX` when empty).
    pub min_us: u64,
    /// The largest, in microseconds.
    pub max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; bucket_count()],
            prometheus: [0; PROMETHEUS_BOUNDS.len()],
            count: 0,
            sum_us: 0,
            min_us: u64::MAX,
            max_us: 0,
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The fine buckets are over a thousand numbers: show only the non-empty ones.
        let nonzero: Vec<(usize, u64)> = self
            .buckets
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| (i, n))
            .collect();
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("sum_us", &self.sum_us)
            .field("min_us", &self.min_us)
            .field("max_us", &self.max_us)
            .field("buckets", &nonzero)
            .field("prometheus", &self.prometheus)
            .finish()
    }
}

impl Histogram {
    /// The Prometheus bucket bounds, in seconds, of [`Histogram::prometheus`].
    pub const PROMETHEUS_BOUNDS: [f64; 20] = PROMETHEUS_BOUNDS;

    /// Records one value.
    pub fn record(&mut self, latency: Duration) {
        let (us, bucket, prometheus) = locate(latency);
        self.buckets[bucket] += 1;
        if let Some(i) = prometheus {
            self.prometheus[i] += 1;
        }
        self.count += 1;
        self.sum_us += us;
        self.min_us = self.min_us.min(us);
        self.max_us = self.max_us.max(us);
    }

    /// Adds another histogram's values to this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (dst, src) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *dst += src;
        }
        for (dst, src) in self.prometheus.iter_mut().zip(other.prometheus.iter()) {
            *dst += src;
        }
        if other.count > 0 {
            self.min_us = self.min_us.min(other.min_us);
            self.max_us = self.max_us.max(other.max_us);
        }
        self.count += other.count;
        self.sum_us += other.sum_us;
    }

    /// The value at quantile `q` (0.0 ..= 1.0), or `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        if rank >= self.count {
            return Some(Duration::from_micros(self.max_us));
        }
        let overflow = self.buckets.len() - 1;
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                // Bucket 0 holds everything under 1 µs: report the exact minimum.
                // The last bucket holds everything over an hour: report the exact maximum.
                let value = match i {
                    0 => self.min_us as f64,
                    i if i == overflow => self.max_us as f64,
                    i => bucket_value(i),
                };
                let us = value.clamp(self.min_us as f64, self.max_us as f64);
                return Some(Duration::from_nanos((us * 1000.0).round() as u64));
            }
        }
        Some(Duration::from_micros(self.max_us))
    }

    /// The mean, or `None` when empty.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_micros(self.sum_us / self.count))
    }

    /// The smallest value, or `None` when empty.
    pub fn min(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_micros(self.min_us))
    }

    /// The largest value, or `None` when empty.
    pub fn max(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_micros(self.max_us))
    }
}

mod sparse {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(buckets: &[u64], s: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(usize, u64)> = buckets
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| (i, n))
            .collect();
        pairs.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        let pairs = Vec::<(usize, u64)>::deserialize(d)?;
        let mut buckets = vec![0; super::bucket_count()];
        for (i, n) in pairs {
            if let Some(b) = buckets.get_mut(i) {
                *b += n;
            }
        }
        Ok(buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::splitmix64;

    fn random_latencies(n: usize, seed: u64) -> Vec<Duration> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = splitmix64(x);
                // Log-uniform from 1 µs to ~1 hour.
                let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
                Duration::from_micros((MAX_US.powf(unit)).max(1.0) as u64)
            })
            .collect()
    }

    #[test]
    fn percentiles_are_within_one_percent_of_a_sorted_reference() {
        for seed in 1..6 {
            let values = random_latencies(20_000, seed);
            let h = AtomicHistogram::default();
            values.iter().for_each(|v| h.record(*v));
            let snap = h.snapshot();
            let mut sorted = values.clone();
            sorted.sort();
            for q in [0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
                let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
                let exact = sorted[rank - 1].as_secs_f64();
                let got = snap.quantile(q).unwrap().as_secs_f64();
                let err = (got - exact).abs() / exact;
                assert!(
                    err < 0.01,
                    "seed {seed} q {q}: exact {exact} got {got} err {err}"
                );
            }
        }
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let a_vals = random_latencies(1000, 7);
        let b_vals = random_latencies(3000, 8);
        let (a, b, all) = (
            AtomicHistogram::default(),
            AtomicHistogram::default(),
            AtomicHistogram::default(),
        );
        a_vals.iter().for_each(|v| {
            a.record(*v);
            all.record(*v)
        });
        b_vals.iter().for_each(|v| {
            b.record(*v);
            all.record(*v)
        });
        let mut merged = a.snapshot();
        merged.merge(&b.snapshot());
        assert_eq!(merged, all.snapshot());
        assert_eq!(merged.count, 4000);
    }

    #[test]
    fn empty_histograms_report_none() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.mean(), None);
        assert_eq!(h.min(), None);
    }

    #[test]
    fn extremes_are_clamped_to_exact_min_and_max() {
        let mut h = Histogram::default();
        h.record(Duration::from_nanos(10));
        h.record(Duration::from_secs(7200));
        assert_eq!(h.quantile(0.0), Some(Duration::ZERO));
        assert_eq!(h.quantile(1.0), Some(Duration::from_secs(7200)));
    }

    #[test]
    fn serde_round_trip_is_lossless_and_sparse() {
        let h = AtomicHistogram::default();
        random_latencies(500, 3).iter().for_each(|v| h.record(*v));
        let snap = h.snapshot();
        let json = serde_json::to_string(&snap).unwrap();
        assert!(json.len() < 20_000);
        let back: Histogram = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snap);
    }
}
