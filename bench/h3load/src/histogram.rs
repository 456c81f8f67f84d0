//! A fixed-size latency histogram with logarithmic buckets (the HdrHistogram layout with
//! 64 sub-buckets per power of two): recording is an index computation and an increment,
//! memory is constant (about 14 KiB) whatever the request count, and every quantile is
//! within 1/64 (1.6 %) of the true value. The maximum is kept exactly.

/// Sub-buckets per power of two, as a power of two: 64 gives a relative error below 1.6 %.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Values are microseconds capped at `u32::MAX` (71 minutes), so the highest bucket index is
/// that of `u32::MAX`.
const BUCKETS: usize = index(u32::MAX as u64) + 1;

/// Latencies in microseconds.
#[derive(Clone)]
pub(crate) struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    sum: u64,
    max: u64,
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            sum: 0,
            max: 0,
        }
    }

    pub(crate) fn record(&mut self, micros: u64) {
        let v = micros.min(u64::from(u32::MAX));
        self.counts[index(v)] += 1;
        self.total += 1;
        self.sum += v;
        self.max = self.max.max(v);
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.total
    }

    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    pub(crate) fn mean(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.sum as f64 / self.total as f64
    }

    /// The value at quantile `q` (0..=1): the middle of the bucket holding the
    /// `ceil(q * count)`-th smallest value, never above the exact maximum. 0 when empty.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, width) = bucket(i);
                return (low + width / 2).min(self.max);
            }
        }
        self.max
    }
}

/// Values below `2 * SUB` have a bucket each; above, each power of two `[2^k, 2^(k+1))` is
/// split into `SUB` equal buckets.
const fn index(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let shift = (63 - v.leading_zeros()) - SUB_BITS;
    (shift as u64 * SUB + (v >> shift)) as usize
}

/// Lowest value and width of bucket `i` (the inverse of [`index`]).
fn bucket(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < 2 * SUB {
        return (i, 1);
    }
    let shift = i / SUB - 1;
    let mantissa = i % SUB + SUB;
    (mantissa << shift, 1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_bucket_agree() {
        let mut prev = 0;
        for v in (0..100_000u64).chain([u64::from(u32::MAX) - 1, u64::from(u32::MAX)]) {
            let i = index(v);
            assert!(
                i == prev || i == prev + 1 || v > 100_000,
                "indexes are contiguous"
            );
            prev = i;
            let (low, width) = bucket(i);
            assert!(
                low <= v && v < low + width,
                "{v} not in bucket {i} = {low}+{width}"
            );
            assert!(width * SUB <= low.max(SUB), "bucket {i} too wide for {v}");
        }
        assert_eq!(index(u64::from(u32::MAX)), BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_within_the_bucket_precision() {
        let mut h = Histogram::new();
        for v in 1..=10_000 {
            h.record(v);
        }
        for (q, exact) in [(0.5, 5_000.0), (0.9, 9_000.0), (0.99, 9_900.0)] {
            let got = h.quantile(q) as f64;
            assert!(
                (got - exact).abs() / exact < 1.0 / 64.0,
                "q{q}: {got} vs {exact}"
            );
        }
        assert_eq!(h.quantile(1.0), 10_000);
        assert_eq!(h.max(), 10_000);
        assert_eq!(h.count(), 10_000);
        assert!((h.mean() - 5_000.5).abs() < 1e-9);
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_max() {
        let (mut a, mut b) = (Histogram::new(), Histogram::new());
        a.record(10);
        b.record(1_000_000);
        b.record(20);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.max(), 1_000_000);
        assert_eq!(a.quantile(0.5), 20);
        assert_eq!(Histogram::new().quantile(0.5), 0);
    }
}
