//! The losses drive learning: on a tiny synthetic set, a tiny model's combined semantic and
//! depth loss falls within a few optimiser steps (CPU, seconds).

mod common;

use bayes_perception::model::{Likelihood, Pass};
use bayes_perception::train::loss::{depth_loss, semantic_loss};
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor};

/// The tiny FC-DenseNet the trainer tests train, as YAML under `architecture:`.
const TINY_ARCH: &str = "preset: custom\n    first_conv_channels: 8\n    growth_rate: 4\n    down_blocks: [1, 1]\n    bottleneck_layers: 1\n    up_blocks: [1, 1]";

/// Runs `bayes_perception train --config CONFIG EXTRA...`.
fn train(config: &std::path::Path, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_bayes_perception"))
        .arg("train")
        .arg("--config")
        .arg(config)
        .args(extra)
        .output()
        .unwrap()
}

/// [`train`], which must succeed; its stdout.
fn train_ok(config: &std::path::Path, extra: &[&str]) -> String {
    let out = train(config, extra);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Six training and two validation scenes from `synth`, 64x48, in `DIR/data`.
fn synth_data(dir: &std::path::Path) {
    for (split, count) in [("train", "6"), ("val", "2")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bayes_perception"))
            .args(["synth", "--out"])
            .arg(dir.join("data"))
            .args([
                "--count", count, "--split", split, "--width", "64", "--height", "48",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

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

#[test]
fn trainer_writes_checkpoints_and_metrics_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    synth_data(tmp.path());
    let config = format!("data:\n  layout: camvid\n  root: data\nmodel:\n  name: tiny\n  architecture:\n    {TINY_ARCH}\n  tasks: [semantic, depth]\ntraining:\n  epochs: 2\n  batch_size: 3\n  crop: [32, 32]\n  device: cpu\noutput:\n  dir: run\n");
    std::fs::write(tmp.path().join("train.yaml"), &config).unwrap();
    let run = |extra: &[&str]| train_ok(&tmp.path().join("train.yaml"), extra);
    let text = run(&[]);
    assert!(
        text.contains("epoch 2: train loss") && text.contains("val mIoU"),
        "{text}"
    );
    let csv = std::fs::read_to_string(tmp.path().join("run/metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    // The checkpoints are model directories the engine loads, at the data's native size.
    // Building a model draws its initial weights from libtorch's global generator: not
    // while a seeded test of this binary runs (it made the resumed run differ).
    let rng = common::rng_lock();
    for dir in ["best", "last"] {
        let engine = bayes_perception::Engine::load(
            &tmp.path().join("run").join(dir),
            bayes_perception::EngineConfig {
                device: "cpu".parse().unwrap(),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            (
                engine.model().spec.input.height,
                engine.model().spec.input.width
            ),
            (48, 64)
        );
        assert_eq!(engine.model().spec.num_classes(), 11);
        let provenance = &engine.model().spec.provenance;
        assert!(provenance.contains_key("command"));
        let epoch = provenance["epoch"].as_u64().unwrap();
        let iou = provenance["validation"]["mean_iou"].as_f64().unwrap();
        if dir == "last" {
            assert_eq!(epoch, 2);
        } else {
            // best/ is the first epoch with the highest validation mean IoU in metrics.csv.
            let ious: Vec<f64> = csv
                .lines()
                .skip(1)
                .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
                .collect();
            let top = ious.iter().cloned().fold(f64::MIN, f64::max);
            let best_epoch = ious.iter().position(|&v| v == top).unwrap() as u64 + 1;
            assert_eq!(epoch, best_epoch, "{csv}");
            assert!((iou - top).abs() < 1e-5, "{iou} vs {top}");
        }
    }
    drop(rng);
    // A new run into the same directory would overwrite this one: refused, nothing touched.
    let out = train(&tmp.path().join("train.yaml"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("holds an earlier run (last/); pass --resume"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("run/metrics.csv")).unwrap(),
        csv
    );
    // Resume continues from last/ up to the new epoch count.
    let text = run(&["--resume", "--epochs", "3"]);
    assert!(
        text.contains("epoch 3:") && !text.contains("epoch 1:"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("run/metrics.csv"))
            .unwrap()
            .lines()
            .count(),
        4
    );
    let last = bayes_perception::model::ModelSpec::load(&tmp.path().join("run/last")).unwrap();
    assert_eq!(last.provenance["epoch"].as_u64(), Some(3));
    // The resuming command is recorded (and the one before it kept), with its config.
    let command = last.provenance["command"].as_str().unwrap();
    assert!(command.contains("--epochs 3"), "{command}");
    let earlier = last.provenance["earlier_commands"].as_sequence().unwrap();
    assert_eq!(earlier.len(), 1, "{earlier:?}");
    assert_eq!(
        last.provenance["config"]["training"]["epochs"].as_u64(),
        Some(3)
    );
    // A config that describes another model cannot resume this one: refused, naming what
    // differs, nothing touched.
    std::fs::write(
        tmp.path().join("other.yaml"),
        config.replace("growth_rate: 4", "growth_rate: 6"),
    )
    .unwrap();
    let csv = std::fs::read_to_string(tmp.path().join("run/metrics.csv")).unwrap();
    let out = train(
        &tmp.path().join("other.yaml"),
        &["--resume", "--epochs", "4"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("architecture.growth_rate: 6 in the config, 4 in the checkpoint"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("run/metrics.csv")).unwrap(),
        csv
    );
    // Without last/ (removed to save space) there is nothing to continue, but metrics.csv
    // (3 epochs) and best/ are still an earlier run's: refused with and without --resume.
    std::fs::remove_dir_all(tmp.path().join("run/last")).unwrap();
    let csv = std::fs::read_to_string(tmp.path().join("run/metrics.csv")).unwrap();
    for extra in [&[][..], &["--resume"]] {
        let out = train(&tmp.path().join("train.yaml"), extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("earlier run's results (") && stderr.contains("no last/ checkpoint"),
            "{stderr}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("run/metrics.csv")).unwrap(),
        csv
    );
    // The homoscedastic baseline trains and says so in model.yaml.
    std::fs::write(
        tmp.path().join("homo.yaml"),
        config.replace(
            "output:\n  dir: run",
            "loss:\n  homoscedastic: true\noutput:\n  dir: homo",
        ),
    )
    .unwrap();
    // --resume with nothing to resume starts a new run and says so on its first line.
    let text = train_ok(&tmp.path().join("homo.yaml"), &["--resume"]);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains("homo (no last/ checkpoint): a new run"),
        "{text}"
    );
    let spec = bayes_perception::model::ModelSpec::load(&tmp.path().join("homo/best")).unwrap();
    assert!(!spec.tasks.semantic.unwrap().aleatoric && !spec.tasks.depth.unwrap().aleatoric);
    // Channels-last training writes checkpoints the engine loads like any other.
    std::fs::write(
        tmp.path().join("cl.yaml"),
        config.replace(
            "  device: cpu\noutput:\n  dir: run",
            "  device: cpu\n  channels_last: true\noutput:\n  dir: cl",
        ),
    )
    .unwrap();
    train_ok(&tmp.path().join("cl.yaml"), &["--epochs", "1"]);
    let cl = bayes_perception::Engine::load(
        &tmp.path().join("cl/last"),
        bayes_perception::EngineConfig {
            device: "cpu".parse().unwrap(),
            ..Default::default()
        },
    )
    .unwrap();
    let validation = &cl.model().spec.provenance["validation"];
    assert!(validation["mean_iou"].as_f64().is_some(), "{validation:?}");
    // Config errors name the key.
    std::fs::write(
        tmp.path().join("bad.yaml"),
        config.replace("layout: camvid", "layout: kitti"),
    )
    .unwrap();
    let out = train(&tmp.path().join("bad.yaml"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("data.layout"));
}

/// The documented config (config/train.yaml) is valid as committed, and trains on a
/// directory laid out like the real CamVid (SPLIT/ and SPLITannot/ PNGs, ids 0..10 with 11
/// = void, no depth) once its data root, tasks and size are pointed at it.
#[test]
fn documented_config_trains_on_a_camvid_directory_without_depth() {
    use bayes_perception::train::trainer::TrainConfig;
    let documented = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/train.yaml");
    let cfg = TrainConfig::load(&documented).unwrap();
    assert_eq!(cfg.model.tasks, ["semantic", "depth"]);

    let tmp = tempfile::tempdir().unwrap();
    let (w, h) = (64u32, 48u32);
    for (split, count) in [("train", 4), ("val", 2)] {
        for dir in [split.to_owned(), format!("{split}annot")] {
            std::fs::create_dir_all(tmp.path().join("camvid").join(dir)).unwrap();
        }
        for i in 0..count {
            let name = format!("0001TP_{i:06}.png");
            let rgb = image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([(x * 4) as u8, (y * 5) as u8, (i * 40) as u8])
            });
            // Left half road (3), right half sky (0), a void (11) stripe between.
            let labels = image::GrayImage::from_fn(w, h, |x, _| {
                image::Luma([match x {
                    0..=29 => 3,
                    30..=33 => 11,
                    _ => 0,
                }])
            });
            rgb.save(tmp.path().join("camvid").join(split).join(&name))
                .unwrap();
            labels
                .save(
                    tmp.path()
                        .join("camvid")
                        .join(format!("{split}annot"))
                        .join(&name),
                )
                .unwrap();
        }
    }
    // The documented file with only the data, task and size keys changed; each edited
    // line must be there exactly once (else the test would train something else).
    let text = std::fs::read_to_string(&documented).unwrap();
    let mut edited = text.clone();
    for (line, new) in [
        (
            "root: ../data/synth",
            format!("root: {}", tmp.path().join("camvid").display()),
        ),
        ("tasks: [semantic, depth]", "tasks: [semantic]".into()),
        ("preset: fcdensenet56", TINY_ARCH.into()),
        ("epochs: 12", "epochs: 1".into()),
        // Wider than the 64-pixel images: cropped to their width, and said.
        ("crop: [160, 160]", "crop: [32, 80]".into()),
        ("device: auto", "device: cpu".into()),
        (
            "dir: ../runs/demo",
            format!("dir: {}", tmp.path().join("run").display()),
        ),
    ] {
        assert_eq!(edited.matches(line).count(), 1, "{line}");
        edited = edited.replace(line, &new);
    }
    let config = tmp.path().join("train.yaml");
    std::fs::write(&config, edited).unwrap();
    let out = train(&config, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("epoch 1: train loss") && stdout.contains("val mIoU"),
        "{stdout}"
    );
    assert!(!stdout.contains("depth rel"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr
            .matches(
                "training.crop 32x80 (height x width) is larger than the smallest training \
                 images: crops of 32x64 are taken"
            )
            .count(),
        1,
        "{stderr}"
    );
    let spec = bayes_perception::model::ModelSpec::load(&tmp.path().join("run/best")).unwrap();
    assert_eq!(spec.num_classes(), 11);
    assert!(spec.tasks.depth.is_none());
    assert_eq!((spec.input.width, spec.input.height), (w as i64, h as i64));
}

/// The comparison's baseline config differs from the demo model's in the loss alone (and
/// the name and output folder), so the two bundled models compare like for like.
#[test]
fn baseline_config_is_the_demo_config_with_the_homoscedastic_loss() {
    use bayes_perception::train::trainer::TrainConfig;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let demo = TrainConfig::load(&dir.join("train.yaml")).unwrap();
    let mut baseline = TrainConfig::load(&dir.join("train_baseline.yaml")).unwrap();
    assert!(!demo.loss.homoscedastic && baseline.loss.homoscedastic);
    assert_ne!(baseline.model.name, demo.model.name);
    assert_ne!(baseline.output.dir, demo.output.dir);
    baseline.loss.homoscedastic = false;
    baseline.model.name = demo.model.name.clone();
    baseline.output.dir = demo.output.dir.clone();
    assert_eq!(baseline, demo);
}

#[test]
fn examples_read_for_each_batch_are_those_held_and_a_file_gone_since_is_an_error() {
    use bayes_perception::train::data::{Dataset, Sample};
    use bayes_perception::train::examples::{decoded_bytes, Examples};
    let tmp = tempfile::tempdir().unwrap();
    synth_data(tmp.path());
    let dataset = Dataset::camvid(&tmp.path().join("data"), "train").unwrap();
    let n = dataset.len();
    assert_eq!(n, 6);
    // 64x48 images with labels (2 bytes a pixel) and depth (4).
    assert_eq!(
        decoded_bytes(&dataset, n).unwrap(),
        6 * 64 * 48 * (3 + 2 + 4)
    );
    let held = Examples::read(dataset.clone(), n, true).unwrap();
    let read = Examples::read(dataset.clone(), n, false).unwrap();
    assert!(held.held() && !read.held());
    assert_eq!(held.sizes, vec![(64, 48); 6]);
    assert_eq!(
        (&held.sizes, &held.class_pixels),
        (&read.sizes, &read.class_pixels)
    );
    let pixels = held.class_pixels.as_ref().unwrap();
    assert!(pixels.labelled.iter().sum::<u64>() > 0);
    let same = |a: &Sample, b: &Sample| {
        let bits = |d: &Option<Vec<f32>>| {
            d.as_ref()
                .map(|d| d.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
        };
        a.rgb == b.rgb && a.labels == b.labels && bits(&a.depth) == bits(&b.depth)
    };
    let order = vec![vec![3, 1], vec![0], vec![5, 4, 2]];
    let from_memory: Vec<_> = held.batches(order.clone()).map(Result::unwrap).collect();
    let from_disk: Vec<_> = read.batches(order.clone()).map(Result::unwrap).collect();
    assert_eq!(from_disk.len(), 3);
    for (a, b) in from_memory.iter().zip(&from_disk) {
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(b).all(|(a, b)| same(a, b)));
    }
    // Batches left half way (an interrupted epoch) stop their reader, also while it waits
    // for room to hand over the next (six batches of one: two wait, one is in its hands).
    let mut left = read.batches((0..n).map(|i| vec![i]).collect());
    assert!(left.next().unwrap().is_ok());
    std::thread::sleep(std::time::Duration::from_millis(200));
    drop(left);
    // A file gone since the start ends the batches with its error, at its batch.
    let gone = dataset.files[4].image.clone();
    std::fs::remove_file(&gone).unwrap();
    let results: Vec<_> = read.batches(order).collect();
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok() && results[1].is_ok());
    let e = results[2].as_ref().err().unwrap().to_string();
    assert!(e.contains(&gone.display().to_string()), "{e}");
    // So does one of another size now (the crops were fitted to the sizes at the start).
    let files = &dataset.files[1];
    image::RgbImage::new(32, 24).save(&files.image).unwrap();
    let label = files.label.as_ref().unwrap();
    image::GrayImage::new(32, 24).save(label).unwrap();
    let depth = files.depth.as_ref().unwrap();
    image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::new(32, 24)
        .save(depth)
        .unwrap();
    let e = read
        .batches(vec![vec![1]])
        .next()
        .unwrap()
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("is 32x24 now, 64x48 at the start"), "{e}");
    // At the start, a file that cannot be read stops the run before it trains, the
    // first such file in the split's order named.
    std::fs::write(&dataset.files[0].image, b"not an image").unwrap();
    let e = Examples::read(dataset.clone(), n, false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(&dataset.files[0].image.display().to_string()),
        "{e}"
    );
}

/// Stops a run as Ctrl-C does, after `stop_after` batches; keeps the start-up line.
struct StopAfter<'a> {
    stop_after: usize,
    batches: usize,
    flag: &'a std::sync::atomic::AtomicBool,
    summary: String,
}

impl bayes_perception::train::trainer::Progress for StopAfter<'_> {
    fn started(&mut self, summary: &str) {
        self.summary = summary.to_owned();
    }
    fn epoch_started(&mut self, _epoch: usize, _batches: usize, _done: usize) {}
    fn batch_done(&mut self, _loss: f64, _images: usize, _seconds: f64) {
        self.batches += 1;
        if self.batches == self.stop_after {
            self.flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    fn epoch_done(
        &mut self,
        _epoch: usize,
        _train_loss: f64,
        _validation: &bayes_perception::train::trainer::Validation,
        _lr: f64,
    ) {
    }
}

/// libtorch on one thread while it lives (on this thread, where the training runs); the
/// earlier count afterwards, also after a failed assertion.
struct OneThread(i32);

impl OneThread {
    fn new() -> Self {
        let before = tch::get_num_threads();
        tch::set_num_threads(1);
        OneThread(before)
    }
}

impl Drop for OneThread {
    fn drop(&mut self) {
        tch::set_num_threads(self.0);
    }
}

/// A run stopped twice (mid-epoch, then again in the next epoch) and resumed from `last/`
/// ends with the very weights and figures of the run that was never stopped: the
/// optimiser's state travels with the checkpoint and every batch draws its crops, dropout
/// masks and logit noise from its own seed. Without the optimiser state it would not
/// (checked, so the comparison can fail).
///
/// On one libtorch thread: with several, libtorch's CPU kernels are not reproducible from
/// run to run on a loaded machine (seen with `OMP_NUM_THREADS=3` on 2 cores: two runs
/// never stopped ended 0.005 apart), so bit-for-bit equality is only defined on one.
#[test]
fn resumed_training_takes_the_steps_of_the_uninterrupted_run() {
    use bayes_perception::train::examples::InMemory;
    use bayes_perception::train::trainer::{train, Stop, TrainConfig};
    use std::sync::atomic::AtomicBool;
    let _lock = common::rng_lock();
    let _threads = OneThread::new();
    let tmp = tempfile::tempdir().unwrap();
    synth_data(tmp.path());
    // Adam, dropout and logit noise: every kind of state a resume has to carry.
    let config_with = |dir: &str, training: &str| {
        let path = tmp.path().join(format!("{dir}.yaml"));
        std::fs::write(&path, format!("data:\n  layout: camvid\n  root: data\nmodel:\n  name: tiny\n  architecture:\n    {TINY_ARCH}\n  tasks: [semantic, depth]\nloss:\n  noise_samples: 3\noptimizer:\n  kind: adam\ntraining:\n  epochs: 2\n  batch_size: 2\n  crop: [32, 32]\n  device: cpu\n{training}output:\n  dir: {dir}\n  resume: true\n")).unwrap();
        TrainConfig::load(&path).unwrap()
    };
    let config = |dir: &str| config_with(dir, "");
    // Runs until `stop_after` batches (0: to the end); returns the start-up line, why it
    // stopped and how many batches it trained.
    let run_counted = |cfg: &TrainConfig, stop_after: usize| {
        let flag = AtomicBool::new(false);
        let mut progress = StopAfter {
            stop_after,
            batches: 0,
            flag: &flag,
            summary: String::new(),
        };
        let trained = train(cfg, "test", &flag, &mut progress).unwrap();
        (progress.summary, trained.stopped, progress.batches)
    };
    let run = |cfg: &TrainConfig, stop_after: usize| run_counted(cfg, stop_after).0;
    let weights = |dir: &str| {
        let mut named =
            tch::Tensor::read_safetensors(tmp.path().join(dir).join("last/model.safetensors"))
                .unwrap();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    };
    let apart = |a: &[(String, tch::Tensor)], b: &[(String, tch::Tensor)]| {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|((n, x), (m, y))| {
                assert_eq!(n, m);
                (x - y).abs().max().double_value(&[])
            })
            .fold(0.0, f64::max)
    };
    // Everything in metrics.csv but the time.
    let figures = |dir: &str| {
        std::fs::read_to_string(tmp.path().join(dir).join("metrics.csv"))
            .unwrap()
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_owned())
            .collect::<Vec<_>>()
    };

    let line = run(&config("whole"), 0);
    assert!(!line.contains("read from disk"), "{line}");
    // 3 batches an epoch: stop in epoch 1, then in epoch 2, then run to the end. The
    // parts read their examples from disk for each batch: the same steps as the whole
    // run, which holds them.
    let mut parts = config("parts");
    parts.data.in_memory = InMemory::Never;
    let line = run(&parts, 2);
    assert!(
        line.contains("images read from disk for each batch (data.in_memory: never"),
        "{line}"
    );
    let line = run(&parts, 2);
    assert!(
        line.contains("resumed at epoch 1, batch 3, optimiser state restored"),
        "{line}"
    );
    let stopped = tmp.path().join("parts/last");
    // Killed after saving epoch 2's best/ and before its last/ (the uninterrupted run's
    // epoch 2 validated best, so its best/ is what that run would have left): the epoch
    // redone is the best, not one epoch past it.
    let provenance_epoch = |dir: &str| -> u64 {
        let text = std::fs::read_to_string(tmp.path().join(dir).join("model.yaml")).unwrap();
        let spec: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        spec["provenance"]["epoch"].as_u64().unwrap()
    };
    assert_eq!(
        provenance_epoch("whole/best"),
        2,
        "the case needs epoch 2 best"
    );
    std::fs::remove_dir_all(tmp.path().join("parts/best")).unwrap();
    std::fs::create_dir(tmp.path().join("parts/best")).unwrap();
    for f in ["model.yaml", "model.safetensors"] {
        std::fs::copy(
            tmp.path().join("whole/best").join(f),
            tmp.path().join("parts/best").join(f),
        )
        .unwrap();
    }
    // A copy of the second checkpoint without its optimiser state.
    let bare = tmp.path().join("bare/last");
    std::fs::create_dir_all(&bare).unwrap();
    for f in ["model.yaml", "model.safetensors", "train_state.yaml"] {
        std::fs::copy(stopped.join(f), bare.join(f)).unwrap();
    }
    std::fs::copy(
        tmp.path().join("parts/metrics.csv"),
        tmp.path().join("bare/metrics.csv"),
    )
    .unwrap();
    let line = run(&parts, 0);
    assert!(
        line.contains("resumed at epoch 2, batch 2, optimiser state restored"),
        "{line}"
    );

    let (whole, parts) = (weights("whole"), weights("parts"));
    assert_eq!(apart(&whole, &parts), 0.0);
    let since_best = |dir: &str| -> u64 {
        let path = tmp.path().join(dir).join("last/train_state.yaml");
        let state: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        state["epochs_since_best"].as_u64().unwrap()
    };
    assert_eq!((since_best("whole"), since_best("parts")), (0, 0));
    assert_eq!(figures("whole"), figures("parts"));
    assert_eq!(figures("whole").len(), 3);

    let line = run(&config("bare"), 0);
    assert!(line.contains("WITHOUT optimiser state"), "{line}");
    let off = apart(&whole, &weights("bare"));
    assert!(
        off > 1e-4,
        "a restarted optimiser should land elsewhere: {off}"
    );

    // The time limit is kept to the batch (a run past it stops after the batch in hand,
    // not at the end of its epoch) and counts every part: a run that reached it stops
    // again at once.
    let timed = config_with("timed", "  max_minutes: 0.00001\n");
    let (_, stopped, batches) = run_counted(&timed, 0);
    assert_eq!((stopped, batches), (Stop::TimeLimit, 1));
    let (_, stopped, batches) = run_counted(&timed, 0);
    assert_eq!((stopped, batches), (Stop::TimeLimit, 0));
    // Stopped after an epoch's last batch, before its validation: resumed there (not at
    // "batch 4" of an epoch of 3), and the figures are the uninterrupted run's.
    let edge = config("edge");
    run(&edge, 3);
    let line = run(&edge, 0);
    assert!(
        line.contains("resumed at epoch 1, its batches done, at its validation"),
        "{line}"
    );
    assert_eq!(figures("whole"), figures("edge"));
    // A checkpoint taken mid-epoch under another batch size restarts that epoch.
    run(&config("rebatched"), 2);
    let mut rebatched = config("rebatched");
    rebatched.training.batch_size = 3;
    let (line, stopped, batches) = run_counted(&rebatched, 0);
    assert!(
        line.contains("resumed at epoch 1 from its first batch")
            && line.contains("taken at batch 3"),
        "{line}"
    );
    assert_eq!((stopped, batches), (Stop::Epochs, 4));
}

/// A run whose loss stops being finite skips those batches, saves no epoch that ends
/// among them and stops after 20 in a row, saying why; a validation split without the ground truth of
/// a task, full frames of several sizes in one batch, and settings out of range are
/// refused before training.
#[test]
fn a_diverging_run_stops_and_bad_data_or_settings_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    synth_data(tmp.path());
    let config = |extra: &str| {
        let text = format!("data:\n  layout: camvid\n  root: data\nmodel:\n  name: tiny\n  architecture:\n    {TINY_ARCH}\n  tasks: [semantic, depth]\ntraining:\n  epochs: 6\n  batch_size: 1\n  crop: [32, 32]\n  device: cpu\noutput:\n  dir: run\n{extra}");
        let path = tmp.path().join("train.yaml");
        std::fs::write(&path, text).unwrap();
        path
    };
    let failure = |path: &std::path::Path| {
        let out = train(path, &[]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    // A learning rate of 1e30: the first step throws the weights so far that every later
    // loss is NaN or infinite.
    let (code, text) = failure(&config("optimizer:\n  lr: 1.0e30\n"));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("the loss or its gradients were not finite in 20 batches in a row"),
        "{text}"
    );
    assert!(text.contains("the batch is not stepped"), "{text}");
    // Every epoch ended among those batches, with weights the first step blew up: none
    // was saved.
    assert!(
        text.contains("ended among") && text.contains("no checkpoint was saved (remove"),
        "{text}"
    );
    assert!(!tmp.path().join("run/last").exists(), "{text}");
    std::fs::remove_dir_all(tmp.path().join("run")).unwrap();

    for (extra, key) in [
        ("  color_jitter: 1.5\n", "training.color_jitter"),
        (
            "optimizer:\n  weight_decay: -1.0\n",
            "optimizer.weight_decay",
        ),
        ("loss:\n  depth_weight: .nan\n", "loss.depth_weight"),
        ("loss:\n  noise_samples: 0\n", "loss.noise_samples"),
        ("loss:\n  noise_samples: 1\n", "loss.noise_samples"),
        ("loss:\n  depth_weight: 0.0\n", "loss.depth_weight"),
    ] {
        let extra = if extra.starts_with("  ") {
            // under training:
            let text = std::fs::read_to_string(config("")).unwrap();
            std::fs::write(
                tmp.path().join("train.yaml"),
                text.replace("  device: cpu\n", &format!("  device: cpu\n{extra}")),
            )
            .unwrap();
            None
        } else {
            Some(extra)
        };
        let path = match extra {
            Some(extra) => config(extra),
            None => tmp.path().join("train.yaml"),
        };
        let (code, text) = failure(&path);
        assert_eq!(code, Some(1), "{key}: {text}");
        assert!(text.contains(key), "{key}: {text}");
    }

    // Full frames (crop [0, 0]) in batches of 2 with an image of another size.
    let small = tmp.path().join("small");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bayes_perception"))
        .args(["synth", "--out"])
        .arg(&small)
        .args([
            "--count", "1", "--split", "train", "--width", "32", "--height", "32",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    for dir in ["train", "trainannot", "traindepth"] {
        std::fs::copy(
            small.join(dir).join("00000.png"),
            tmp.path().join("data").join(dir).join("99999.png"),
        )
        .unwrap();
    }
    let full = std::fs::read_to_string(config(""))
        .unwrap()
        .replace("crop: [32, 32]", "crop: [0, 0]")
        .replace("batch_size: 1", "batch_size: 2");
    std::fs::write(tmp.path().join("train.yaml"), full).unwrap();
    let (code, text) = failure(&tmp.path().join("train.yaml"));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("needs training images of one size") && text.contains("99999.png is 32x32"),
        "{text}"
    );

    // A validation split without depth, for a model that predicts depth.
    std::fs::remove_dir_all(tmp.path().join("data/valdepth")).unwrap();
    let (code, text) = failure(&config(""));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("data.val_split")
            && text.contains("depth needs depth files in the validation split"),
        "{text}"
    );
}

/// A batch whose loss is not finite mid-epoch (fail point `train::loss`) is not stepped and
/// the epoch is saved as usual; an epoch that ends on such a batch is not saved (its
/// weights may be a blown-up step's); a run directory in use by another `train` is
/// refused before anything in it is touched.
#[cfg(feature = "failpoints")]
#[test]
fn a_nan_batch_is_skipped_an_epoch_ending_on_one_is_not_saved_and_a_busy_run_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    synth_data(tmp.path());
    let config = tmp.path().join("train.yaml");
    std::fs::write(&config, format!("data:\n  layout: camvid\n  root: data\nmodel:\n  name: tiny\n  architecture:\n    {TINY_ARCH}\n  tasks: [semantic, depth]\ntraining:\n  epochs: 1\n  batch_size: 1\n  crop: [32, 32]\n  device: cpu\noutput:\n  dir: run\n")).unwrap();
    let run = |batch: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bayes_perception"))
            .args(["train", "--config"])
            .arg(&config)
            .env("FAILPOINTS", format!("train::loss=return({batch})"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let run_dir = tmp.path().join("run");

    // Batch 2 of 6: skipped, the epoch saved.
    let (code, text) = run("2");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("epoch 1, batch 2: the loss is NaN; the batch is not stepped"),
        "{text}"
    );
    assert!(
        text.contains("1 batch(es) with a loss that was not finite"),
        "{text}"
    );
    assert!(run_dir.join("best/model.yaml").is_file(), "{text}");
    let model = {
        let _lock = common::rng_lock();
        bayes_perception::model::Model::load(&run_dir.join("last"), Device::Cpu).unwrap()
    };
    for (name, tensor) in model.vs.variables() {
        let finite = tensor.isfinite().all().int64_value(&[]) == 1;
        assert!(finite, "{name} holds NaN or Inf: the NaN batch was stepped");
    }
    std::fs::remove_dir_all(&run_dir).unwrap();

    // The last batch (6 images, batches of 1): nothing saved, and said; a run that ends
    // with no checkpoint at all fails.
    let (code, text) = run("6");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("epoch 1: ended among 1 batch(es) whose loss was not finite"),
        "{text}"
    );
    let last_line = text
        .lines()
        .rfind(|l| l.starts_with("done"))
        .unwrap_or_default();
    assert!(
        last_line.contains("epoch 1 ended among batches whose loss was not finite")
            && last_line.contains("no checkpoint was saved"),
        "{text}"
    );
    assert!(!run_dir.join("last").exists(), "{text}");
    assert!(!run_dir.join("best").exists(), "{text}");
    std::fs::remove_dir_all(&run_dir).unwrap();

    // Another process holds the run directory: refused, its files left as they are.
    std::fs::create_dir_all(run_dir.join("last.tmp")).unwrap();
    let lock = std::fs::File::create(run_dir.join(".lock")).unwrap();
    lock.lock().unwrap();
    let (code, text) = run("0");
    assert_eq!(code, Some(75), "{text}");
    assert!(
        text.contains("is in use by another `train`") && text.contains("output.dir"),
        "{text}"
    );
    assert!(
        run_dir.join("last.tmp").is_dir(),
        "a busy run's files were touched"
    );
    drop(lock);
    let (code, text) = run("0");
    assert_eq!(code, Some(0), "{text}");
    assert!(!run_dir.join("last.tmp").exists(), "{text}");
}
