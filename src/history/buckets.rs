//! Uptime arithmetic: runs counted by level, with latency, in hourly and daily buckets, and the
//! windows (24 h, 7 d, 30 d) and the 90-day bar read from them.
//!
//! Time is kept as whole hours and days since the Unix epoch (UTC), so windows are made of
//! whole buckets: "24 h" is the current hour and the 23 before it, "7 d" today and the 6 days
//! before it. A probe younger than a window is measured over the runs it has.

use std::collections::VecDeque;

use crate::probe::Level;

/// Milliseconds in an hour.
pub const HOUR_MS: i64 = 3_600_000;
/// Hours kept in memory with their latency histograms (the 24 h window, plus one).
pub const HOURS: usize = 25;
/// Days kept in memory (the 90-day bar and the 30 d window, plus one).
pub const DAYS: usize = 91;

/// Upper bounds of the latency histogram buckets, in milliseconds; one more slot holds the rest.
pub const LATENCY_BOUNDS_MS: [f64; 28] = [
    1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 70.0, 100.0, 150.0, 200.0, 300.0, 500.0, 700.0, 1000.0,
    1500.0, 2000.0, 3000.0, 5000.0, 7000.0, 10000.0, 15000.0, 20000.0, 30000.0, 60000.0,
];
const SLOTS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// Runs by level and their latency.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    /// Runs counted.
    pub runs: u32,
    /// Runs that ended UP.
    pub up: u32,
    /// Runs that ended DEGRADED.
    pub degraded: u32,
    /// Runs that ended DOWN.
    pub down: u32,
    /// Sum of the runs' latencies, seconds.
    pub latency_sum: f64,
    /// Longest latency, seconds.
    pub latency_max: f32,
}

impl Counts {
    /// Counts one run.
    pub fn add(&mut self, level: Level, latency: f64) {
        self.runs = self.runs.saturating_add(1);
        match level {
            Level::Up => self.up = self.up.saturating_add(1),
            Level::Degraded => self.degraded = self.degraded.saturating_add(1),
            Level::Down => self.down = self.down.saturating_add(1),
        }
        self.latency_sum += latency;
        self.latency_max = self.latency_max.max(latency as f32);
    }

    /// Adds another bucket's counts.
    pub fn merge(&mut self, other: &Counts) {
        self.runs = self.runs.saturating_add(other.runs);
        self.up = self.up.saturating_add(other.up);
        self.degraded = self.degraded.saturating_add(other.degraded);
        self.down = self.down.saturating_add(other.down);
        self.latency_sum += other.latency_sum;
        self.latency_max = self.latency_max.max(other.latency_max);
    }

    /// Share of runs that ended UP or DEGRADED (DEGRADED counts as available); `None` without
    /// runs.
    pub fn uptime(&self) -> Option<f64> {
        (self.runs > 0).then(|| f64::from(self.up + self.degraded) / f64::from(self.runs))
    }

    /// Mean latency, seconds; `None` without runs.
    pub fn latency_avg(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.latency_sum / f64::from(self.runs))
    }
}

/// A latency histogram over [`LATENCY_BOUNDS_MS`], for percentile estimates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram(pub [u16; SLOTS]);

impl LatencyHistogram {
    /// Adds one latency (seconds).
    pub fn observe(&mut self, seconds: f64) {
        let ms = seconds * 1e3;
        let slot = LATENCY_BOUNDS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        self.0[slot] = self.0[slot].saturating_add(1);
    }

    /// Adds another histogram.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = a.saturating_add(b);
        }
    }

    /// The `q` quantile (0..1) in seconds, interpolated linearly inside its bucket and capped at
    /// `max` (the longest latency seen); `None` when empty.
    pub fn quantile(&self, q: f64, max: f64) -> Option<f64> {
        let total: u64 = self.0.iter().map(|&c| u64::from(c)).sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (slot, &count) in self.0.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let next = seen + u64::from(count);
            if next as f64 >= rank {
                let low = if slot == 0 { 0.0 } else { LATENCY_BOUNDS_MS[slot - 1] };
                let high = LATENCY_BOUNDS_MS.get(slot).copied().unwrap_or(max * 1e3);
                let within = (rank - seen as f64) / f64::from(count);
                let ms = low + (high - low) * within.clamp(0.0, 1.0);
                return Some((ms / 1e3).min(max));
            }
            seen = next;
        }
        Some(max)
    }

    /// Compact encoding for the store: (slot, count as LEB128) for each non-empty slot.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8);
        for (slot, &count) in self.0.iter().enumerate() {
            if count == 0 {
                continue;
            }
            out.push(slot as u8);
            let mut value = count;
            loop {
                let byte = (value & 0x7f) as u8;
                value >>= 7;
                if value == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
        }
        out
    }

    /// Decodes [`encode`](Self::encode)'s output; `None` if malformed.
    pub fn decode(bytes: &[u8]) -> Option<LatencyHistogram> {
        let mut histogram = LatencyHistogram::default();
        let mut bytes = bytes.iter().copied();
        while let Some(slot) = bytes.next() {
            let mut value: u32 = 0;
            let mut shift = 0;
            loop {
                let byte = bytes.next()?;
                value |= u32::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    break;
                }
                shift += 7;
                if shift > 21 {
                    return None;
                }
            }
            let cell = histogram.0.get_mut(usize::from(slot))?;
            *cell = cell.saturating_add(u16::try_from(value).unwrap_or(u16::MAX));
        }
        Some(histogram)
    }
}

