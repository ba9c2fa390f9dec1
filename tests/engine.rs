//! The engine end to end on tiny models: output shapes and types, the two modes, MC
//! dropout leaving BatchNorm alone, seeding, chunking and the resize policy.

mod common;

use bayes_perception::config::Mode;
use bayes_perception::engine::{Engine, EngineConfig, LabelImage, Prediction};
use bayes_perception::model::Pass;
use tch::{Device, Kind, Tensor};

fn config(mode: Mode, samples: usize, seed: Option<u64>) -> EngineConfig {
    EngineConfig {
        mode,
        mc_samples: samples,
        seed,
        device: "cpu".parse().unwrap(),
        ..EngineConfig::default()
    }
}

fn engine(classes: usize, depth: bool, cfg: EngineConfig) -> Engine {
    Engine::new(common::tiny_model(classes, depth), cfg).unwrap()
}

fn floats(p: &Prediction) -> Vec<(&'static str, &bayes_perception::colormap::FloatImage)> {
    let mut out = Vec::new();
    if let Some(s) = &p.semantic {
        out.push(("confidence", &s.confidence));
        out.push(("semantic_aleatoric", &s.aleatoric_entropy));
        if let Some(mi) = &s.epistemic_mutual_information {
            out.push(("semantic_epistemic", mi));
        }
    }
    if let Some(d) = &p.depth {
        out.push(("depth", &d.depth_m));
        if let Some(a) = &d.aleatoric_std_m {
            out.push(("depth_aleatoric", a));
        }
        if let Some(e) = &d.epistemic_std_m {
            out.push(("depth_epistemic", e));
        }
    }
    out
}

fn same_outputs(a: &Prediction, b: &Prediction) -> bool {
    let labels_equal = match (&a.semantic, &b.semantic) {
        (Some(x), Some(y)) => x.labels == y.labels,
        (None, None) => true,
        _ => false,
    };
    labels_equal
        && floats(a).iter().zip(floats(b)).all(|((_, x), (_, y))| {
            x.as_raw()
                .iter()
                .zip(y.as_raw())
                .all(|(p, q)| p.to_bits() == q.to_bits())
        })
}

#[test]
fn aleatoric_mode_outputs_at_input_size_without_epistemic() {
    let _lock = common::rng_lock();
    // 50x37 is not the native 32x32: resized in, resized back.
    let image = common::pattern(50, 37);
    let p = engine(5, true, config(Mode::Aleatoric, 50, Some(1)))
        .predict(&image)
        .unwrap();
    assert_eq!((p.width, p.height, p.samples), (50, 37, 1));
    let semantic = p.semantic.as_ref().unwrap();
    assert!(matches!(semantic.labels, LabelImage::U8(_)));
    assert_eq!(semantic.labels.dimensions(), (50, 37));
    assert!(
        semantic.epistemic_mutual_information.is_none(),
        "aleatoric mode has no epistemic image"
    );
    assert!(p.depth.as_ref().unwrap().epistemic_std_m.is_none());
    for (name, img) in floats(&p) {
        assert_eq!(img.dimensions(), (50, 37), "{name}");
        assert!(img.iter().all(|v| !v.is_infinite()), "{name} has Inf");
        if name != "depth" {
            assert!(
                img.iter().all(|v| v.is_finite() && *v >= 0.0),
                "{name} must be finite and >= 0"
            );
        }
    }
    assert!(semantic.confidence.iter().all(|&c| c > 0.0 && c <= 1.0));
    // Entropy of 5 classes is at most ln 5.
    assert!(semantic
        .aleatoric_entropy
        .iter()
        .all(|&h| h <= 5f32.ln() + 1e-5));
    // Labels are valid class ids.
    assert!((0..37).all(|y| (0..50).all(|x| semantic.labels.get(x, y) < 5)));
}

