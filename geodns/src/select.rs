//! Choosing POPs: the nearest healthy ones, by great-circle distance divided by weight.

/// A POP as the selector sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The caller's identifier for the POP; [`Selection::indices`] holds these.
    pub index: usize,
    pub lat: f64,
    pub lon: f64,
    /// Distances are divided by it: 2.0 draws clients from twice as far. A weight that is not
    /// positive and finite sorts the candidate last.
    pub weight: f64,
    pub healthy: bool,
}

/// Mean Earth radius (IUGG), km.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Great-circle distance in km between two `(latitude, longitude)` points in degrees
/// (haversine).
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lat2) = (a.0.to_radians(), b.0.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.1 - a.1).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    // Rounding can push h a hair above 1 for antipodal points; asin would return NaN.
    2.0 * EARTH_RADIUS_KM * h.clamp(0.0, 1.0).sqrt().asin()
}

/// The outcome of a selection.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// [`Candidate::index`] of the chosen candidates, best first.
    pub indices: Vec<usize>,
    /// True when no candidate was healthy and all were considered (fail open): answering
    /// with a possibly-down POP beats answering with nothing.
    pub failed_open: bool,
}

/// Picks up to `n` candidates: healthy ones only (unless none is healthy: then all, with
/// `failed_open` set), ordered by distance / weight from `from` when known, ties broken by
/// candidate order. When `from` is `None`, they follow `fallback_order` (a list of
/// [`Candidate::index`] values; candidates not in it follow in their given order).
pub fn nearest(
    candidates: &[Candidate],
    from: Option<(f64, f64)>,
    n: usize,
    fallback_order: &[usize],
) -> Selection {
    let any_healthy = candidates.iter().any(|c| c.healthy);
    let pool = candidates.iter().filter(|c| c.healthy || !any_healthy);
    let indices = match from {
        Some(point) => {
            let mut scored: Vec<(f64, usize)> = pool.map(|c| (score(c, point), c.index)).collect();
            // Stable: equal scores keep candidate order.
            scored.sort_by(|a, b| a.0.total_cmp(&b.0));
            scored.into_iter().take(n).map(|(_, i)| i).collect()
        }
        None => {
            let mut listed: Vec<&Candidate> = pool.collect();
            // Stable: unlisted candidates (usize::MAX) keep their given order.
            listed.sort_by_key(|c| {
                fallback_order
                    .iter()
                    .position(|&i| i == c.index)
                    .unwrap_or(usize::MAX)
            });
            listed.into_iter().take(n).map(|c| c.index).collect()
        }
    };
    Selection {
        indices,
        failed_open: !any_healthy && !candidates.is_empty(),
    }
}

