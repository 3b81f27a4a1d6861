//! The single interpreter: which nodes fuse, that a hook's `keep` stops a fusion, that hooks
//! see what they should, and the per-step timing hook.

use super::models::{randn, small_dscnn};
use crate::graph::Op;
use crate::interp::{self, Hook, NoHook, Step, StepTimes};
use crate::model::Model;
use candle_core::Tensor;

/// Keeps the outputs of the listed nodes and counts output calls.
struct Keep(Vec<usize>, Vec<usize>);
impl Hook for Keep {
    fn keep(&self, node: usize) -> bool {
        self.0.contains(&node)
    }
    fn output(&mut self, node: usize, y: Tensor) -> anyhow::Result<Tensor> {
        self.1.push(node);
        Ok(y)
    }
}

#[test]
fn fusion_steps_follow_mode_and_hooks() {
    let m = Model::new(small_dscnn(), 0).unwrap();
    let g = m.graph();
    // conv0, bn0, relu0 are nodes 0, 1, 2; then blocks.0.dw 3, dw_bn 4, dw_relu 5 …
    assert!(matches!(g.nodes[0].op, Op::Conv { .. }) && matches!(g.nodes[2].op, Op::Relu));
    let s = interp::steps(g, false, &NoHook);
    assert_eq!(
        s[0],
        Step {
            node: 0,
            bn: Some(1),
            relu: Some(2),
            then: None
        }
    );
    // Training keeps the batch norm: conv alone, then BN + ReLU.
    let s = interp::steps(g, true, &NoHook);
    assert_eq!(
        (s[0], s[1]),
        (
            Step {
                node: 0,
                bn: None,
                relu: None,
                then: None
            },
            Step {
                node: 1,
                bn: None,
                relu: Some(2),
                then: None
            }
        )
    );
    // A hook that needs bn0's output: eval folds conv0 + bn0 but the ReLU runs on its own.
    let keep = Keep(vec![1], vec![]);
    let s = interp::steps(g, false, &keep);
    assert_eq!(
        (s[0], s[1]),
        (
            Step {
                node: 0,
                bn: Some(1),
                relu: None,
                then: None
            },
            Step {
                node: 2,
                bn: None,
                relu: None,
                then: None
            }
        )
    );
    // Every node is covered once, in order.
    let covered: Vec<usize> = s.iter().flat_map(|s| s.nodes()).collect();
    assert_eq!(covered, (0..g.nodes.len()).collect::<Vec<_>>());
    // The hook sees the kept node's output, and the output of every step's last node.
    let x = randn(&[2, 1, 49, 10], 1);
    let mut keep = Keep(vec![1], vec![]);
    let y = interp::forward(g, &m, &x, false, &mut keep).unwrap();
    assert!(keep.1.contains(&1) && !keep.1.contains(&0));
    assert_eq!(keep.1.len(), s.len());
    // Same function as the plain forward (only the rounding of the fusions differs).
    let want = m.forward(&x, false).unwrap();
    let d = super::max_diff(&y, &want);
    assert!(d < 1e-5, "{d}");
}

#[test]
fn step_times_record_every_step() {
    let m = Model::new(small_dscnn(), 0).unwrap();
    let x = randn(&[2, 1, 49, 10], 1);
    let mut t = StepTimes::default();
    interp::forward(m.graph(), &m, &x, false, &mut t).unwrap();
    let steps = interp::steps(m.graph(), false, &NoHook);
    assert_eq!(t.times.len(), steps.len());
    for ((r, secs), s) in t.times.iter().zip(&steps) {
        assert_eq!(r, &s.nodes());
        assert!(*secs >= 0.0);
    }
}

#[test]
fn eval_pairs_depthwise_and_pointwise_bit_identically() {
    let m = Model::new(small_dscnn(), 3).unwrap();
    let g = m.graph();
    // Non-trivial running statistics, so the folded batch norms matter.
    let shape = [4, 1, 49, 10];
    m.forward(&(randn(&shape, 5) * 2.0).unwrap(), true).unwrap();
    let s = interp::steps(g, false, &NoHook);
    // blocks.0: dw 3, dw_bn 4, dw_relu 5, pw 6, pw_bn 7, pw_relu 8: one step in eval.
    assert_eq!(
        s[1],
        Step {
            node: 3,
            bn: Some(4),
            relu: Some(5),
            then: Some((6, Some(7), Some(8)))
        }
    );
    assert_eq!(s[1].nodes(), 3..9);
    let pairs: Vec<_> = s.iter().filter(|s| s.then.is_some()).collect();
    assert!(
        pairs
            .iter()
            .all(|p| matches!(g.nodes[p.node].op, Op::Conv { groups, .. } if groups > 1))
    );
    // Training never pairs; a hook keeping the depthwise output stops the pair only.
    assert!(
        interp::steps(g, true, &NoHook)
            .iter()
            .all(|s| s.then.is_none())
    );
    let dw_outs: Vec<usize> = pairs.iter().map(|p| p.then.unwrap().0 - 1).collect();
    let keep = Keep(dw_outs.clone(), vec![]);
    let unpaired = interp::steps(g, false, &keep);
    assert!(unpaired.iter().all(|s| s.then.is_none()));
    assert_eq!(unpaired.len(), s.len() + pairs.len());
    // Same bits as the two steps run one after the other.
    let x = randn(&shape, 9);
    let paired = m.forward(&x, false).unwrap();
    let mut keep = Keep(dw_outs, vec![]);
    let apart = interp::forward(g, &m, &x, false, &mut keep).unwrap();
    let bits = |t: &Tensor| -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    assert_eq!(bits(&paired), bits(&apart));
}
