//! Anomaly-detection metrics as MLPerf Tiny and DCASE 2020 task 2 define them: the area under
//! the ROC curve of anomaly scores (higher score = more anomalous) and the partial AUC up to a
//! false-positive rate `max_fpr` (0.1 there), normalised by `max_fpr` so a perfect detector
//! scores 1 (scikit-learn's `roc_auc_score(max_fpr=…)` would apply the McClish correction
//! instead; DCASE reports the plain normalised area, as here). Tied scores count one half, i.e.
//! the ROC curve goes diagonally through a block of ties. Per machine ID: [`per_group`].

/// ROC AUC of `scores` for `anomalous` labels; `None` without both classes.
pub fn roc_auc(scores: &[f32], anomalous: &[bool]) -> Option<f64> {
    partial_auc(scores, anomalous, 1.0)
}

/// Area under the ROC curve for FPR in [0, `max_fpr`], divided by `max_fpr`; `None` without
/// both classes or for `max_fpr` outside (0, 1].
pub fn partial_auc(scores: &[f32], anomalous: &[bool], max_fpr: f64) -> Option<f64> {
    if scores.len() != anomalous.len() || !(max_fpr > 0.0 && max_fpr <= 1.0) {
        return None;
    }
    let pos = anomalous.iter().filter(|&&a| a).count() as f64;
    let neg = anomalous.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 || scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    // descending scores; each block of equal scores is one diagonal step of the curve
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tpr, mut fpr, mut area) = (0.0f64, 0.0f64, 0.0f64);
    let mut i = 0;
    while i < order.len() && fpr < max_fpr {
        let s = scores[order[i]];
        let (mut tp, mut fp) = (0.0, 0.0);
        while i < order.len() && scores[order[i]] == s {
            if anomalous[order[i]] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        let (t2, f2) = (tpr + tp / pos, fpr + fp / neg);
        if f2 > max_fpr {
            // cut the segment at max_fpr (linear along the diagonal)
            let t_cut = tpr + (t2 - tpr) * (max_fpr - fpr) / (f2 - fpr);
            area += (max_fpr - fpr) * (tpr + t_cut) / 2.0;
            fpr = max_fpr;
        } else {
            area += (f2 - fpr) * (tpr + t2) / 2.0;
            (tpr, fpr) = (t2, f2);
        }
    }
    Some(area / max_fpr)
}

/// AUC and pAUC per group (machine ID), in ascending group order, skipping groups without
/// both classes; and their means.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupedAuc {
    /// (group, AUC, pAUC)
    pub groups: Vec<(u32, f64, f64)>,
    pub auc: f64,
    pub pauc: f64,
}

/// [`roc_auc`] and [`partial_auc`] within each group, averaged over groups (as MLPerf Tiny
/// averages over machine IDs). `None` when no group has both classes.
pub fn per_group(
    scores: &[f32],
    anomalous: &[bool],
    group: &[u32],
    max_fpr: f64,
) -> Option<GroupedAuc> {
    if scores.len() != group.len() || scores.len() != anomalous.len() {
        return None;
    }
    let mut ids: Vec<u32> = group.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut groups = Vec::new();
    for g in ids {
        let pick: Vec<usize> = (0..group.len()).filter(|&i| group[i] == g).collect();
        let s: Vec<f32> = pick.iter().map(|&i| scores[i]).collect();
        let a: Vec<bool> = pick.iter().map(|&i| anomalous[i]).collect();
        if let (Some(auc), Some(pauc)) = (roc_auc(&s, &a), partial_auc(&s, &a, max_fpr)) {
            groups.push((g, auc, pauc));
        }
    }
    if groups.is_empty() {
        return None;
    }
    let n = groups.len() as f64;
    Some(GroupedAuc {
        auc: groups.iter().map(|g| g.1).sum::<f64>() / n,
        pauc: groups.iter().map(|g| g.2).sum::<f64>() / n,
        groups,
    })
}