/// Distance divided by weight; infinite (last) for a bad weight or coordinates, so that
/// NaN never reaches the sort (its sign, and so its place in `total_cmp`, varies).
fn score(c: &Candidate, from: (f64, f64)) -> f64 {
    let s = distance_km(from, (c.lat, c.lon)) / c.weight;
    if c.weight > 0.0 && s.is_finite() {
        s
    } else {
        f64::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRANKFURT: (f64, f64) = (50.1109, 8.6821);
    const VIRGINIA: (f64, f64) = (39.0438, -77.4874);
    const SINGAPORE: (f64, f64) = (1.3521, 103.8198);
    const NEW_YORK: (f64, f64) = (40.7128, -74.0060);
    const PARIS: (f64, f64) = (48.8566, 2.3522);

    /// POPs 0 = Virginia, 1 = Frankfurt, 2 = Singapore (given out of distance order on
    /// purpose), all healthy with weight 1.
    fn pops() -> Vec<Candidate> {
        [VIRGINIA, FRANKFURT, SINGAPORE]
            .into_iter()
            .enumerate()
            .map(|(index, (lat, lon))| Candidate {
                index,
                lat,
                lon,
                weight: 1.0,
                healthy: true,
            })
            .collect()
    }

    fn with(mut pops: Vec<Candidate>, edit: impl Fn(&mut Candidate)) -> Vec<Candidate> {
        pops.iter_mut().for_each(edit);
        pops
    }

    #[test]
    fn distance_sanity() {
        // Frankfurt–New York is about 6,200 km.
        let d = distance_km(FRANKFURT, NEW_YORK);
        assert!((d - 6200.0).abs() < 62.0, "{d}");
        assert_eq!(distance_km(PARIS, PARIS), 0.0);
        assert!((distance_km(FRANKFURT, NEW_YORK) - distance_km(NEW_YORK, FRANKFURT)).abs() < 1e-9);
        // Antipodes: half the circumference, not NaN.
        let half = distance_km((0.0, 0.0), (0.0, 180.0));
        assert!(
            (half - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1e-6,
            "{half}"
        );
        // Across the antimeridian: Fiji (178° E) to Samoa (172° W) is about 1,100 km, not 39,000.
        let d = distance_km((-17.7, 178.0), (-13.8, -172.0));
        assert!((1000.0..1300.0).contains(&d), "{d}");
    }

    /// Name, candidates, client location, n, fallback order, expected selection.
    type Case = (
        &'static str,
        Vec<Candidate>,
        Option<(f64, f64)>,
        usize,
        &'static [usize],
        Selection,
    );

    #[test]
    fn table() {
        let sel = |indices: &[usize], failed_open| Selection {
            indices: indices.to_vec(),
            failed_open,
        };
        let cases: Vec<Case> = vec![
            (
                "frankfurt client",
                pops(),
                Some(FRANKFURT),
                1,
                &[],
                sel(&[1], false),
            ),
            (
                "paris client, all ranked",
                pops(),
                Some(PARIS),
                3,
                &[],
                sel(&[1, 0, 2], false),
            ),
            (
                "new york client",
                pops(),
                Some(NEW_YORK),
                2,
                &[],
                sel(&[0, 1], false),
            ),
            (
                "singapore client",
                pops(),
                Some(SINGAPORE),
                1,
                &[],
                sel(&[2], false),
            ),
            (
                "n larger than count",
                pops(),
                Some(FRANKFURT),
                10,
                &[],
                sel(&[1, 0, 2], false),
            ),
            ("n zero", pops(), Some(FRANKFURT), 0, &[], sel(&[], false)),
            (
                // Paris–Frankfurt ≈ 480 km, Paris–Virginia ≈ 6,200 km: weight 20 on Virginia
                // brings it to ≈ 310 km.
                "weight pulls clients from afar",
                with(pops(), |c| c.weight = if c.index == 0 { 20.0 } else { 1.0 }),
                Some(PARIS),
                1,
                &[],
                sel(&[0], false),
            ),
            (
                // Paris–Frankfurt ≈ 480 km / 0.01 = 48,000 km: behind Singapore (≈ 10,700 km).
                "small weight pushes away",
                with(pops(), |c| c.weight = if c.index == 1 { 0.01 } else { 1.0 }),
                Some(PARIS),
                3,
                &[],
                sel(&[0, 2, 1], false),
            ),
            (
                "zero weight sorts last",
                with(pops(), |c| c.weight = if c.index == 1 { 0.0 } else { 1.0 }),
                Some(FRANKFURT),
                3,
                &[],
                sel(&[0, 2, 1], false),
            ),
            (
                "unhealthy skipped",
                with(pops(), |c| c.healthy = c.index != 1),
                Some(FRANKFURT),
                3,
                &[],
                sel(&[0, 2], false),
            ),
            (
                "all unhealthy: all, fail open",
                with(pops(), |c| c.healthy = false),
                Some(FRANKFURT),
                3,
                &[],
                sel(&[1, 0, 2], true),
            ),
            (
                "all unhealthy, no location",
                with(pops(), |c| c.healthy = false),
                None,
                1,
                &[2],
                sel(&[2], true),
            ),
            (
                "no location: fallback order",
                pops(),
                None,
                3,
                &[2, 0, 1],
                sel(&[2, 0, 1], false),
            ),
            (
                "no location: unlisted follow",
                pops(),
                None,
                3,
                &[2],
                sel(&[2, 0, 1], false),
            ),
            (
                "no location: empty order",
                pops(),
                None,
                2,
                &[],
                sel(&[0, 1], false),
            ),
            (
                "no location: unknown and duplicate entries",
                pops(),
                None,
                3,
                &[7, 1, 1],
                sel(&[1, 0, 2], false),
            ),
            (
                "no location: unhealthy skipped",
                with(pops(), |c| c.healthy = c.index != 2),
                None,
                3,
                &[2, 0],
                sel(&[0, 1], false),
            ),
            (
                "ties keep candidate order",
                with(pops(), |c| (c.lat, c.lon) = FRANKFURT),
                Some(PARIS),
                3,
                &[],
                sel(&[0, 1, 2], false),
            ),
            (
                "NaN location keeps candidate order",
                pops(),
                Some((f64::NAN, 0.0)),
                3,
                &[],
                sel(&[0, 1, 2], false),
            ),
            (
                "no candidates",
                vec![],
                Some(FRANKFURT),
                3,
                &[],
                sel(&[], false),
            ),
            (
                "indices are the caller's",
                with(pops(), |c| c.index += 10),
                Some(FRANKFURT),
                1,
                &[],
                sel(&[11], false),
            ),
        ];
        for (name, candidates, from, n, order, want) in cases {
            assert_eq!(nearest(&candidates, from, n, order), want, "{name}");
        }
    }
}
