//! `bayes_perception train --config train.yaml`: train a model on a dataset.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bayes_perception::train::trainer::{train, Progress, Stop, TrainConfig, Validation};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::TrainArgs;

/// A progress bar on a terminal; without one (a log file, a service) the bar is hidden
/// and a plain line is printed every [`LOG_EVERY`] instead.
struct Bars {
    bar: ProgressBar,
    loss: f64,
    last_line: Instant,
    /// Images since the last plain line, for its average rate.
    images_since_line: usize,
}

const LOG_EVERY: Duration = Duration::from_secs(30);

impl Progress for Bars {
    fn started(&mut self, summary: &str) {
        println!("{summary}");
        self.last_line = Instant::now();
        self.images_since_line = 0;
    }

    fn epoch_started(&mut self, epoch: usize, batches: usize, done: usize) {
        self.bar = ProgressBar::new(batches as u64);
        self.bar.set_position(done as u64);
        self.bar.reset_eta();
        self.loss = f64::NAN;
        self.bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} {bar:30} {pos}/{len} batches {msg} ETA {eta}",
            )
            .expect("valid template"),
        );
        self.bar.set_prefix(epoch.to_string());
    }

    fn batch_done(&mut self, loss: f64, images: usize, seconds: f64) {
        // A batch not stepped (its loss not finite) is left out of the average, which one
        // infinite loss would hold at inf for the rest of the epoch.
        if loss.is_finite() {
            self.loss = if self.loss.is_nan() {
                loss
            } else {
                0.9 * self.loss + 0.1 * loss
            };
        }
        self.bar.set_message(format!(
            "loss {:.3}, {:.1} img/s",
            self.loss,
            images as f64 / seconds.max(1e-9)
        ));
        self.images_since_line += images;
        self.bar.inc(1);
        let since = self.last_line.elapsed();
        if self.bar.is_hidden() && since >= LOG_EVERY {
            println!(
                "epoch {}: batch {}/{}, loss {:.3}, {:.1} img/s over the last {:.0} s",
                self.bar.prefix(),
                self.bar.position(),
                self.bar.length().unwrap_or(0),
                self.loss,
                self.images_since_line as f64 / since.as_secs_f64(),
                since.as_secs_f64()
            );
            self.last_line = Instant::now();
            self.images_since_line = 0;
        }
    }

    fn epoch_done(&mut self, epoch: usize, train_loss: f64, v: &Validation, lr: f64) {
        self.bar.finish_and_clear();
        let fmt = |name: &str, value: Option<f64>| {
            value.map_or(String::new(), |x| format!(", {name} {x:.3}"))
        };
        println!(
            "epoch {epoch}: train loss {train_loss:.4}, lr {lr:.2e}{}{}{}{}",
            fmt("val mIoU", v.mean_iou),
            fmt("pixel acc", v.pixel_accuracy),
            fmt("depth rel", v.depth_rel),
            fmt("depth rms", v.depth_rms)
        );
    }
}

pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    if let Some(device) = &args.device {
        if let Err(e) = device.parse::<bayes_perception::device::DeviceRequest>() {
            super::usage!("--device: {e}");
        }
    }
    if args.epochs == Some(0) {
        super::usage!("--epochs must be at least 1");
    }
    let mut cfg = TrainConfig::load(&args.config)?;
    if let Some(device) = args.device {
        cfg.training.device = device;
    }
    if let Some(epochs) = args.epochs {
        cfg.training.epochs = epochs;
    }
    cfg.output.resume |= args.resume;
    let interrupted = super::interrupt::graceful();
    let command = super::command_line(0).join(" ");
    let mut bars = Bars {
        bar: ProgressBar::hidden(),
        loss: 0.0,
        last_line: Instant::now(),
        images_since_line: 0,
    };
    let trained = train(&cfg, &command, interrupted, &mut bars)?;
    let run_dir = trained.run_dir;
    bars.bar.finish_and_clear();
    let was_interrupted = trained.stopped == Stop::Interrupted;
    let has_last = run_dir.join("last/model.yaml").is_file();
    let status = match trained.stopped {
        Stop::Interrupted if trained.unsaved_epoch.is_none() => {
            "interrupted, checkpoint saved".to_owned()
        }
        Stop::Interrupted => "interrupted".to_owned(),
        Stop::Epochs => format!(
            "done: all {} epoch(s) of training.epochs run",
            cfg.training.epochs
        ),
        Stop::EarlyStopping => format!(
            "stopped early: no better validation score in {} epochs",
            cfg.training.early_stopping
        ),
        Stop::TimeLimit => format!(
            "stopped: training.max_minutes ({}) reached, every resumed part counted",
            cfg.training.max_minutes
        ),
    };
    let status = match trained.unsaved_epoch {
        Some(epoch) => format!(
            "{status} (epoch {epoch} ended among batches whose loss was not finite and was \
             not saved)"
        ),
        None => status,
    };
    if trained.has_best {
        println!(
            "{status}: best model in {}, last in {}, per-epoch figures in {}",
            run_dir.join("best").display(),
            run_dir.join("last").display(),
            run_dir.join("metrics.csv").display()
        );
    } else if has_last {
        println!(
            "{status}: no epoch was saved after its validation, so there is no best model \
             yet; last in {}",
            run_dir.join("last").display()
        );
    } else {
        println!(
            "{status}: no checkpoint was saved (per-epoch figures in {})",
            run_dir.join("metrics.csv").display()
        );
    }
    // A run that ends without any model to show for it fails.
    if !has_last && !was_interrupted {
        return Ok(ExitCode::FAILURE);
    }
    Ok(if was_interrupted {
        ExitCode::from(super::interrupt::EXIT_INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    })
}
