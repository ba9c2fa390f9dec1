//! Helpers shared by the integration tests: tiny models and images, so the suite runs in
//! seconds on a CPU.
#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard};

use bayes_perception::model::{random_spec, ArchConfig, Model, ModelSpec};
use tch::Device;

/// A 2-level FC-DenseNet small enough for debug-build tests (native input 32x32).
pub fn tiny_arch() -> ArchConfig {
    ArchConfig {
        first_conv_channels: 8,
        growth_rate: 4,
        down_blocks: vec![2, 2],
        bottleneck_layers: 2,
        up_blocks: vec![2, 2],
        dropout: 0.2,
    }
}

pub fn tiny_spec(classes: usize, depth: bool) -> ModelSpec {
    random_spec(tiny_arch(), None, classes, depth, 32, 32)
}

pub fn tiny_model(classes: usize, depth: bool) -> Model {
    Model::new(tiny_spec(classes, depth), Device::Cpu).unwrap()
}

/// A smooth test pattern with some texture.
pub fn pattern(width: u32, height: u32) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x * 255 / width.max(1)) as u8,
            (y * 255 / height.max(1)) as u8,
            ((x * 7 + y * 13) % 256) as u8,
        ])
    })
}

/// libtorch's random generator is process-global: tests in one binary that seed it and
/// draw take this lock so they do not interleave, and so does any test of such a binary
/// that builds a model in-process (`Model::new`, `tiny_model`, `Engine::load`: the
/// initial weights are drawn from it before a load overwrites them).
pub fn rng_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `bayes_perception` binary of this build, with no inherited log or backtrace
/// settings (so its output is what a user sees).
pub fn bin() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bayes_perception"));
    cmd.env_remove("RUST_LOG").env("RUST_BACKTRACE", "0");
    cmd
}

/// A child process whose stdout and stderr go to files, not pipes: a pipe nobody reads
/// while the test waits on something else blocks a child that writes more than the pipe
/// holds (64 KiB), and the test would then wait for ever.
pub struct Logged {
    child: std::process::Child,
    stdout: std::fs::File,
    stderr: std::fs::File,
}

impl Logged {
    pub fn spawn(cmd: &mut std::process::Command) -> Logged {
        let stdout = tempfile::tempfile().unwrap();
        let stderr = tempfile::tempfile().unwrap();
        let child = cmd
            .stdout(stdout.try_clone().unwrap())
            .stderr(stderr.try_clone().unwrap())
            .spawn()
            .unwrap();
        Logged {
            child,
            stdout,
            stderr,
        }
    }

    /// Sends the child `signal` (libc's number).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Whether the child has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Waits until `ready()` holds (true) or the child exits first (false). Ten minutes of
    /// neither fails the test, with what the child wrote: a guard against a hang, not a
    /// measure of speed.
    pub fn wait_for(&mut self, mut ready: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + Self::PATIENCE;
        loop {
            if ready() {
                return true;
            }
            if self.exited() {
                return false;
            }
            self.give_up_after(deadline, "neither ready nor exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// How long a wait may take before the child is taken for hung.
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(600);

    /// Past `deadline`: kills the child and fails the test with what it wrote.
    fn give_up_after(&mut self, deadline: std::time::Instant, what: &str) {
        if std::time::Instant::now() > deadline {
            self.child.kill().ok();
            let output = self.wait_with_output_ref();
            panic!(
                "{what} in {} s; stderr: {}",
                Self::PATIENCE.as_secs(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    /// Kills the child (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        self.child.kill().ok();
        self.child.wait().unwrap();
    }

    /// Waits for the child to exit (ten minutes at most, as [`Logged::wait_for`]); its
    /// status and everything it wrote.
    pub fn wait_with_output(mut self) -> std::process::Output {
        let deadline = std::time::Instant::now() + Self::PATIENCE;
        while !self.exited() {
            self.give_up_after(deadline, "not exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        self.wait_with_output_ref()
    }

    fn wait_with_output_ref(&mut self) -> std::process::Output {
        use std::io::{Read, Seek};
        let status = self.child.wait().unwrap();
        let read = |file: &mut std::fs::File| {
            let mut bytes = Vec::new();
            file.seek(std::io::SeekFrom::Start(0)).unwrap();
            file.read_to_end(&mut bytes).unwrap();
            bytes
        };
        std::process::Output {
            status,
            stdout: read(&mut self.stdout),
            stderr: read(&mut self.stderr),
        }
    }
}

/// A stored message: topic, type, log time and CDR data.
pub type StoredMessage = (String, String, u64, Vec<u8>);

/// Every message of `bag`, in storage order.
pub fn bag_messages(bag: &std::path::Path) -> Vec<StoredMessage> {
    let (messages, read) = read_messages(bag);
    read.unwrap();
    messages
}

/// The messages of `bag` read before the end or an error, and how reading ended.
pub fn read_messages(
    bag: &std::path::Path,
) -> (
    Vec<StoredMessage>,
    Result<(), bayes_perception::bag::BagError>,
) {
    let mut messages = Vec::new();
    let read = bayes_perception::bag::BagReader::open(bag)
        .unwrap()
        .read(|m| {
            messages.push((
                m.topic.to_owned(),
                m.type_name.to_owned(),
                m.log_time,
                m.data.to_vec(),
            ));
            std::ops::ControlFlow::Continue(())
        });
    (messages, read)
}