/// One hour of runs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Hour {
    /// Hours since the epoch.
    pub index: i64,
    /// Runs in that hour.
    pub counts: Counts,
    /// Their latencies.
    pub histogram: LatencyHistogram,
}

/// One day of runs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Day {
    /// Days since the epoch.
    pub index: i64,
    /// Runs in that day.
    pub counts: Counts,
}

/// A window's counts and latency figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Window {
    /// Runs by level.
    pub counts: Counts,
    /// Estimated 95th percentile latency, seconds (24 h window only).
    pub latency_p95: Option<f64>,
}

/// A probe's hourly buckets for the last [`HOURS`] and daily buckets for the last [`DAYS`],
/// oldest first. Memory grows with the data: a new probe holds nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buckets {
    hours: VecDeque<Hour>,
    days: VecDeque<Day>,
}

/// Finds or inserts the bucket `index` in an ordered deque (new data lands at the back).
fn slot<T>(deque: &mut VecDeque<T>, index: i64, index_of: impl Fn(&T) -> i64, new: impl FnOnce() -> T) -> &mut T {
    let position = deque.iter().rposition(|b| index_of(b) <= index);
    let at = match position {
        Some(p) if index_of(&deque[p]) == index => p,
        Some(p) => {
            deque.insert(p + 1, new());
            p + 1
        }
        None => {
            deque.push_front(new());
            0
        }
    };
    &mut deque[at]
}

impl Buckets {
    /// Counts one run that finished at `at_ms` (Unix milliseconds).
    pub fn add(&mut self, at_ms: i64, level: Level, latency: f64) {
        let hour = at_ms.div_euclid(HOUR_MS);
        let mut counts = Counts::default();
        counts.add(level, latency);
        let mut histogram = LatencyHistogram::default();
        histogram.observe(latency);
        self.add_hour(hour, &counts, &histogram);
    }

    /// Adds an hour's aggregate (as loaded from the store): to its day, and to the hourly
    /// buckets when recent enough to be kept there.
    pub fn add_hour(&mut self, hour: i64, counts: &Counts, histogram: &LatencyHistogram) {
        self.add_day(hour.div_euclid(24), counts);
        let newest = self.hours.back().map_or(hour, |h| h.index.max(hour));
        if hour > newest - HOURS as i64 {
            let bucket = slot(
                &mut self.hours,
                hour,
                |h| h.index,
                || Hour {
                    index: hour,
                    ..Hour::default()
                },
            );
            bucket.counts.merge(counts);
            bucket.histogram.merge(histogram);
            while self.hours.front().is_some_and(|h| h.index <= newest - HOURS as i64) {
                self.hours.pop_front();
            }
        }
    }

    /// Adds a day's aggregate.
    pub fn add_day(&mut self, day: i64, counts: &Counts) {
        let newest = self.days.back().map_or(day, |d| d.index.max(day));
        if day <= newest - DAYS as i64 {
            return;
        }
        let bucket = slot(
            &mut self.days,
            day,
            |d| d.index,
            || Day {
                index: day,
                ..Day::default()
            },
        );
        bucket.counts.merge(counts);
        while self.days.front().is_some_and(|d| d.index <= newest - DAYS as i64) {
            self.days.pop_front();
        }
    }

