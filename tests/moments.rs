//! `mode: moments` through a whole network: the propagated means follow the deterministic
//! pass, the propagated variances follow Monte Carlo dropout, and the engine gives every
//! output in one pass. The per-layer rules are tested in `src/moments.rs`.

mod common;

use bayes_perception::config::Mode;
use bayes_perception::engine::{Engine, EngineConfig};
use bayes_perception::eval::agreement::spearman;
use bayes_perception::model::{random_spec, Model, Pass};
use bayes_perception::moments::Rules;
use tch::{Device, Kind, Tensor};

/// A tiny random model, the same weights every time.
fn tiny_model_with_dropout(dropout: f64) -> Model {
    tch::manual_seed(3);
    let arch = bayes_perception::model::ArchConfig {
        dropout,
        ..common::tiny_arch()
    };
    Model::new(random_spec(arch, None, 4, true, 32, 32), Device::Cpu).unwrap()
}

fn input() -> Tensor {
    tch::manual_seed(11);
    Tensor::randn([1, 3, 32, 32], (Kind::Float, Device::Cpu))
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap()
}

#[test]
fn with_negligible_dropout_the_propagated_means_are_the_deterministic_pass() {
    let _lock = common::rng_lock();
    let model = tiny_model_with_dropout(1e-6);
    let x = input();
    let _guard = tch::no_grad_guard();
    let exact = model.net.forward(&x, Pass::Eval);
    let (logits, s) = exact.semantic.unwrap();
    let (depth, _) = exact.depth.unwrap();
    for rules in [Rules::ClosedForm, Rules::Linearized] {
        let moments = model.net.forward_moments(&x, rules);
        let (m_logits, m_s) = moments.semantic.unwrap();
        let (m_depth, _) = moments.depth.unwrap();
        for (name, a, b) in [
            ("logits", &logits, &m_logits.mean),
            ("s", &s, &m_s.mean),
            ("depth", &depth, &m_depth.mean),
        ] {
            let diff = (a - b).abs().max().double_value(&[]);
            assert!(diff < 1e-4, "{rules}: {name}: means differ by {diff}");
        }
        // And next to no variance.
        assert!(m_logits.var.max().double_value(&[]) < 1e-3, "{rules}");
    }
}

#[test]
fn propagated_variances_follow_monte_carlo_dropout_on_a_random_network() {
    let _lock = common::rng_lock();
    let model = tiny_model_with_dropout(0.2);
    let x = input();
    let _guard = tch::no_grad_guard();
    // 4000 MC dropout passes in chunks.
    let (mut logit_samples, mut depth_samples) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let out = model
            .net
            .forward(&x.expand([200, 3, 32, 32], false), Pass::McSample);
        logit_samples.push(out.semantic.unwrap().0);
        depth_samples.push(out.depth.unwrap().0);
    }
    let (logit_samples, depth_samples) = (
        Tensor::cat(&logit_samples, 0),
        Tensor::cat(&depth_samples, 0),
    );
    // (rules, minimum rho, variance level range, maximum mean error). Measured: closed
    // form rho 0.990 / 0.990 (logits / depth), level 1.03 / 1.02, mean error 0.023 /
    // 0.022 std; linearized rho 0.986 / 0.988, level 1.07 / 1.07, 0.059 / 0.061 std.
    let bounds = [
        (Rules::ClosedForm, 0.95, 0.9..1.15, 0.05),
        (Rules::Linearized, 0.95, 0.9..1.2, 0.1),
    ];
    for (rules, min_rho, levels, max_mean_err) in bounds {
        let moments = model.net.forward_moments(&x, rules);
        for (name, samples, propagated) in [
            ("logits", &logit_samples, moments.semantic.unwrap().0),
            ("depth", &depth_samples, moments.depth.unwrap().0),
        ] {
            let mc_mean = samples.mean_dim(0, true, Kind::Float);
            let mc_var = samples.var_dim(0, false, true);
            // Per unit, the variances rank like Monte Carlo's and their overall level agrees;
            // the means stay close.
            let rho = spearman(&values(&propagated.var), &values(&mc_var)).unwrap();
            let level =
                (propagated.var.mean(Kind::Float) / mc_var.mean(Kind::Float)).double_value(&[]);
            let mean_err = ((&propagated.mean - &mc_mean).abs() / mc_var.sqrt().clamp_min(1e-6))
                .mean(Kind::Float)
                .double_value(&[]);
            println!("{rules} {name}: rho {rho:.3}, variance level {level:.3}, mean error {mean_err:.3} std");
            assert!(
                rho > min_rho,
                "{rules} {name}: variances rank with rho {rho}"
            );
            assert!(
                levels.contains(&level),
                "{rules} {name}: variance level {level}"
            );
            assert!(
                mean_err < max_mean_err,
                "{rules} {name}: means off by {mean_err} std on average"
            );
        }
    }
}

fn moments_engine(head_samples: usize, seed: Option<u64>) -> Engine {
    let config = EngineConfig {
        mode: Mode::Moments,
        moments_head_samples: head_samples,
        seed,
        device: "cpu".parse().unwrap(),
        ..EngineConfig::default()
    };
    Engine::new(common::tiny_model(3, true), config).unwrap()
}

#[test]
fn moments_mode_gives_every_output_in_one_pass_and_is_seeded() {
    let _lock = common::rng_lock();
    let image = common::pattern(40, 30);
    let engine = moments_engine(8, Some(5));
    let p = engine.predict(&image).unwrap();
    assert_eq!(
        (p.mode, p.samples, p.width, p.height),
        (Mode::Moments, 1, 40, 30)
    );
    let semantic = p.semantic.as_ref().unwrap();
    let depth = p.depth.as_ref().unwrap();
    let mi = semantic.epistemic_mutual_information.as_ref().unwrap();
    let depth_std = depth.epistemic_std_m.as_ref().unwrap();
    for (name, img) in [
        ("semantic epistemic", mi),
        ("depth epistemic", depth_std),
        ("semantic aleatoric", &semantic.aleatoric_entropy),
        ("depth aleatoric", depth.aleatoric_std_m.as_ref().unwrap()),
    ] {
        assert_eq!(img.dimensions(), (40, 30), "{name}");
        assert!(img.iter().all(|v| v.is_finite() && *v >= 0.0), "{name}");
        assert!(img.iter().any(|&v| v > 0.0), "{name} is zero everywhere");
    }
    // Seeded: the head draws repeat exactly.
    let again = engine.predict(&image).unwrap();
    let same = |a: &bayes_perception::colormap::FloatImage,
                b: &bayes_perception::colormap::FloatImage| {
        a.as_raw() == b.as_raw()
    };
    let again_semantic = again.semantic.as_ref().unwrap();
    assert!(same(
        mi,
        again_semantic
            .epistemic_mutual_information
            .as_ref()
            .unwrap()
    ));
    assert_eq!(semantic.labels, again_semantic.labels);
}

#[test]
fn one_head_sample_is_refused() {
    // Building the model draws from libtorch's global generator.
    let _lock = common::rng_lock();
    let config = EngineConfig {
        mode: Mode::Moments,
        moments_head_samples: 1,
        device: "cpu".parse().unwrap(),
        ..EngineConfig::default()
    };
    let err = Engine::new(common::tiny_model(3, true), config).unwrap_err();
    assert!(err.to_string().contains("moments.head_samples"), "{err}");
}
