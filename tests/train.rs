//! The losses drive learning: on a tiny synthetic set, a tiny model's combined semantic and
//! depth loss falls within a few optimiser steps (CPU, seconds).

mod common;

use bayes_perception::model::{Likelihood, Pass};
use bayes_perception::train::loss::{depth_loss, semantic_loss};
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor};

#[test]
fn loss_falls_over_a_few_steps() {
    let _lock = common::rng_lock();
    tch::manual_seed(0);
    let model = common::tiny_model(3, true);
    // Four 32x32 scenes: the left part is class 0 and near (2 m), the right part class 1
    // and far (8 m), the split moving per image; colours follow the classes.
    let (n, size) = (4i64, 32i64);
    let columns = Tensor::arange(size, (Kind::Int64, Device::Cpu))
        .view([1, 1, size])
        .expand([n, size, size], false);
    let splits = Tensor::from_slice(&[8i64, 12, 16, 20]).view([n, 1, 1]);
    let labels = columns.ge_tensor(&splits).to_kind(Kind::Int64);
    let depth = labels.to_kind(Kind::Float) * 6.0 + 2.0;
    let images = Tensor::stack(
        &[
            labels.to_kind(Kind::Float),
            1.0 - labels.to_kind(Kind::Float),
            Tensor::full([n, size, size], 0.5, (Kind::Float, Device::Cpu)),
        ],
        1,
    ) + Tensor::randn([n, 3, size, size], (Kind::Float, Device::Cpu)) * 0.05;

    let mut optimizer = tch::nn::Adam {
        wd: 1e-4,
        ..Default::default()
    }
    .build(&model.vs, 3e-3)
    .unwrap();
    let mut losses = Vec::new();
    for _ in 0..25 {
        let out = model.net.forward(&images, Pass::Train);
        let (logits, s) = out.semantic.unwrap();
        let (mean, ds) = out.depth.unwrap();
        let loss = semantic_loss(&logits, &s, &labels, 11, None, 5)
            + depth_loss(&mean, &ds, &depth, Likelihood::Gaussian);
        optimizer.backward_step(&loss);
        losses.push(loss.double_value(&[]));
    }
    let first: f64 = losses[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = losses[losses.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(
        last < 0.7 * first,
        "loss did not fall: first {first:.3}, last {last:.3} ({losses:?})"
    );
}