    /// Adds everything `other` holds (a history loaded from the store).
    pub fn merge(&mut self, other: &Buckets) {
        for day in &other.days {
            // Hours kept in `other.hours` are in its days too; add them once, as hours.
            let mut counts = day.counts;
            let mut in_hours = Counts::default();
            for hour in other.hours.iter().filter(|h| h.index.div_euclid(24) == day.index) {
                in_hours.merge(&hour.counts);
            }
            counts.runs -= in_hours.runs.min(counts.runs);
            counts.up -= in_hours.up.min(counts.up);
            counts.degraded -= in_hours.degraded.min(counts.degraded);
            counts.down -= in_hours.down.min(counts.down);
            counts.latency_sum = (counts.latency_sum - in_hours.latency_sum).max(0.0);
            if counts.runs > 0 {
                self.add_day(day.index, &counts);
            }
        }
        for hour in &other.hours {
            self.add_hour(hour.index, &hour.counts, &hour.histogram);
        }
    }

    /// The last `hours` hours up to `now_ms`, the current hour included, with a p95 estimate.
    pub fn last_hours(&self, now_ms: i64, hours: usize) -> Window {
        let now = now_ms.div_euclid(HOUR_MS);
        let mut window = Window::default();
        let mut histogram = LatencyHistogram::default();
        for hour in self
            .hours
            .iter()
            .filter(|h| h.index <= now && h.index > now - hours as i64)
        {
            window.counts.merge(&hour.counts);
            histogram.merge(&hour.histogram);
        }
        window.latency_p95 = histogram.quantile(0.95, f64::from(window.counts.latency_max));
        window
    }

    /// The last `days` UTC days up to `now_ms`, today included.
    pub fn last_days(&self, now_ms: i64, days: usize) -> Window {
        let today = now_ms.div_euclid(HOUR_MS * 24);
        let mut window = Window::default();
        for day in self
            .days
            .iter()
            .filter(|d| d.index <= today && d.index > today - days as i64)
        {
            window.counts.merge(&day.counts);
        }
        window
    }

    /// One [`Counts`] per day for the last `days` days, oldest first, today last.
    pub fn daily_bar(&self, now_ms: i64, days: usize) -> Vec<Counts> {
        let today = now_ms.div_euclid(HOUR_MS * 24);
        let first = today - days as i64 + 1;
        let mut bar = vec![Counts::default(); days];
        for day in self.days.iter().filter(|d| d.index >= first && d.index <= today) {
            bar[(day.index - first) as usize] = day.counts;
        }
        bar
    }

