//! What is usual for a tenant, by hour of the week: an exponentially weighted mean of a rate
//! for each of the 168 hours (Monday 9:00 has its own), learnt only while calm so that an
//! attack does not teach the baseline that floods are normal. Where an hour has not been seen
//! often enough yet, the mean of every hour stands in. Pure: the caller gives the hour.

/// Hours in a week.
pub const HOURS: usize = 168;
/// Samples (one a second, say) an hour needs before its own mean is trusted.
const MIN_SAMPLES: u32 = 600;
/// Weight of a new sample in an hour's mean (a week's hour is about 3,600 samples: the
/// mean follows a trend over a few weeks).
const WEIGHT: f64 = 1.0 / 2_000.0;

/// The usual value of a rate, hour by hour of the week.
#[derive(Debug, Clone)]
pub struct Baseline {
    mean: Box<[f64; HOURS]>,
    samples: Box<[u32; HOURS]>,
    /// Over every hour.
    overall: f64,
    overall_samples: u64,
}

impl Default for Baseline {
    fn default() -> Self {
        Self {
            mean: Box::new([0.0; HOURS]),
            samples: Box::new([0; HOURS]),
            overall: 0.0,
            overall_samples: 0,
        }
    }
}

/// The hour of the week (0 = Monday 00:00) of `local_s`, seconds since the epoch shifted to
/// local time.
pub fn hour_of_week(local_s: i64) -> usize {
    let days = local_s.div_euclid(86_400);
    // 1970-01-01 was a Thursday (3, Monday first).
    let weekday = (days + 3).rem_euclid(7) as usize;
    weekday * 24 + (local_s.rem_euclid(86_400) / 3_600) as usize
}

/// A baseline as kept on disk.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Kept {
    mean: Vec<f64>,
    samples: Vec<u32>,
    overall: f64,
    overall_samples: u64,
}

impl Baseline {
    /// What to keep across restarts.
    pub fn keep(&self) -> Kept {
        Kept {
            mean: self.mean.to_vec(),
            samples: self.samples.to_vec(),
            overall: self.overall,
            overall_samples: self.overall_samples,
        }
    }

    /// The baseline kept; `None` when it does not fit (another version's).
    pub fn restore(k: &Kept) -> Option<Self> {
        let valid = |v: f64| v.is_finite() && v >= 0.0;
        if k.mean.len() != HOURS
            || k.samples.len() != HOURS
            || !k.mean.iter().all(|m| valid(*m))
            || !valid(k.overall)
        {
            return None;
        }
        let mut b = Self::default();
        b.mean.copy_from_slice(&k.mean);
        b.samples.copy_from_slice(&k.samples);
        b.overall = k.overall;
        b.overall_samples = k.overall_samples;
        Some(b)
    }

    /// Learns `value` seen in hour `hour` (call only while calm).
    pub fn learn(&mut self, hour: usize, value: f64) {
        let h = hour % HOURS;
        let n = self.samples[h];
        // The first samples of an hour average plainly; then the moving weight.
        let w = if n < MIN_SAMPLES {
            1.0 / f64::from(n + 1)
        } else {
            WEIGHT
        };
        self.mean[h] += (value - self.mean[h]) * w;
        self.samples[h] = n.saturating_add(1);
        self.overall_samples += 1;
        let w = (1.0 / self.overall_samples as f64).max(WEIGHT / 4.0);
        self.overall += (value - self.overall) * w;
    }

    /// The usual value in hour `hour`: its own mean once it has enough samples, else the
    /// mean over every hour (`None` before anything was learnt).
    pub fn expected(&self, hour: usize) -> Option<f64> {
        let h = hour % HOURS;
        if self.samples[h] >= MIN_SAMPLES {
            Some(self.mean[h])
        } else if self.overall_samples >= u64::from(MIN_SAMPLES) {
            Some(self.overall)
        } else {
            None
        }
    }

    /// Samples learnt in all.
    pub fn samples(&self) -> u64 {
        self.overall_samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hour_of_the_week_has_its_own_usual_value() {
        let mut b = Baseline::default();
        assert_eq!(b.expected(9), None);
        // Three weeks: 40 requests/s on weekdays 9:00-17:00, 2 otherwise.
        for _week in 0..3 {
            for hour in 0..HOURS {
                let (day, h) = (hour / 24, hour % 24);
                let busy = day < 5 && (9..17).contains(&h);
                for _ in 0..1_200 {
                    b.learn(hour, if busy { 40.0 } else { 2.0 });
                }
            }
        }
        let monday_9 = 9;
        let sunday_3 = 6 * 24 + 3;
        assert!((b.expected(monday_9).unwrap() - 40.0).abs() < 0.5);
        assert!((b.expected(sunday_3).unwrap() - 2.0).abs() < 0.5);
        // 2026-12-07 was a Monday: 10:30 local is hour 10 of the week.
        assert_eq!(hour_of_week(1_796_601_600 + 10 * 3_600 + 1_800), 10);
        assert_eq!(
            hour_of_week(1_796_601_600 + 6 * 86_400 + 23 * 3_600),
            HOURS - 1
        );
    }

    #[test]
    fn an_hour_not_seen_yet_borrows_the_mean_of_all() {
        let mut b = Baseline::default();
        for _ in 0..1_000 {
            b.learn(5, 10.0);
        }
        assert!((b.expected(5).unwrap() - 10.0).abs() < 1e-9);
        assert!((b.expected(100).unwrap() - 10.0).abs() < 1e-9);
    }
}