/// Mean of `values` per clip: a clip's anomaly score is the mean reconstruction error of its
/// windows. Returns (clip ids ascending, means, first index of each clip in `clip`).
pub fn clip_means(values: &[f32], clip: &[u32]) -> (Vec<u32>, Vec<f32>, Vec<usize>) {
    let mut ids: Vec<u32> = clip.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut sum = vec![0f64; ids.len()];
    let mut cnt = vec![0usize; ids.len()];
    let mut first = vec![usize::MAX; ids.len()];
    for (i, (&v, c)) in values.iter().zip(clip).enumerate() {
        let k = ids.binary_search(c).expect("from clip");
        sum[k] += v as f64;
        cnt[k] += 1;
        first[k] = first[k].min(i);
    }
    let means = sum
        .iter()
        .zip(&cnt)
        .map(|(s, &c)| (s / c as f64) as f32)
        .collect();
    (ids, means, first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_by_hand() {
        // anomalies 0.9, 0.4; normals 0.8, 0.3, 0.1: pairs (a > n) = 0.9 beats 3, 0.4 beats 2
        // → 5 of 6
        let s = [0.9, 0.8, 0.4, 0.3, 0.1];
        let a = [true, false, true, false, false];
        assert!((roc_auc(&s, &a).unwrap() - 5.0 / 6.0).abs() < 1e-12);
        // perfect and inverted
        assert_eq!(roc_auc(&[2.0, 1.0], &[true, false]), Some(1.0));
        assert_eq!(roc_auc(&[1.0, 2.0], &[true, false]), Some(0.0));
        // one class only
        assert_eq!(roc_auc(&[1.0, 2.0], &[true, true]), None);
    }

    #[test]
    fn ties_count_one_half() {
        // every score equal: AUC 0.5
        assert_eq!(roc_auc(&[1.0; 4], &[true, false, true, false]), Some(0.5));
        // anomaly 0.5 ties a normal 0.5, beats normal 0.2; anomaly 0.9 beats both:
        // (1 + 1 + 0.5 + 1) / 4 = 0.875
        let s = [0.9, 0.5, 0.5, 0.2];
        let a = [true, true, false, false];
        assert!((roc_auc(&s, &a).unwrap() - 0.875).abs() < 1e-12);
    }

    #[test]
    fn partial_auc_by_hand() {
        // 10 normals, 2 anomalies. Descending: a (0.95), n (0.9), a (0.85), 9 n below.
        // ROC: (0,0) → (0, .5) → (.1, .5) → (.1, 1) → (1, 1).
        // Area up to FPR 0.1: 0.1 × 0.5 = 0.05 → pAUC = 0.5; full AUC = 0.05 + 0.9 = 0.95.
        let mut s = vec![0.95, 0.9, 0.85];
        let mut a = vec![true, false, true];
        for i in 0..9 {
            s.push(0.5 - i as f32 * 0.01);
            a.push(false);
        }
        assert!((partial_auc(&s, &a, 0.1).unwrap() - 0.5).abs() < 1e-9);
        assert!((roc_auc(&s, &a).unwrap() - 0.95).abs() < 1e-9);
        // a tie block crossing max_fpr is cut along its diagonal: 1 anomaly and 4 normals
        // tied at the top: the diagonal goes to (1, 1); up to FPR 0.1 the area is the
        // triangle 0.1 × 0.1/2 → pAUC 0.05
        let s = [1.0, 1.0, 1.0, 1.0, 1.0];
        let a = [true, false, false, false, false];
        assert!((partial_auc(&s, &a, 0.1).unwrap() - 0.05).abs() < 1e-12);
        assert_eq!(partial_auc(&s, &a, 0.0), None);
    }

    #[test]
    fn grouped_means_and_clip_means() {
        let s = [0.9, 0.1, 0.2, 0.8, 0.5, 0.5];
        let a = [true, false, false, true, true, false];
        let g = [0, 0, 1, 1, 2, 2];
        let r = per_group(&s, &a, &g, 0.1).unwrap();
        assert_eq!(r.groups.len(), 3);
        assert_eq!(
            (r.groups[0].1, r.groups[1].1, r.groups[2].1),
            (1.0, 1.0, 0.5)
        );
        assert!((r.auc - 2.5 / 3.0).abs() < 1e-12);
        let (ids, m, first) = clip_means(&[1.0, 3.0, 5.0, 2.0], &[7, 7, 2, 2]);
        assert_eq!(ids, vec![2, 7]);
        assert_eq!(m, vec![3.5, 2.0]);
        assert_eq!(first, vec![2, 0]);
    }
}