#[test]
fn mc_mode_adds_epistemic_images() {
    let _lock = common::rng_lock();
    let image = common::pattern(32, 32);
    let p = engine(3, true, config(Mode::Mc, 6, Some(2)))
        .predict(&image)
        .unwrap();
    assert_eq!(p.samples, 6);
    let mi = p
        .semantic
        .as_ref()
        .unwrap()
        .epistemic_mutual_information
        .as_ref()
        .unwrap();
    let depth_std = p.depth.as_ref().unwrap().epistemic_std_m.as_ref().unwrap();
    assert!(mi.iter().all(|v| v.is_finite() && *v >= 0.0));
    assert!(depth_std.iter().all(|v| v.is_finite() && *v >= 0.0));
    // With dropout active the samples disagree somewhere.
    assert!(
        mi.iter().any(|&v| v > 0.0),
        "MI is zero everywhere: dropout not active in mc mode?"
    );
    assert!(depth_std.iter().any(|&v| v > 0.0));
}

/// MC samples that agree (dropout 1e-9, seeded: no unit of the tiny model dropped, every
/// pass the same network) have no mutual
/// information, whatever the logit noise and the chunking: the frame's noise draws are
/// shared by all its samples, so an S-draw average's own error is not counted as
/// disagreement (with draws per sample, MI was ~0.02 to 0.15 nats; method.md: 0 when all
/// MC samples agree). Depth's epistemic std is 0 too.
#[test]
fn mc_samples_that_agree_have_no_epistemic_uncertainty_whatever_the_logit_noise() {
    let _lock = common::rng_lock();
    let predict = |noise_samples: usize| {
        let mut spec = common::tiny_spec(4, true);
        spec.architecture.dropout = Some(1e-9);
        tch::manual_seed(3);
        let model = bayes_perception::model::Model::new(spec, Device::Cpu).unwrap();
        let cfg = EngineConfig {
            mc_batch_size: Some(2),
            noise_samples,
            ..config(Mode::Mc, 7, Some(4))
        };
        let p = Engine::new(model, cfg).unwrap();
        p.predict(&common::pattern(32, 32)).unwrap()
    };
    let p = predict(10);
    let semantic = p.semantic.as_ref().unwrap();
    let mi = semantic.epistemic_mutual_information.as_ref().unwrap();
    let worst = mi.iter().fold(0f32, |m, &v| m.max(v.abs()));
    assert!(worst < 1e-5, "MI up to {worst} nats for identical samples");
    // The logit noise is there: it flattens the probabilities, raising the expected
    // entropy above that of the same samples without noise.
    let mean = |p: &Prediction| {
        let h = &p.semantic.as_ref().unwrap().aleatoric_entropy;
        h.iter().map(|&v| v as f64).sum::<f64>() / h.len() as f64
    };
    let noiseless = predict(0);
    assert!(
        mean(&p) > mean(&noiseless) + 1e-3,
        "{} against {} without noise",
        mean(&p),
        mean(&noiseless)
    );
    let depth_std = p.depth.as_ref().unwrap().epistemic_std_m.as_ref().unwrap();
    assert!(depth_std.iter().all(|&v| v.abs() < 1e-4));
}

