//! The pieces of a report that are not availability proper: which profile version holds when
//! (`valid_from`), joining the timelines of consecutive versions, and weighted means (tiers
//! and federations, ARGO's groups of groups).

use std::ops::Range;

use gridprobe_config::Profile;

use crate::availability::{AStatus, Ms, Segment, Timeline};

/// The stretches of a period and the index (into `versions`, oldest first as
/// `Config::profile_versions` gives them) of the version in force over each. A version holds
/// from its `valid_from` until the next one's; the first also holds before its own date (no
/// earlier one exists to use).
pub fn version_spans(versions: &[&Profile], period: &Range<Ms>) -> Vec<(Range<Ms>, usize)> {
    if versions.is_empty() {
        return vec![(period.clone(), 0)];
    }
    let mut out = Vec::new();
    for (i, _) in versions.iter().enumerate() {
        let from = if i == 0 {
            Ms::MIN
        } else {
            versions[i].valid_from_ms.unwrap_or(Ms::MIN)
        };
        let until = versions
            .get(i + 1)
            .and_then(|v| v.valid_from_ms)
            .unwrap_or(Ms::MAX);
        let (start, end) = (from.max(period.start), until.min(period.end));
        if start < end {
            out.push((start..end, i));
        }
    }
    out
}

/// Joins the timelines of consecutive stretches of a period into one; a stretch without a
/// timeline (the thing did not exist in that version of the profile) counts as EXCLUDED.
pub fn join(parts: &[(Range<Ms>, Option<&Timeline>)]) -> Timeline {
    let mut out: Timeline = Vec::new();
    let mut push = |seg: Segment| match out.last_mut() {
        Some(last) if last.status == seg.status && last.end == seg.start => last.end = seg.end,
        _ => out.push(seg),
    };
    for (span, tl) in parts {
        match tl {
            Some(tl) => tl.iter().for_each(|s| push(*s)),
            None if span.start < span.end => push(Segment {
                start: span.start,
                end: span.end,
                status: AStatus::Excluded,
            }),
            None => {}
        }
    }
    out
}

/// Σ wᵢ·xᵢ / Σ wᵢ over the members that have a figure (a member whose figure is n/a weighs
/// 0); `None` when no weight is left.
pub fn weighted_mean(members: &[(Option<f64>, f64)]) -> Option<f64> {
    let (num, den) = members
        .iter()
        .filter_map(|(x, w)| x.map(|x| (x * w, *w)))
        .fold((0.0, 0.0), |(n, d), (xw, w)| (n + xw, d + w));
    (den > 0.0).then(|| num / den)
}

/// The plain mean over the members that have a figure.
pub fn plain_mean(members: &[Option<f64>]) -> Option<f64> {
    let v: Vec<f64> = members.iter().flatten().copied().collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn profile(valid_from_ms: Option<Ms>) -> Profile {
        Profile {
            name: "p".into(),
            critical: BTreeMap::new(),
            valid_from_ms,
            groups: vec![],
        }
    }

    #[test]
    fn a_period_is_split_at_each_version_change() {
        let (a, b, c) = (profile(None), profile(Some(100)), profile(Some(200)));
        let v = [&a, &b, &c];
        assert_eq!(
            version_spans(&v, &(50..150)),
            vec![(50..100, 0), (100..150, 1)]
        );
        assert_eq!(version_spans(&v, &(250..300)), vec![(250..300, 2)]);
        // A first version dated after the period's start covers the time before it too.
        let (d, e) = (profile(Some(100)), profile(Some(200)));
        assert_eq!(
            version_spans(&[&d, &e], &(0..300)),
            vec![(0..200, 0), (200..300, 1)]
        );
    }

    #[test]
    fn weighted_means_skip_members_without_figures() {
        assert_eq!(
            weighted_mean(&[(Some(1.0), 3.0), (Some(0.5), 1.0), (None, 100.0)]),
            Some(0.875)
        );
        assert_eq!(weighted_mean(&[(None, 1.0), (Some(0.2), 0.0)]), None);
        assert_eq!(plain_mean(&[Some(1.0), Some(0.5), None]), Some(0.75));
    }
}