    /// One [`Counts`] per hour for the last `hours` hours, oldest first, the current hour last.
    pub fn hourly_bar(&self, now_ms: i64, hours: usize) -> Vec<Counts> {
        let now = now_ms.div_euclid(HOUR_MS);
        let first = now - hours as i64 + 1;
        let mut bar = vec![Counts::default(); hours];
        for hour in self.hours.iter().filter(|h| h.index >= first && h.index <= now) {
            bar[(hour.index - first) as usize] = hour.counts;
        }
        bar
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 24 * HOUR_MS;
    // 2024-01-10T12:30:00Z
    const NOW: i64 = 1_704_889_800_000;

    #[test]
    fn no_runs_means_no_uptime() {
        let buckets = Buckets::default();
        let w = buckets.last_hours(NOW, 24);
        assert_eq!(w.counts.uptime(), None);
        assert_eq!(w.latency_p95, None);
        assert_eq!(buckets.last_days(NOW, 30).counts.runs, 0);
        assert!(buckets.daily_bar(NOW, 90).iter().all(|c| c.runs == 0));
    }

    #[test]
    fn degraded_counts_as_available() {
        let mut b = Buckets::default();
        for i in 0..10 {
            b.add(NOW - i * 60_000, Level::Degraded, 1.5);
        }
        let w = b.last_hours(NOW, 24).counts;
        assert_eq!((w.runs, w.degraded, w.uptime()), (10, 10, Some(1.0)));
        b.add(NOW, Level::Down, 0.1);
        let w = b.last_hours(NOW, 24).counts;
        assert_eq!(w.uptime(), Some(10.0 / 11.0));
        assert_eq!((w.up, w.degraded, w.down), (0, 10, 1));
    }

    #[test]
    fn a_probe_younger_than_the_window_is_measured_over_its_runs() {
        let mut b = Buckets::default();
        b.add(NOW - 2 * HOUR_MS, Level::Up, 0.01);
        b.add(NOW - HOUR_MS, Level::Down, 0.01);
        for w in [b.last_hours(NOW, 24), b.last_days(NOW, 7), b.last_days(NOW, 30)] {
            assert_eq!((w.counts.runs, w.counts.uptime()), (2, Some(0.5)));
        }
    }

    #[test]
    fn windows_leave_out_older_runs() {
        let mut b = Buckets::default();
        b.add(NOW - 40 * DAY_MS, Level::Down, 0.01); // past 30 d
        b.add(NOW - 10 * DAY_MS, Level::Down, 0.01); // in 30 d only
        b.add(NOW - 3 * DAY_MS, Level::Up, 0.01); // in 7 d and 30 d
        b.add(NOW - 30 * HOUR_MS, Level::Up, 0.01); // yesterday: 7 d, not 24 h
        b.add(NOW - 60_000, Level::Up, 0.01);
        assert_eq!(b.last_hours(NOW, 24).counts.runs, 1);
        assert_eq!(b.last_days(NOW, 7).counts.runs, 3);
        let month = b.last_days(NOW, 30).counts;
        assert_eq!((month.runs, month.down), (4, 1));
        let bar = b.daily_bar(NOW, 90);
        assert_eq!(bar.len(), 90);
        assert_eq!(bar[89].runs, 1, "today is last");
        assert_eq!(bar[89 - 40].down, 1);
        assert_eq!(bar.iter().map(|c| c.runs).sum::<u32>(), 5);
        // Older than the days kept: dropped.
        b.add(NOW - 200 * DAY_MS, Level::Up, 0.01);
        assert_eq!(b.daily_bar(NOW, 90).iter().map(|c| c.runs).sum::<u32>(), 5);
    }

    #[test]
    fn old_buckets_are_evicted_as_time_moves_on() {
        let mut b = Buckets::default();
        for h in 0..200 {
            b.add(NOW + h * HOUR_MS, Level::Up, 0.01);
        }
        assert_eq!(b.hours.len(), HOURS);
        for d in 0..200 {
            b.add(NOW + d * DAY_MS, Level::Up, 0.01);
        }
        assert_eq!(b.days.len(), DAYS);
        let later = NOW + 199 * DAY_MS;
        assert_eq!(b.last_days(later, 1).counts.runs, 1);
    }

    #[test]
    fn out_of_order_runs_land_in_their_bucket() {
        let mut b = Buckets::default();
        b.add(NOW, Level::Up, 0.01);
        b.add(NOW - 3 * HOUR_MS, Level::Down, 0.01);
        b.add(NOW - HOUR_MS, Level::Up, 0.01);
        let bar = b.hourly_bar(NOW, 24);
        assert_eq!((bar[23].runs, bar[22].runs, bar[21].runs, bar[20].down), (1, 1, 0, 1));
    }

    #[test]
    fn p95_and_mean_latency() {
        let mut b = Buckets::default();
        for i in 0..95 {
            b.add(NOW - i * 1000, Level::Up, 0.004);
        }
        for i in 0..5 {
            b.add(NOW - i * 1000, Level::Up, 0.8);
        }
        let w = b.last_hours(NOW, 24);
        let p95 = w.latency_p95.expect("runs");
        assert!((0.003..=0.005).contains(&p95), "{p95}");
        let avg = w.counts.latency_avg().expect("runs");
        assert!((avg - (95.0 * 0.004 + 5.0 * 0.8) / 100.0).abs() < 1e-9);
        assert!((f64::from(w.counts.latency_max) - 0.8).abs() < 1e-6);
        // A single run: p95 is at most its latency.
        let mut one = Buckets::default();
        one.add(NOW, Level::Up, 0.0123);
        let p95 = one.last_hours(NOW, 24).latency_p95.expect("one run");
        assert!(p95 <= 0.0124 && p95 > 0.010, "{p95}");
    }

    #[test]
    fn histogram_encoding_round_trips() {
        let mut h = LatencyHistogram::default();
        for _ in 0..300 {
            h.observe(0.004);
        }
        h.observe(100.0);
        let bytes = h.encode();
        assert!(bytes.len() <= 6, "{bytes:?}");
        assert_eq!(LatencyHistogram::decode(&bytes), Some(h));
        assert_eq!(LatencyHistogram::decode(&[99, 1]), None);
        assert_eq!(LatencyHistogram::decode(&[1]), None);
    }

    #[test]
    fn merging_a_loaded_history_adds_it_once() {
        let mut loaded = Buckets::default();
        loaded.add(NOW - 5 * DAY_MS, Level::Down, 0.01);
        loaded.add(NOW - 2 * HOUR_MS, Level::Up, 0.01);
        loaded.add(NOW - HOUR_MS, Level::Up, 0.01);
        let mut live = Buckets::default();
        live.add(NOW, Level::Up, 0.01);
        live.merge(&loaded);
        assert_eq!(live.last_hours(NOW, 24).counts.runs, 3);
        assert_eq!(live.last_days(NOW, 7).counts.runs, 4);
        assert_eq!(live.last_days(NOW, 7).counts.down, 1);
    }
}