#[test]
fn mc_sampling_leaves_batchnorm_running_statistics_unchanged() {
    let _lock = common::rng_lock();
    let engine = engine(3, true, config(Mode::Mc, 4, Some(3)));
    let stats = |e: &Engine| -> Vec<(String, Tensor)> {
        let mut v: Vec<_> = e
            .model()
            .vs
            .variables()
            .into_iter()
            .filter(|(n, _)| n.contains("running_"))
            .map(|(n, t)| (n, t.copy()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let before = stats(&engine);
    assert!(!before.is_empty());
    engine.predict(&common::pattern(40, 24)).unwrap();
    for ((name, a), (_, b)) in before.iter().zip(stats(&engine)) {
        assert!(a.equal(&b), "{name} changed during MC sampling");
    }
}

#[test]
fn identical_seeds_give_identical_outputs_and_different_seeds_differ() {
    let _lock = common::rng_lock();
    let model_dir = tempfile::tempdir().unwrap();
    common::tiny_model(4, true).save(model_dir.path()).unwrap();
    let image = common::pattern(33, 29);
    let run = |seed| {
        let e = Engine::load(model_dir.path(), config(Mode::Mc, 5, Some(seed))).unwrap();
        e.predict(&image).unwrap()
    };
    let (a, b, c) = (run(11), run(11), run(12));
    assert!(same_outputs(&a, &b), "same seed, different outputs");
    assert!(!same_outputs(&a, &c), "different seeds, identical outputs");
}

#[test]
fn dropout_is_inactive_in_eval_passes_and_active_in_mc_passes() {
    let _lock = common::rng_lock();
    let model = common::tiny_model(3, true);
    let _guard = tch::no_grad_guard();
    let x = Tensor::randn([1, 3, 32, 32], (Kind::Float, Device::Cpu));
    let eval = |m: &bayes_perception::model::Model| m.net.forward(&x, Pass::Eval).depth.unwrap().0;
    assert!(
        eval(&model).equal(&eval(&model)),
        "two eval passes differ: dropout active?"
    );
    let mc =
        |m: &bayes_perception::model::Model| m.net.forward(&x, Pass::McSample).depth.unwrap().0;
    assert!(
        !mc(&model).equal(&mc(&model)),
        "two MC passes agree: dropout inactive?"
    );
    // Unseeded aleatoric-mode engine: depth uses no noise, so runs agree exactly.
    let engine = Engine::new(model, config(Mode::Aleatoric, 50, None)).unwrap();
    let image = common::pattern(32, 32);
    let (a, b) = (
        engine.predict(&image).unwrap(),
        engine.predict(&image).unwrap(),
    );
    assert_eq!(
        a.depth
            .unwrap()
            .depth_m
            .as_raw()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>(),
        b.depth
            .unwrap()
            .depth_m
            .as_raw()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    );
}

/// Per-sample depth means `[T, H, W]` of T MC passes run in chunks of `batch` exactly as
/// the engine runs them, drawn after seeding with `seed`.
fn mc_depth_samples(
    e: &Engine,
    image: &image::RgbImage,
    samples: usize,
    batch: usize,
    seed: u64,
) -> Tensor {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(seed as i64);
    let x = e.network_input(image);
    let size = x.size();
    let mut chunks = Vec::new();
    let mut done = 0;
    while done < samples {
        let b = batch.min(samples - done);
        let out = e.model().net.forward(
            &x.expand([b as i64, size[1], size[2], size[3]], false),
            Pass::McSample,
        );
        chunks.push(out.depth.unwrap().0.squeeze_dim(1));
        done += b;
    }
    Tensor::cat(&chunks, 0) * e.model().spec.tasks.depth.as_ref().unwrap().unit_m
}

/// Largest difference where the image is a number (depth marks non-positive as NaN; a
/// random model predicts few positive depths, so the epistemic std is the full check).
fn max_abs_diff(image: &bayes_perception::colormap::FloatImage, t: &Tensor) -> f64 {
    let got = Tensor::from_slice(image.as_raw()).view(t.size().as_slice());
    let finite = got.isfinite();
    if finite.sum(Kind::Int64).int64_value(&[]) == 0 {
        return 0.0;
    }
    (got - t)
        .abs()
        .masked_select(&finite)
        .max()
        .double_value(&[])
}

#[test]
fn chunked_mc_runs_every_sample_for_any_batch_size() {
    let _lock = common::rng_lock();
    // Native size, so no resize: the engine's depth and depth epistemic std must be the
    // mean and population std of exactly the T sampled means, whatever the chunking.
    let image = common::pattern(32, 32);
    let samples = 7;
    for batch in [1, 2, 4, 7, 100] {
        // No logit noise: its draws would come between the chunks' dropout draws.
        let cfg = EngineConfig {
            mc_batch_size: Some(batch),
            noise_samples: 0,
            ..config(Mode::Mc, samples, Some(5))
        };
        let e = engine(3, true, cfg);
        assert_eq!(e.mc_batch_size(), batch.min(samples));
        let p = e.predict(&image).unwrap();
        assert_eq!(p.samples, samples);
        let d = p.depth.unwrap();
        let reference = mc_depth_samples(&e, &image, samples, batch.min(samples), 5);
        assert_eq!(reference.size()[0], samples as i64);
        let mean = reference.mean_dim(0, false, Kind::Float);
        let std = reference.var_dim(0, false, false).sqrt();
        assert!(
            max_abs_diff(&d.depth_m, &mean) < 1e-5,
            "batch {batch}: depth"
        );
        assert!(
            max_abs_diff(d.epistemic_std_m.as_ref().unwrap(), &std) < 1e-4,
            "batch {batch}: epistemic std"
        );
        // Leaving out or repeating a sample changes the std: the check can fail.
        let fewer = reference
            .narrow(0, 0, samples as i64 - 1)
            .var_dim(0, false, false)
            .sqrt();
        assert!(max_abs_diff(d.epistemic_std_m.as_ref().unwrap(), &fewer) > 1e-3);
    }
    // The CPU default is one pass at a time, whatever GPU memory budget is set.
    let e = engine(
        3,
        false,
        EngineConfig {
            mc_max_gpu_memory_mb: 1,
            ..config(Mode::Mc, 7, None)
        },
    );
    e.predict(&common::pattern(32, 32)).unwrap();
    assert_eq!(
        e.mc_batch_size(),
        bayes_perception::engine::DEFAULT_CPU_BATCH
    );
}

#[test]
fn mc_samples_in_one_chunk_draw_independent_dropout_masks() {
    let _lock = common::rng_lock();
    // The CUDA default chunk: 16 passes of one image in one batched forward.
    let e = engine(3, true, config(Mode::Mc, 16, Some(6)));
    let image = common::pattern(32, 32);
    let chunk = mc_depth_samples(
        &e,
        &image,
        16,
        bayes_perception::engine::DEFAULT_CUDA_BATCH,
        6,
    );
    let singles = mc_depth_samples(&e, &image, 16, 1, 7);
    // Every sample of the chunk differs from every other one...
    for i in 0..16 {
        for j in (i + 1)..16 {
            assert!(
                !chunk.get(i).equal(&chunk.get(j)),
                "samples {i} and {j} of one chunk are identical: shared dropout mask"
            );
        }
    }
    // ...and they spread as much as 16 separate passes do: the per-pixel variance over
    // the chunk, averaged over pixels, is within a factor 1.5 of that of single passes
    // (independent masks; correlated masks within a chunk would shrink it).
    let spread = |t: &Tensor| {
        t.var_dim(0, false, false)
            .mean(Kind::Double)
            .double_value(&[])
    };
    let ratio = spread(&chunk) / spread(&singles);
    assert!(
        (1.0 / 1.5..1.5).contains(&ratio),
        "variance ratio chunk/singles {ratio}"
    );
}

#[test]
fn same_image_size_as_native_needs_no_resize_and_labels_follow_probabilities() {
    let _lock = common::rng_lock();
    // Without logit noise p̄ is the softmax of one eval pass, which the test recomputes.
    let cfg = EngineConfig {
        noise_samples: 0,
        ..config(Mode::Aleatoric, 50, Some(9))
    };
    let e = engine(4, false, cfg);
    let image = common::pattern(32, 32);
    let p = e.predict(&image).unwrap();
    assert!(p.depth.is_none());
    let s = p.semantic.unwrap();
    let _guard = tch::no_grad_guard();
    let logits = e
        .model()
        .net
        .forward(&e.network_input(&image), Pass::Eval)
        .semantic
        .unwrap()
        .0;
    let probs = logits.softmax(1, Kind::Float).squeeze_dim(0);
    let (confidence, labels) = probs.max_dim(0, false);
    let mut seen = std::collections::HashSet::new();
    for y in 0..32 {
        for x in 0..32 {
            let expected = labels.int64_value(&[y, x]) as usize;
            assert_eq!(
                s.labels.get(x as u32, y as u32),
                expected,
                "label at ({x}, {y})"
            );
            let c = s.confidence.get_pixel(x as u32, y as u32).0[0] as f64;
            assert!(
                (c - confidence.double_value(&[y, x])).abs() < 1e-6,
                "confidence at ({x}, {y})"
            );
            seen.insert(expected);
        }
    }
    assert!(
        seen.len() > 1,
        "one class everywhere: the comparison would be weak"
    );
}

#[test]
fn more_than_256_classes_give_16_bit_labels() {
    let _lock = common::rng_lock();
    let p = engine(300, false, config(Mode::Aleatoric, 50, Some(4)))
        .predict(&common::pattern(20, 20))
        .unwrap();
    let labels = p.semantic.unwrap().labels;
    assert!(matches!(labels, LabelImage::U16(_)));
    assert!((0..20).all(|y| (0..20).all(|x| labels.get(x, y) < 300)));
}

#[test]
fn upscaled_labels_are_the_argmax_of_the_resized_probabilities() {
    let _lock = common::rng_lock();
    let cfg = EngineConfig {
        noise_samples: 0,
        ..config(Mode::Aleatoric, 50, Some(8))
    };
    let e = engine(6, false, cfg);
    let small = common::pattern(32, 32);
    let big = image::imageops::resize(&small, 96, 64, image::imageops::FilterType::Nearest);
    let p = e.predict(&big).unwrap().semantic.unwrap();
    assert_eq!(p.labels.dimensions(), (96, 64));
    // The network sees the image at native size (32x32); its p̄ resized to 96x64.
    let _guard = tch::no_grad_guard();
    let probs = e
        .model()
        .net
        .forward(&e.network_input(&big), Pass::Eval)
        .semantic
        .unwrap()
        .0
        .softmax(1, Kind::Float)
        .squeeze_dim(0);
    let (labels, confidence) = bayes_perception::engine::resized_argmax(&probs, 96, 64);
    for y in 0..64 {
        for x in 0..96 {
            assert_eq!(
                p.labels.get(x as u32, y as u32),
                labels.int64_value(&[y, x]) as usize
            );
            let c = p.confidence.get_pixel(x as u32, y as u32).0[0] as f64;
            assert!((c - confidence.double_value(&[y, x])).abs() < 1e-6);
        }
    }
}

/// A sharp vertical edge in p̄ (class 0 left of column 20, class 2 from it, 36x48 at
/// network resolution) resized by the non-integer factor 4/3 to 64x48.
#[test]
fn label_edge_and_confidence_dip_land_on_the_same_column_at_a_non_integer_scale() {
    let (c, h, w) = (3, 36, 48);
    let mut values = vec![0.1f32; c * h * w];
    for y in 0..h {
        for x in 0..w {
            let class = if x < 20 { 0 } else { 2 };
            values[(class * h + y) * w + x] = 0.8;
        }
    }
    let probs = Tensor::from_slice(&values).view([c as i64, h as i64, w as i64]);
    let (labels, confidence) = bayes_perception::engine::resized_argmax(&probs, 64, 48);
    for y in 0..48 {
        let row_labels: Vec<i64> = (0..64).map(|x| labels.int64_value(&[y, x])).collect();
        let row_conf: Vec<f64> = (0..64).map(|x| confidence.double_value(&[y, x])).collect();
        let edge = row_labels
            .iter()
            .position(|&l| l == 2)
            .expect("class 2 present");
        assert!(
            row_labels[..edge].iter().all(|&l| l == 0)
                && row_labels[edge..].iter().all(|&l| l == 2)
        );
        // The source edge (between columns 19 and 20, at 20.0 in pixel-edge coordinates)
        // maps to 20 * 4/3 = 26.67 at the output: class 2 starts at column 27.
        assert_eq!(edge, 27, "row {y}");
        // The confidence dips at the columns next to the edge and nowhere else.
        let (dip, lowest) = row_conf
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(x, &v)| (x, v))
            .unwrap();
        assert!(
            dip == edge - 1 || dip == edge,
            "row {y}: dip at {dip}, edge at {edge}"
        );
        assert!(lowest < 0.7, "row {y}: no dip ({lowest})");
        for (x, &v) in row_conf.iter().enumerate() {
            if x + 1 < edge - 1 || x > edge + 1 {
                assert!((v - 0.8).abs() < 1e-6, "row {y}, column {x}: {v}");
            }
        }
        // p̄ of the chosen label, from the resized p̄.
        let resized = probs
            .unsqueeze(0)
            .upsample_bilinear2d([48, 64], false, None, None)
            .squeeze_dim(0);
        for x in 0..64 {
            let p = resized.double_value(&[row_labels[x], y, x as i64]);
            assert!((p - row_conf[x]).abs() < 1e-6);
        }
    }
}

#[test]
fn invalid_engine_settings_are_rejected() {
    let _lock = common::rng_lock();
    let model = common::tiny_model(3, false);
    let e = Engine::new(model, config(Mode::Mc, 1, None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("mc.samples") && e.contains("at least 2"), "{e}");
    let mut ok = engine(3, false, config(Mode::Aleatoric, 1, None));
    let e = ok
        .set_config(EngineConfig {
            mc_batch_size: Some(0),
            ..config(Mode::Mc, 4, None)
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("mc.batch_size"), "{e}");
    ok.set_config(config(Mode::Mc, 4, None)).unwrap();
    assert_eq!(ok.config().mode, Mode::Mc);
}

#[test]
fn empty_image_is_an_error_not_a_panic() {
    let _lock = common::rng_lock();
    let e = engine(3, true, config(Mode::Aleatoric, 1, None));
    let err = e
        .predict(&image::RgbImage::new(0, 5))
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty image"), "{err}");
}

#[test]
fn native_size_that_is_not_a_multiple_of_the_poolings_is_padded_and_cropped() {
    let _lock = common::rng_lock();
    // Native 30x45 with two poolings: padded to 32x48 inside, outputs exactly 45x30.
    let spec = bayes_perception::model::random_spec(common::tiny_arch(), None, 3, true, 30, 45);
    let model = bayes_perception::model::Model::new(spec, Device::Cpu).unwrap();
    let e = Engine::new(model, config(Mode::Mc, 3, Some(6))).unwrap();
    for (w, h) in [(45, 30), (90, 60), (17, 11)] {
        let p = e.predict(&common::pattern(w, h)).unwrap();
        for (name, img) in floats(&p) {
            assert_eq!(img.dimensions(), (w, h), "{name}");
        }
        assert_eq!(p.semantic.unwrap().labels.dimensions(), (w, h));
    }
}

#[test]
fn libtorch_failure_during_predict_is_an_error_not_a_crash() {
    let _lock = common::rng_lock();
    let model = common::tiny_model(3, true);
    // Corrupt a weight's shape behind the network's back: the first conv now expects 5
    // input channels, so libtorch fails inside the forward pass.
    let mut weight = model.vs.variables()["first_conv.weight"].shallow_clone();
    tch::no_grad(|| weight.set_data(&Tensor::zeros([8, 5, 3, 3], (Kind::Float, Device::Cpu))));
    let e = Engine::new(model, config(Mode::Aleatoric, 1, None)).unwrap();
    let err = e.predict(&common::pattern(32, 32)).unwrap_err().to_string();
    assert!(err.starts_with("inference failed:"), "{err}");
    assert!(err.contains("channels"), "{err}");
}

#[test]
fn depth_unit_scales_outputs_and_untrained_variance_heads_are_not_reported() {
    let _lock = common::rng_lock();
    let model = common::tiny_model(3, true);
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    let load = |edit: &dyn Fn(&mut bayes_perception::model::ModelSpec)| {
        let mut spec = bayes_perception::model::ModelSpec::load(dir.path()).unwrap();
        edit(&mut spec);
        let other = tempfile::tempdir().unwrap();
        std::fs::copy(
            dir.path().join("model.safetensors"),
            other.path().join("model.safetensors"),
        )
        .unwrap();
        std::fs::write(
            other.path().join("model.yaml"),
            serde_yaml::to_string(&spec).unwrap(),
        )
        .unwrap();
        Engine::load(other.path(), config(Mode::Aleatoric, 1, Some(1))).unwrap()
    };
    let image = common::pattern(32, 32);
    let base = load(&|_| {}).predict(&image).unwrap().depth.unwrap();
    let scaled = load(&|s| s.tasks.depth.as_mut().unwrap().unit_m = 10.0)
        .predict(&image)
        .unwrap()
        .depth
        .unwrap();
    for (a, b) in base.depth_m.iter().zip(scaled.depth_m.iter()) {
        assert!(
            a.is_nan() && b.is_nan() || (b - 10.0 * a).abs() <= 1e-4 * b.abs().max(1.0),
            "{a} vs {b}"
        );
    }
    for (a, b) in base
        .aleatoric_std_m
        .as_ref()
        .unwrap()
        .iter()
        .zip(scaled.aleatoric_std_m.as_ref().unwrap().iter())
    {
        assert!((b - 10.0 * a).abs() <= 1e-4 * b.max(1.0), "{a} vs {b}");
    }
    let homoscedastic = load(&|s| {
        s.tasks.depth.as_mut().unwrap().aleatoric = false;
        s.tasks.semantic.as_mut().unwrap().aleatoric = false;
    });
    let p = homoscedastic.predict(&image).unwrap();
    assert!(p.depth.unwrap().aleatoric_std_m.is_none());
    // Without logit noise the semantic aleatoric image is the entropy of the plain softmax:
    // the same for every seed.
    let again = homoscedastic.predict(&image).unwrap();
    assert_eq!(
        p.semantic.unwrap().aleatoric_entropy,
        again.semantic.unwrap().aleatoric_entropy
    );
}

/// The bundled demo model (models/demo) loads and does its job on synthetic scenes it has
/// not seen: a regression check on the model files, loading and pre/post-processing. The
/// bounds are far below its measured test figures (models/demo/README.md), far above what
/// a broken pipeline gives (random weights: accuracy ~0.1, depth rel ~1; swapped colour
/// channels: 0.59 and 0.17).
#[test]
fn demo_model_segments_and_measures_unseen_synthetic_scenes() {
    let _lock = common::rng_lock();
    use bayes_perception::synth::{render, SceneConfig};
    use bayes_perception::train::metrics::{Confusion, DepthErrors};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo");
    let model = bayes_perception::model::Model::load(&dir, Device::Cpu).unwrap();
    let classes = model.spec.num_classes();
    let engine = Engine::new(model, config(Mode::Aleatoric, 1, Some(0))).unwrap();
    let cfg = SceneConfig {
        width: 240,
        height: 180,
        ood: false,
        noise_sigma: SceneConfig::NOISE_SIGMA,
    };
    let (mut confusion, mut depth) = (Confusion::new(classes), DepthErrors::default());
    for index in 0..3 {
        // A seed no split of the demo model's data uses.
        let scene = render(424_242, index, cfg);
        let p = engine.predict(&scene.rgb).unwrap();
        let s = p.semantic.as_ref().unwrap();
        let truth: Vec<i64> = scene.labels.pixels().map(|l| l.0[0] as i64).collect();
        let predicted: Vec<i64> = scene
            .labels
            .enumerate_pixels()
            .map(|(x, y, _)| s.labels.get(x, y) as i64)
            .collect();
        confusion.add(&truth, &predicted);
        depth.add(
            scene.depth_m.as_raw(),
            p.depth.as_ref().unwrap().depth_m.as_raw(),
        );
    }
    let (accuracy, rel) = (confusion.pixel_accuracy(), depth.rel());
    assert!(accuracy > 0.8, "pixel accuracy {accuracy:.3}");
    assert!(rel < 0.2, "depth rel {rel:.3}");
}

/// `device_colors` (bench --device-colors): the colour messages made on the device are the
/// bytes the host makes from the same outputs, for every colour message of both modes, with
/// the engine's colour ranges, 8- and 16-bit labels; the other outputs do not change.
#[test]
fn colours_made_on_the_device_are_the_hosts_bytes() {
    use bayes_perception::config::ColormapParams;
    use bayes_perception::msg::outputs::{build_outputs, OutputTopic};
    use bayes_perception::output::FloatKind;
    let _lock = common::rng_lock();
    let image = common::pattern(45, 27);
    let ranges = ColormapParams {
        semantic_aleatoric_max_nats: 0.7,
        depth_aleatoric_max_m: 0.05,
        ..ColormapParams::default()
    };
    for (classes, mode, colored) in [
        (
            4,
            Mode::Mc,
            vec![
                FloatKind::SemanticAleatoric,
                FloatKind::SemanticEpistemic,
                FloatKind::DepthAleatoric,
                FloatKind::DepthEpistemic,
            ],
        ),
        (
            300,
            Mode::Aleatoric,
            vec![FloatKind::SemanticAleatoric, FloatKind::DepthAleatoric],
        ),
    ] {
        let model_dir = tempfile::tempdir().unwrap();
        common::tiny_model(classes, true)
            .save(model_dir.path())
            .unwrap();
        let run = |device_colors| {
            let cfg = EngineConfig {
                device_colors,
                colormap: ranges.clone(),
                ..config(mode, 3, Some(5))
            };
            let engine = Engine::load(model_dir.path(), cfg).unwrap();
            let palette = engine.model().spec.palette();
            (engine.predict(&image).unwrap(), palette)
        };
        let ((host, palette), (device, _)) = (run(false), run(true));
        assert!(same_outputs(&host, &device), "{mode}: outputs changed");
        assert!(host.device_colors.is_none());
        let made = device.device_colors.as_ref().expect("device colours");
        let kinds: Vec<FloatKind> = made.floats.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, colored, "{mode}");
        assert!(made.labels.is_some());
        let header = bayes_perception::msg::Header::default();
        let messages = |p: &Prediction| build_outputs(p, &header, &palette, &ranges, |_| true);
        let (on_host, on_device) = (messages(&host), messages(&device));
        assert_eq!(on_host.len(), on_device.len());
        let mut compared = 0;
        for ((topic, a), (_, b)) in on_host.iter().zip(&on_device) {
            assert!(a.data == b.data, "{mode}, {topic:?}: the messages differ");
            compared += topic.is_color() as usize;
        }
        assert_eq!(compared, colored.len() + 1, "{mode}: colour messages");
        // The device's colours are what the messages carry (blanked, the message is
        // blank), and messages asked for with other ranges are coloured again.
        let topic = OutputTopic::SemanticAleatoricColor;
        let pick = |p: &Prediction, ranges: &ColormapParams| {
            build_outputs(p, &header, &palette, ranges, |t| t == topic)
                .remove(0)
                .1
                .data
        };
        let mut blanked = device.clone();
        let made = blanked.device_colors.as_mut().unwrap();
        for (_, image) in &mut made.floats {
            image.fill(0);
        }
        assert!(pick(&blanked, &ranges).iter().all(|&b| b == 0), "{mode}");
        let other = ColormapParams {
            semantic_aleatoric_max_nats: 2.5,
            ..ranges.clone()
        };
        assert!(
            pick(&blanked, &other) == pick(&host, &other),
            "{mode}: other ranges"
        );
        assert!(
            pick(&host, &other) != pick(&host, &ranges),
            "{mode}: ranges change colours"
        );
    }
}

/// A depth-only model without a trained variance head has no colour message in aleatoric
/// mode: nothing is coloured on the device (and nothing fails), the depth comes as usual.
#[test]
fn nothing_to_colour_on_the_device_is_no_device_colours() {
    let _lock = common::rng_lock();
    let mut spec = common::tiny_spec(0, true);
    assert!(spec.tasks.semantic.is_none());
    spec.tasks.depth.as_mut().unwrap().aleatoric = false;
    let model = bayes_perception::model::Model::new(spec, Device::Cpu).unwrap();
    let cfg = EngineConfig {
        device_colors: true,
        ..config(Mode::Aleatoric, 1, Some(1))
    };
    let p = Engine::new(model, cfg)
        .unwrap()
        .predict(&common::pattern(20, 12))
        .unwrap();
    assert!(p.device_colors.is_none());
    let depth = p.depth.unwrap();
    assert!(depth.aleatoric_std_m.is_none() && depth.epistemic_std_m.is_none());
    assert_eq!(depth.depth_m.dimensions(), (20, 12));
}
