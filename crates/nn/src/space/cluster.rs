//! Spectral clustering (Ng, Jordan & Weiss; `004` cites Stella & Shi) of points into k
//! clusters, used to keep the k most different laws of a final GA population: a Gaussian
//! affinity with the median pairwise distance as its width, the normalised affinity
//! D^−½ A D^−½, its k leading eigenvectors (nalgebra's symmetric eigen-decomposition) as
//! row-normalised embeddings, then k-means (k-means++ seeding, seeded) on the rows. Every
//! cluster is non-empty: an empty one takes the point farthest from its own centre.

use nalgebra::{DMatrix, SymmetricEigen};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

/// Cluster label (0..k) of every point; with n ≤ k points each is its own cluster. Same
/// points and seed, same labels.
pub fn spectral(points: &[Vec<f64>], k: usize, seed: u64) -> Vec<usize> {
    let n = points.len();
    if n <= k || k <= 1 {
        return (0..n).map(|i| if k <= 1 { 0 } else { i }).collect();
    }
    let mut d = vec![0.0; n * n];
    let mut nonzero = vec![];
    for i in 0..n {
        for j in i + 1..n {
            let v = dist2(&points[i], &points[j]);
            d[i * n + j] = v;
            d[j * n + i] = v;
            if v > 0.0 {
                nonzero.push(v);
            }
        }
    }
    nonzero.sort_by(f64::total_cmp);
    let width = nonzero.get(nonzero.len() / 2).copied().unwrap_or(1.0);
    let a = DMatrix::from_fn(n, n, |i, j| {
        if i == j {
            0.0
        } else {
            (-d[i * n + j] / (2.0 * width)).exp()
        }
    });
    let deg: Vec<f64> = (0..n).map(|i| a.row(i).sum().max(1e-300)).collect();
    let m = DMatrix::from_fn(n, n, |i, j| a[(i, j)] / (deg[i] * deg[j]).sqrt());
    let eig = SymmetricEigen::new(m);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| {
        eig.eigenvalues[y]
            .total_cmp(&eig.eigenvalues[x])
            .then(x.cmp(&y))
    });
    let rows: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            let r: Vec<f64> = order[..k]
                .iter()
                .map(|&c| eig.eigenvectors[(i, c)])
                .collect();
            let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-300);
            r.into_iter().map(|v| v / norm).collect()
        })
        .collect();
    kmeans(&rows, k, seed)
}

/// Seeded k-means (k-means++ start, 100 rounds at most); no cluster left empty when n ≥ k.
pub fn kmeans(rows: &[Vec<f64>], k: usize, seed: u64) -> Vec<usize> {
    let n = rows.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut centres: Vec<Vec<f64>> = vec![rows[rng.random_range(0..n)].clone()];
    while centres.len() < k {
        let w: Vec<f64> = rows
            .iter()
            .map(|r| {
                centres
                    .iter()
                    .map(|c| dist2(r, c))
                    .fold(f64::INFINITY, f64::min)
            })
            .collect();
        let total: f64 = w.iter().sum();
        let pick = if total > 0.0 {
            let mut u = rng.random_range(0.0..total);
            let mut at = n - 1;
            for (i, &x) in w.iter().enumerate() {
                if u < x {
                    at = i;
                    break;
                }
                u -= x;
            }
            at
        } else {
            rng.random_range(0..n)
        };
        centres.push(rows[pick].clone());
    }
    let mut labels = vec![usize::MAX; n];
    for _ in 0..100 {
        let new: Vec<usize> = rows
            .iter()
            .map(|r| {
                (0..k)
                    .min_by(|&a, &b| dist2(r, &centres[a]).total_cmp(&dist2(r, &centres[b])))
                    .expect("k ≥ 1")
            })
            .collect();
        let done = new == labels;
        labels = new;
        fill_empty(rows, &mut labels, &centres, k);
        if done {
            break;
        }
        for (c, centre) in centres.iter_mut().enumerate() {
            let members: Vec<&Vec<f64>> = (0..n)
                .filter(|&i| labels[i] == c)
                .map(|i| &rows[i])
                .collect();
            for (d, v) in centre.iter_mut().enumerate() {
                *v = members.iter().map(|m| m[d]).sum::<f64>() / members.len() as f64;
            }
        }
    }
    labels
}

/// Moves into each empty cluster the point (of a cluster with ≥ 2 members) farthest from its
/// centre.
fn fill_empty(rows: &[Vec<f64>], labels: &mut [usize], centres: &[Vec<f64>], k: usize) {
    for c in 0..k {
        if labels.contains(&c) {
            continue;
        }
        let counts = |l: &[usize], x: usize| l.iter().filter(|&&y| y == x).count();
        let far = (0..rows.len())
            .filter(|&i| counts(labels, labels[i]) >= 2)
            .max_by(|&a, &b| {
                dist2(&rows[a], &centres[labels[a]])
                    .total_cmp(&dist2(&rows[b], &centres[labels[b]]))
                    .then(b.cmp(&a))
            });
        if let Some(i) = far {
            labels[i] = c;
        }
    }
}
