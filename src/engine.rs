//! The inference engine: owns the device, the weights, `no_grad` and the sampling loop,
//! and turns one RGB image into per-pixel labels, depth and uncertainty images at the
//! image's own resolution. The node, `infer`, `bench` and the bag tools all call
//! [`Engine::predict`] the same way.
//!
//! Resize and pad policy: the image is resized (bilinear, antialiased) to the model's
//! native input size (`input.height` x `input.width` of model.yaml) unless it already has
//! it, then padded at the bottom and right (edge pixels repeated) to multiples of 32 (one
//! per pooling: 2^5 for the presets). The padding is cropped off the head outputs before
//! any reduction, and every output is resized back to the image's size, bilinear with
//! half-pixel centres (the images stay aligned at any scale). Labels and confidence are
//! taken after resizing: the class probabilities p̄ are resized and the label is their
//! argmax, the confidence p̄ of that label, pixel by pixel at the output size. The outputs
//! cover exactly the input's field of view.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use image::{ImageBuffer, Luma, RgbImage};
use tch::{Device, Kind, Tensor};

use crate::colormap::{ColorScale, DeviceColoring, FloatImage};
use crate::config::{ColormapParams, Mode, Params, Precision, MAX_CPU_THREADS};
use crate::cuda_graph::CapturedForward;
use crate::device::{
    cuda_free_memory, cuda_memory, device_name, reset_cuda_peak_memory, DeviceRequest,
};
use crate::error::{Error, Result};
use crate::model::{HeadOutputs, Model, Pass};
use crate::moments::{self, Gaussian};
use crate::msg::outputs::has_color_message;
use crate::output::FloatKind;
use crate::uncertainty::{
    depth_aleatoric_variance, expected_depth_aleatoric_variance, noise_averaged_softmax,
    DepthMoments, LogitNoise, SemanticMoments,
};

/// The MC chunk size used when `mc.batch_size` is -1. On the CPU one pass at a time is
/// fastest (batching only adds memory traffic, see BENCHMARKS.md). On CUDA batching is the
/// main lever: up to 16 passes at once (on the H200 chunks of 16 and 25 run FC-DenseNet103
/// at the same speed), fewer where they do not fit the free memory or
/// `mc.max_gpu_memory_mb` (measured by one extra pass before the first MC frame,
/// [`chunk_for_memory`]).
pub const DEFAULT_CPU_BATCH: usize = 1;
pub const DEFAULT_CUDA_BATCH: usize = 16;

/// Share of the available GPU memory an MC chunk is sized to fill (the rest is margin for
/// the allocator's fragmentation and the post-processing).
const MEMORY_FILL: f64 = 0.9;

/// Everything the engine needs besides the model; built from [`Params`].
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    pub mode: Mode,
    pub device: DeviceRequest,
    /// Number format of the network's weights and activations; fixed when the engine is
    /// built (the reductions after the network are fp32 whatever it is).
    pub precision: Precision,
    /// Weights and activations channels-last (NHWC); fixed when the engine is built.
    pub channels_last: bool,
    /// Experimental (`bench --cuda-graphs`): the deterministic pass (aleatoric mode) runs
    /// as a captured CUDA graph ([`crate::cuda_graph`]); CUDA only, fixed when the engine
    /// is built.
    pub cuda_graphs: bool,
    /// CUDA: cuDNN times its algorithms for each new input shape and keeps the fastest
    /// (a camera's frames keep one shape, and MC its chunk's, so the search is paid on the
    /// first frame, and again for each new image size or chunk); off (`bench
    /// --no-cudnn-benchmark`) to measure what it gains. cuDNN's setting is the process's:
    /// the engine built last sets it. Fixed when the engine is built.
    pub cudnn_benchmark: bool,
    /// CUDA: the output planes come to the host in one copy into a page-locked buffer,
    /// kept while the frame size stays (off: into pageable memory, `bench
    /// --pageable-download`, to measure the difference). Fixed when the engine is built.
    pub pinned_download: bool,
    /// Experimental (`bench --device-colors`): the false-colour twins of the messages (the
    /// uncertainty images' and the labels') are coloured on the device and come to the
    /// host with the other planes ([`Prediction::device_colors`]), instead of being
    /// coloured on the host. Fixed when the engine is built.
    pub device_colors: bool,
    /// The false-colour ranges (used on the device with `device_colors`).
    pub colormap: ColormapParams,
    /// Logit-noise draws per frame (shared by its MC samples) for the semantic aleatoric
    /// uncertainty.
    pub noise_samples: usize,
    /// T, the stochastic passes per frame in mc mode.
    pub mc_samples: usize,
    /// Draws of the semantic head's propagated distribution in moments mode.
    pub moments_head_samples: usize,
    /// How ReLUs and max-pools transform a Gaussian in moments mode.
    pub moments_rules: moments::Rules,
    /// Passes per batched forward; `None` picks per device.
    pub mc_batch_size: Option<usize>,
    /// CUDA, `mc_batch_size` `None`: MC chunks are sized so that this process's tensors
    /// stay under this many MiB (0: only the device's free memory limits them).
    pub mc_max_gpu_memory_mb: u64,
    /// When set, every frame is sampled from this seed.
    pub seed: Option<u64>,
    /// libtorch intra-op threads; 0 leaves libtorch's default.
    pub cpu_threads: usize,
    /// Measure the network's share of the time (synchronises CUDA after each forward).
    pub profile: bool,
    /// Return every class's p̄ at the input size too (evaluation: the likelihood of the
    /// true class); costs a class-count of images per frame.
    pub keep_probabilities: bool,
}

impl EngineConfig {
    /// The engine settings of a validated parameter set.
    pub fn from_params(params: &Params) -> Result<Self> {
        params.validate("parameters")?;
        let device = params
            .device_request()
            .map_err(|m| Error::config("parameters", "device", m))?;
        Ok(EngineConfig {
            mode: params.mode,
            device,
            precision: params.precision,
            channels_last: params.channels_last,
            cuda_graphs: false,
            cudnn_benchmark: true,
            pinned_download: true,
            device_colors: false,
            colormap: params.colormap.clone(),
            noise_samples: params.noise_samples as usize,
            mc_samples: params.mc.samples as usize,
            moments_head_samples: params.moments.head_samples as usize,
            moments_rules: params.moments.rules,
            mc_batch_size: usize::try_from(params.mc.batch_size).ok(),
            mc_max_gpu_memory_mb: params.mc.max_gpu_memory_mb as u64,
            seed: params.seed(),
            cpu_threads: params.cpu_threads as usize,
            profile: false,
            keep_probabilities: false,
        })
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig::from_params(&Params::default()).expect("default params are valid")
    }
}

/// Class ids per pixel: 8-bit for up to 256 classes, else 16-bit.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelImage {
    U8(ImageBuffer<Luma<u8>, Vec<u8>>),
    U16(ImageBuffer<Luma<u16>, Vec<u16>>),
}

impl LabelImage {
    pub fn dimensions(&self) -> (u32, u32) {
        match self {
            LabelImage::U8(img) => img.dimensions(),
            LabelImage::U16(img) => img.dimensions(),
        }
    }

    /// The class id at (x, y).
    pub fn get(&self, x: u32, y: u32) -> usize {
        match self {
            LabelImage::U8(img) => img.get_pixel(x, y).0[0] as usize,
            LabelImage::U16(img) => img.get_pixel(x, y).0[0] as usize,
        }
    }
}

/// Semantic outputs at the input's resolution.
#[derive(Debug, Clone)]
pub struct SemanticPrediction {
    /// argmax of the mean class probability p̄.
    pub labels: LabelImage,
    /// p̄ of the chosen label, in [0, 1] (p̄ resized to the input's size first).
    pub confidence: FloatImage,
    /// Expected entropy (1/T) Σ_t H\[p_t\], nats.
    pub aleatoric_entropy: FloatImage,
    /// Mutual information H\[p̄\] − (1/T) Σ_t H\[p_t\], nats; mc and moments mode only.
    pub epistemic_mutual_information: Option<FloatImage>,
    /// p̄ of every class at the input size, class-major `[C, H, W]`; only with
    /// [`EngineConfig::keep_probabilities`].
    pub probabilities: Option<Vec<f32>>,
}

/// Depth outputs at the input's resolution.
#[derive(Debug, Clone)]
pub struct DepthPrediction {
    /// Mean depth, metres; NaN where the network predicts no positive depth.
    pub depth_m: FloatImage,
    /// Aleatoric std sqrt((1/T) Σ_t σ̂²_t), metres; `None` for a model without a trained
    /// variance head (homoscedastic baseline).
    pub aleatoric_std_m: Option<FloatImage>,
    /// Epistemic std (std of the T sampled means; in moments mode the propagated one),
    /// metres; mc and moments mode only.
    pub epistemic_std_m: Option<FloatImage>,
}

/// Wall-clock split of one prediction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timing {
    /// From the image in to the images out, milliseconds.
    pub total_ms: f64,
    /// The stages; only measured with `profile` (each ends with a device
    /// synchronisation, which costs a little on a GPU).
    pub stages: Option<StageTimes>,
}

/// Where the time of one prediction goes, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// The image to the device, resized to the native size, normalised and padded.
    pub upload_ms: f64,
    /// The network's forward passes.
    pub forward_ms: f64,
    /// On the device after the network: logit-noise softmax, running moments, the
    /// reductions, resizing to the image's size and the argmax.
    pub device_post_ms: f64,
    /// The output planes to the host, as images.
    pub download_ms: f64,
}

impl Timing {
    /// Time in the network's forward passes (profiled predictions only).
    pub fn forward_ms(&self) -> Option<f64> {
        self.stages.map(|s| s.forward_ms)
    }
}

/// What [`Engine::predict`] returns.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub width: u32,
    pub height: u32,
    pub mode: Mode,
    /// Network passes behind the outputs (1 in aleatoric and moments mode).
    pub samples: usize,
    pub semantic: Option<SemanticPrediction>,
    pub depth: Option<DepthPrediction>,
    /// With [`EngineConfig::device_colors`]: the messages' false-colour images, made on
    /// the device (the same bytes the host would make).
    pub device_colors: Option<DeviceColors>,
    pub timing: Timing,
}

/// False-colour images made on the device ([`EngineConfig::device_colors`]).
#[derive(Debug, Clone, Default)]
pub struct DeviceColors {
    pub floats: Vec<(FloatKind, RgbImage)>,
    pub labels: Option<RgbImage>,
    /// The ranges they were coloured with (messages of other ranges are coloured again).
    pub ranges: ColormapParams,
}

impl DeviceColors {
    /// The colour image of a float output, if it was made on the device.
    pub fn get(&self, kind: FloatKind) -> Option<&RgbImage> {
        self.floats
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, image)| image)
    }
}

/// What one chunk of passes adds to the running moments (see [`Engine::forward_chunk`]).
struct ChunkOutputs {
    semantic_probs: Option<Tensor>,
    depth: Option<DepthSamples>,
    /// Seconds in the network (measured only when profiling).
    forward_s: f64,
}

/// Depth per sample `[B, h, w]`: means (metres), aleatoric variances (m²) and, in moments
/// mode, the propagated variance of each mean (m²).
struct DepthSamples {
    means: Tensor,
    mean_variances: Option<Tensor>,
    aleatoric_variances: Tensor,
}

/// Every output image of a prediction at the image's size, on the device.
struct OutputPlanes {
    /// Class ids `[H, W]`: uint8 for up to 256 classes, else int32.
    labels: Option<Tensor>,
    /// fp32 `[N, H, W]`: the float outputs of the model's tasks and the mode, in the
    /// order of `kinds` (confidence, semantic aleatoric, semantic epistemic, depth, depth
    /// aleatoric std, depth epistemic std).
    floats: Tensor,
    kinds: Vec<FloatKind>,
    /// p̄ `[C, H, W]` (only with `keep_probabilities`).
    probabilities: Option<Tensor>,
    /// With `device_colors`: the colour messages' images.
    colors: Option<ColorPlanes>,
}

/// u8 `[N, H, W, 3]`: the false colour of the float images `kinds`, then (with `labels`)
/// of the labels.
struct ColorPlanes {
    rgb: Tensor,
    kinds: Vec<FloatKind>,
    labels: bool,
}

/// A loaded model on a device, ready to predict.
#[derive(Debug)]
pub struct Engine {
    model: Model,
    device: Device,
    config: EngineConfig,
    /// Input normalisation as `[1, 3, 1, 1]` on the device.
    mean: Tensor,
    std: Tensor,
    /// Network input sides must be multiples of this (one pooling per down block).
    size_multiple: i64,
    /// The largest MC chunk that has not run out of memory (usize::MAX until one does).
    mc_chunk_limit: AtomicUsize,
    /// CUDA with the per-device chunk: the chunk that fits the memory, measured before the
    /// first MC frame after loading or a change of `mc_max_gpu_memory_mb` (0 until then).
    mc_memory_chunk: AtomicUsize,
    /// With `cuda_graphs`: the deterministic pass, captured on its first use, or why its
    /// capture failed (never tried again: see [`Engine::graph_forward`]).
    eval_graph: Mutex<Option<std::result::Result<CapturedForward, String>>>,
    /// CUDA: where the output planes land on the host.
    host_staging: Mutex<HostStaging>,
    /// With `device_colors`: the colour tables on the device.
    coloring: Option<DeviceColoring>,
}

impl Engine {
    /// Resolves the device, applies the thread setting and loads the model directory.
    pub fn load(model_dir: &Path, config: EngineConfig) -> Result<Self> {
        let device = config.device.resolve()?;
        check_config(&config)?;
        apply_threads(&config);
        let model = Model::load(model_dir, device)?;
        Self::new(model, config)
    }

    /// Wraps a model that is already on its device (e.g. freshly initialised), converting
    /// its weights to `config.precision` (and to channels-last with `config.channels_last`).
    pub fn new(mut model: Model, config: EngineConfig) -> Result<Self> {
        let device = model.vs.device();
        check_config(&config)?;
        apply_threads(&config);
        if config.cuda_graphs && !device.is_cuda() {
            return Err(Error::config(
                "engine",
                "cuda_graphs",
                format!(
                    "CUDA graphs need a CUDA device, not {}",
                    device_name(device)
                ),
            ));
        }
        if config.cuda_graphs && !crate::cuda_graph::AVAILABLE {
            return Err(crate::cuda_graph::unavailable());
        }
        if device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(config.cudnn_benchmark);
        }
        match config.precision {
            Precision::Fp32 => model.vs.float(),
            Precision::Fp16 => model.vs.half(),
            Precision::Bf16 => model.vs.bfloat16(),
        }
        // The heads stay fp32 (the network casts its decoder output to their kind): a
        // half-precision depth head holds a depth to 0.4 % (bf16: 50 m in steps of 0.25 m),
        // and the spread of MC samples far away with it. Their 1x1 convolutions are a
        // sliver of the work.
        let mut heads = model.vs.root() / "heads";
        heads.float();
        if config.channels_last {
            model.use_channels_last();
        }
        model.net.fuse_heads();
        let input = &model.spec.input;
        let mean = Tensor::from_slice(&input.mean)
            .view([1, 3, 1, 1])
            .to_device(device);
        let std = Tensor::from_slice(&input.std)
            .view([1, 3, 1, 1])
            .to_device(device);
        let size_multiple = model
            .spec
            .arch()
            .map_err(|m| Error::model(crate::model::SPEC_FILE, m))?
            .size_multiple();
        let host_staging = Mutex::new(HostStaging::new(config.pinned_download));
        let coloring = config
            .device_colors
            .then(|| DeviceColoring::new(&model.spec.palette(), device));
        Ok(Engine {
            model,
            device,
            config,
            mean,
            std,
            size_multiple,
            mc_chunk_limit: AtomicUsize::new(usize::MAX),
            mc_memory_chunk: AtomicUsize::new(0),
            eval_graph: Mutex::new(None),
            host_staging,
            coloring,
        })
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// CUDA: whether the outputs come to the host through page-locked memory (asked for
    /// with `pinned_download`, and not failed).
    pub fn pinned_download(&self) -> bool {
        self.device.is_cuda()
            && self
                .host_staging
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_pinned()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Changes mode, sample counts, seed or batch size between frames. The device, the
    /// precision and the memory layout stay what the engine was loaded with.
    pub fn set_config(&mut self, config: EngineConfig) -> Result<()> {
        check_config(&config)?;
        if config.precision != self.config.precision {
            return Err(Error::config(
                "parameters",
                "precision",
                format!(
                    "the engine was loaded in {}; load it again for {}",
                    self.config.precision, config.precision
                ),
            ));
        }
        for (key, loaded, asked) in [
            (
                "channels_last",
                self.config.channels_last,
                config.channels_last,
            ),
            ("cuda_graphs", self.config.cuda_graphs, config.cuda_graphs),
            (
                "cudnn_benchmark",
                self.config.cudnn_benchmark,
                config.cudnn_benchmark,
            ),
            (
                "pinned_download",
                self.config.pinned_download,
                config.pinned_download,
            ),
            (
                "device_colors",
                self.config.device_colors,
                config.device_colors,
            ),
        ] {
            if loaded != asked {
                return Err(Error::config(
                    "parameters",
                    key,
                    format!(
                        "the engine was loaded with {key} {loaded}; load it again to change it"
                    ),
                ));
            }
        }
        if config.mc_max_gpu_memory_mb != self.config.mc_max_gpu_memory_mb {
            // Sized again for the new budget on the next MC frame (other settings leave
            // the memory a pass needs as it was).
            self.mc_memory_chunk.store(0, Ordering::Relaxed);
        }
        self.config = config;
        Ok(())
    }

    /// The MC chunk size in effect: the configured one, or the per-device default (on CUDA
    /// the one that fits the memory, once measured), never more than T, and halved for
    /// each time a chunk ran out of memory.
    pub fn mc_batch_size(&self) -> usize {
        let per_device = if self.device.is_cuda() {
            match self.mc_memory_chunk.load(Ordering::Relaxed) {
                0 => DEFAULT_CUDA_BATCH,
                fits => fits,
            }
        } else {
            DEFAULT_CPU_BATCH
        };
        self.config
            .mc_batch_size
            .unwrap_or(per_device)
            .clamp(1, self.config.mc_samples.max(1))
            .min(self.mc_chunk_limit.load(Ordering::Relaxed))
    }

    /// Whether [`Engine::mc_batch_size`] is what the next frame runs with: false on CUDA
    /// without a configured chunk before the first MC frame has sized it to the memory
    /// (it is then the most a chunk will be).
    pub fn mc_batch_size_known(&self) -> bool {
        !self.device.is_cuda()
            || self.config.mc_batch_size.is_some()
            || self.mc_memory_chunk.load(Ordering::Relaxed) != 0
    }

    /// Runs the network on one image and reduces the samples to per-pixel outputs.
    ///
    /// libtorch failures (CUDA out of memory, say) come back as [`Error::Inference`]
    /// rather than ending the process, so one bad frame never takes a node down.
    pub fn predict(&self, image: &RgbImage) -> Result<Prediction> {
        // tch reports libtorch errors by panicking in its non-`f_` methods.
        guarded(|| self.predict_unguarded(image))
    }

    fn predict_unguarded(&self, image: &RgbImage) -> Result<Prediction> {
        let started = Instant::now();
        let (width, height) = image.dimensions();
        if width == 0 || height == 0 {
            return Err(Error::Image {
                path: "(frame)".into(),
                message: format!("empty image {width}x{height}"),
            });
        }
        let _no_grad = tch::no_grad_guard();
        let spec = &self.model.spec;
        let input = self.network_input(image);
        if self.config.mode == Mode::Mc {
            // Before the seed: the measuring pass draws masks a seeded frame must not see.
            self.fit_mc_chunk_to_memory(&input)?;
        }
        if let Some(seed) = self.config.seed {
            tch::manual_seed(seed as i64);
        }
        let uploaded_at = self.profile_mark();

        // A model whose variance head was not trained (homoscedastic) gets no logit noise;
        // the frame's draws are shared by all its samples (see noise_averaged_softmax).
        let mut noise = LogitNoise::new(
            match &spec.tasks.semantic {
                Some(task) if task.aleatoric => self.config.noise_samples,
                _ => 0,
            },
            self.config.seed.unwrap_or_else(rand::random),
        );
        let mut semantic = spec.tasks.semantic.as_ref().map(|_| SemanticMoments::new());
        let mut depth = spec.tasks.depth.as_ref().map(|_| DepthMoments::new());
        let mut forward_s = 0.0;
        let mut add = |out: ChunkOutputs| {
            if let (Some(moments), Some(probs)) = (semantic.as_mut(), out.semantic_probs) {
                moments.add(&probs);
            }
            if let (Some(moments), Some(d)) = (depth.as_mut(), out.depth) {
                match &d.mean_variances {
                    Some(v) => moments.add_gaussian(&d.means, v, &d.aleatoric_variances),
                    None => moments.add(&d.means, &d.aleatoric_variances),
                }
            }
            forward_s += out.forward_s;
        };
        let samples = match self.config.mode {
            Mode::Aleatoric => {
                add(self.forward_chunk(&input, Pass::Eval, &mut noise, (width, height))?);
                1
            }
            Mode::Moments => {
                add(self.forward_moments(&input, &mut noise, (width, height)));
                1
            }
            Mode::Mc => {
                let total = self.config.mc_samples;
                let size = input.size();
                let mut done = 0;
                while done < total {
                    let b = self.mc_batch_size().min(total - done);
                    // [1, 3, H, W] -> [b, 3, H, W]; BatchNorm in eval mode keeps the b
                    // samples independent, dropout draws a fresh mask for each.
                    let batch = input.expand([b as i64, size[1], size[2], size[3]], false);
                    match guarded(|| {
                        self.forward_chunk(&batch, Pass::McSample, &mut noise, (width, height))
                    }) {
                        Ok(out) => {
                            add(out);
                            done += b;
                        }
                        // Out of memory: the same passes in chunks half the size, for this
                        // and every later frame (the limit stays with the engine).
                        Err(Error::Inference(message)) if b > 1 && is_out_of_memory(&message) => {
                            let smaller = b / 2;
                            self.mc_chunk_limit.fetch_min(smaller, Ordering::Relaxed);
                            log::warn!(
                                "out of memory running {b} MC passes at once; using chunks of \
                                 {smaller} from now on ({message})"
                            );
                        }
                        Err(e) => return Err(e),
                    }
                }
                total
            }
        };

        let sampled_at = self.profile_mark();
        let planes = self.output_planes(semantic, depth, width, height);
        let post_at = self.profile_mark();
        let (semantic, depth, device_colors) = self.download(planes, width, height);
        let stages = self.config.profile.then(|| {
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
            StageTimes {
                upload_ms: ms(started, uploaded_at),
                forward_ms: forward_s * 1e3,
                device_post_ms: ms(uploaded_at, sampled_at) - forward_s * 1e3
                    + ms(sampled_at, post_at),
                download_ms: post_at.elapsed().as_secs_f64() * 1e3,
            }
        });
        Ok(Prediction {
            width,
            height,
            mode: self.config.mode,
            samples,
            semantic,
            depth,
            device_colors,
            timing: Timing {
                total_ms: started.elapsed().as_secs_f64() * 1e3,
                stages,
            },
        })
    }

    /// On CUDA with the per-device chunk, once after loading or a change of the budget: one MC
    /// pass of `input`, measured and thrown away; its peak over what was allocated before
    /// is the memory a pass needs, and the chunk takes [`MEMORY_FILL`] of what is free on
    /// the device (and under `mc_max_gpu_memory_mb`). Without the allocator's statistics
    /// (a build without csrc/cuda_memory.cpp) the fixed default.
    fn fit_mc_chunk_to_memory(&self, input: &Tensor) -> Result<()> {
        let Device::Cuda(index) = self.device else {
            return Ok(());
        };
        if self.config.mc_batch_size.is_some() || self.mc_memory_chunk.load(Ordering::Relaxed) != 0
        {
            return Ok(());
        }
        self.synchronize();
        let before = reset_cuda_peak_memory(index)
            .then(|| cuda_memory(index))
            .flatten();
        let after = match before {
            Some(_) => {
                guarded(|| {
                    drop(self.model.net.forward(input, Pass::McSample));
                    Ok(())
                })?;
                self.synchronize();
                cuda_memory(index)
            }
            None => None,
        };
        let (Some(before), Some(after)) = (before, after) else {
            self.mc_memory_chunk
                .store(DEFAULT_CUDA_BATCH, Ordering::Relaxed);
            return Ok(());
        };
        let per_pass = after.peak_allocated_mib - before.allocated_mib;
        // Free on the device, plus what the allocator holds cached but unused.
        let free = cuda_free_memory(index)
            .map(|(free, _)| free + after.reserved_mib - after.allocated_mib);
        let limit = (self.config.mc_max_gpu_memory_mb > 0)
            .then_some(self.config.mc_max_gpu_memory_mb as f64 - after.allocated_mib);
        let available = [free, limit]
            .into_iter()
            .flatten()
            .fold(f64::INFINITY, f64::min);
        let chunk = chunk_for_memory(per_pass, available, DEFAULT_CUDA_BATCH);
        if per_pass > available * MEMORY_FILL {
            log::warn!(
                "one MC pass needs {per_pass:.0} MiB of GPU memory but only {available:.0} MiB \
                 are available (mc.max_gpu_memory_mb {}, the device's free memory): running \
                 one pass at a time",
                self.config.mc_max_gpu_memory_mb
            );
        } else {
            log::info!(
                "MC chunks of {chunk}: one pass needs {per_pass:.0} MiB, {available:.0} MiB \
                 available"
            );
        }
        self.mc_memory_chunk.store(chunk, Ordering::Relaxed);
        Ok(())
    }

    /// Now, after the device has finished its queued work when profiling (so stage
    /// boundaries are real); just now otherwise.
    fn profile_mark(&self) -> Instant {
        if self.config.profile {
            self.synchronize();
        }
        Instant::now()
    }

    /// One batched forward pass on the device and the per-sample quantities the running
    /// moments take: noise-averaged class probabilities `[B, C, h, w]`, depth means and
    /// aleatoric variances `[B, h, w]` in metres, all fp32 at native size.
    fn forward_chunk(
        &self,
        batch: &Tensor,
        pass: Pass,
        noise: &mut LogitNoise,
        (width, height): (u32, u32),
    ) -> Result<ChunkOutputs> {
        // Profiling: the previous chunk's post-processing, still queued on the device,
        // belongs to the device post stage, not to this chunk's forward.
        let started = self.profile_mark();
        inject_forward_fault(width, height);
        if pass == Pass::McSample {
            inject_out_of_memory(batch.size()[0]);
        }
        let out = if self.config.cuda_graphs && pass == Pass::Eval {
            self.graph_forward(batch)?
        } else {
            self.model.net.forward(batch, pass)
        };
        let forward_s = self.forward_seconds(started);
        let semantic_probs = out.semantic.map(|(logits, s)| {
            noise_averaged_softmax(&self.native_fp32(logits), &self.native_fp32(s), noise)
        });
        let depth = out.depth.and_then(|(mean, s)| {
            let s = self.native_fp32(s).squeeze_dim(1);
            self.depth_samples(self.native_fp32(mean).squeeze_dim(1), None, |likelihood| {
                depth_aleatoric_variance(&s, likelihood)
            })
        });
        Ok(ChunkOutputs {
            semantic_probs,
            depth,
            forward_s,
        })
    }

    /// The deterministic pass as a CUDA graph, captured on first use (after 3 eager
    /// warm-up passes) for the one input shape the engine has: the model's native size.
    /// A capture that fails is not tried again, and every later frame gets the same error:
    /// libtorch leaves the device's random generator in capture mode when a capture fails
    /// partway, so the process (not only this engine) has to start again without
    /// `cuda_graphs`.
    fn graph_forward(&self, batch: &Tensor) -> Result<HeadOutputs> {
        let Device::Cuda(index) = self.device else {
            unreachable!("cuda_graphs is refused off CUDA when the engine is built");
        };
        let mut slot = self
            .eval_graph
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            let net = &self.model.net;
            let captured = CapturedForward::capture(index, batch, 3, |x| {
                net.forward(x, Pass::Eval).into_tensors()
            });
            *slot = Some(captured.map_err(|e| e.to_string()));
        }
        let graph = match slot.as_ref().expect("filled above") {
            Ok(graph) if graph.fits(batch) => graph,
            Ok(_) => unreachable!("the network input always has the model's native size"),
            Err(reason) => {
                return Err(Error::Inference(format!(
                    "{reason}; restart without cuda_graphs"
                )))
            }
        };
        let outputs = graph.run(batch)?;
        Ok(HeadOutputs::from_tensors(
            outputs,
            self.model.spec.tasks.semantic.is_some(),
            self.model.spec.tasks.depth.is_some(),
        ))
    }

    /// Moments mode: one pass of means and variances through the dropout network
    /// ([`crate::moments`]), then `moments_head_samples` draws of the semantic heads'
    /// outputs from their joint Gaussian ([`crate::model::fc_densenet::FcDenseNet::sample_semantic_heads`]), each
    /// noise-averaged like an MC sample (with the frame's logit-noise draws); depth keeps its propagated
    /// variance (the epistemic part) and the expected aleatoric variance.
    fn forward_moments(
        &self,
        input: &Tensor,
        noise: &mut LogitNoise,
        (width, height): (u32, u32),
    ) -> ChunkOutputs {
        let started = self.profile_mark();
        inject_forward_fault(width, height);
        let out = self
            .model
            .net
            .forward_moments(input, self.config.moments_rules);
        let forward_s = self.forward_seconds(started);
        let native = |g: Gaussian| Gaussian {
            mean: self.native_fp32(g.mean),
            var: self.native_fp32(g.var),
        };
        let draws = self.config.moments_head_samples as i64;
        // The heads' outputs drawn jointly (not each logit alone: they share their
        // input), where the image is.
        let head_input = Gaussian {
            mean: self.crop_to_native(out.head_input.mean),
            var: self.crop_to_native(out.head_input.var),
        };
        let semantic_probs = self
            .model
            .net
            .sample_semantic_heads(&head_input, draws)
            .map(|(logits, s)| noise_averaged_softmax(&logits, &s, noise));
        let depth = out.depth.and_then(|(mean, s)| {
            let (mean, s) = (native(mean), native(s));
            let (s_mean, s_var) = (s.mean.squeeze_dim(1), s.var.squeeze_dim(1));
            self.depth_samples(
                mean.mean.squeeze_dim(1),
                Some(mean.var.squeeze_dim(1)),
                |likelihood| expected_depth_aleatoric_variance(&s_mean, &s_var, likelihood),
            )
        });
        ChunkOutputs {
            semantic_probs,
            depth,
            forward_s,
        }
    }

    /// Seconds since `started` after the device finished, when profiling; else 0.
    fn forward_seconds(&self, started: Instant) -> f64 {
        if self.config.profile {
            self.synchronize();
            started.elapsed().as_secs_f64()
        } else {
            0.0
        }
    }

    /// Depth head outputs in head units to metres: means (and their variances) and the
    /// aleatoric variance `aleatoric(likelihood)` scale by the unit or its square. `None`
    /// for a model without a depth task.
    fn depth_samples(
        &self,
        means: Tensor,
        mean_variances: Option<Tensor>,
        aleatoric: impl FnOnce(crate::model::Likelihood) -> Tensor,
    ) -> Option<DepthSamples> {
        let task = self.model.spec.tasks.depth.as_ref()?;
        let unit = task.unit_m;
        Some(DepthSamples {
            means: means * unit,
            mean_variances: mean_variances.map(|v| v * (unit * unit)),
            aleatoric_variances: aleatoric(task.likelihood) * (unit * unit),
        })
    }

    /// A head output `[B, C, H', W']` cropped to the native size, as fp32: everything
    /// after the network is fp32, whatever the network's precision.
    fn native_fp32(&self, t: Tensor) -> Tensor {
        self.crop_to_native(t).to_kind(Kind::Float)
    }

    /// What the network sees of an image: RGB u8 `[H, W, 3]` -> normalised float
    /// `[1, 3, h', w']` at native size, padded to the pooling multiple, on the device.
    pub fn network_input(&self, image: &RgbImage) -> Tensor {
        let (width, height) = image.dimensions();
        let input = &self.model.spec.input;
        let rgb = Tensor::from_slice(image.as_raw())
            .view([height as i64, width as i64, 3])
            .to_device(self.device)
            .permute([2, 0, 1])
            .unsqueeze(0)
            .to_kind(Kind::Float)
            / 255.0;
        let resized = if (height as i64, width as i64) == (input.height, input.width) {
            rgb
        } else {
            rgb.internal_upsample_bilinear2d_aa([input.height, input.width], false, None, None)
        };
        // Padding is cropped from the head outputs again in `crop_to_native`.
        pad_to_multiple(&((resized - &self.mean) / &self.std), self.size_multiple)
            .to_kind(self.config.precision.kind())
    }

    /// Crops padded head outputs `[B, C, H', W']` back to the native `[B, C, h, w]`.
    fn crop_to_native(&self, t: Tensor) -> Tensor {
        let input = &self.model.spec.input;
        t.narrow(2, 0, input.height).narrow(3, 0, input.width)
    }

    /// Every output image at the image's size, still on the device, as one stack of
    /// float planes (one resize for all of them) plus the labels.
    fn output_planes(
        &self,
        semantic: Option<SemanticMoments>,
        depth: Option<DepthMoments>,
        width: u32,
        height: u32,
    ) -> OutputPlanes {
        let (h, w) = (height as i64, width as i64);
        let mut native = Vec::new();
        let mut labels = None;
        let mut confidence = None;
        let mut probabilities = None;
        // The float planes in order: `kinds` names them.
        let mut kinds = Vec::new();
        if let Some(moments) = semantic {
            let out = moments.finish();
            let (ids, conf) = resized_argmax(&out.mean_probs, width, height);
            let kind = if self.model.spec.num_classes() <= 256 {
                Kind::Uint8
            } else {
                Kind::Int
            };
            labels = Some(ids.to_kind(kind));
            confidence = Some(conf);
            kinds.push(FloatKind::Confidence);
            if self.config.keep_probabilities {
                probabilities = Some(resize_to(&out.mean_probs.unsqueeze(0), h, w).squeeze_dim(0));
            }
            native.push(out.aleatoric);
            kinds.push(FloatKind::SemanticAleatoric);
            if let Some(epistemic) = out.epistemic {
                native.push(epistemic);
                kinds.push(FloatKind::SemanticEpistemic);
            }
        }
        if let Some(moments) = depth {
            let out = moments.finish();
            native.push(out.mean);
            kinds.push(FloatKind::Depth);
            // Not an output of a model without a trained variance head (its std would be
            // the constant of an untrained head).
            if self
                .model
                .spec
                .tasks
                .depth
                .as_ref()
                .is_some_and(|d| d.aleatoric)
            {
                native.push(out.aleatoric_std);
                kinds.push(FloatKind::DepthAleatoric);
            }
            if let Some(epistemic) = out.epistemic_std {
                native.push(epistemic);
                kinds.push(FloatKind::DepthEpistemic);
            }
        }
        let mut floats: Vec<Tensor> = confidence.into_iter().map(|c| c.unsqueeze(0)).collect();
        if !native.is_empty() {
            let stacked = Tensor::stack(&native, 0).unsqueeze(0).to_kind(Kind::Float);
            floats.push(resize_to(&stacked, h, w).squeeze_dim(0));
        }
        let floats = Tensor::cat(&floats, 0);
        if let Some(at) = kinds.iter().position(|&k| k == FloatKind::Depth) {
            // REP 118: invalid depth is NaN. Marked after resizing so NaN does not bleed.
            let mut depth_m = floats.get(at as i64);
            let invalid = depth_m.le(0.0);
            let _ = depth_m.masked_fill_(&invalid, f64::NAN);
        }
        let colors = self.coloring.as_ref().and_then(|coloring| {
            let ranges = &self.config.colormap;
            let (planes, colored): (Vec<(Tensor, ColorScale)>, Vec<FloatKind>) = kinds
                .iter()
                .enumerate()
                .filter(|&(_, &kind)| has_color_message(kind))
                .map(|(i, &kind)| ((floats.get(i as i64), kind.color_scale(ranges)), kind))
                .unzip();
            (!planes.is_empty() || labels.is_some()).then(|| ColorPlanes {
                rgb: coloring.colorize(&planes, labels.as_ref()),
                kinds: colored,
                labels: labels.is_some(),
            })
        });
        OutputPlanes {
            labels,
            floats,
            kinds,
            probabilities,
            colors,
        }
    }

    /// The planes to the host as the prediction's images. On CUDA every plane (floats and
    /// labels) goes in one device-to-host copy, into the page-locked buffer with
    /// `pinned_download`; on the CPU they are read where they are.
    fn download(
        &self,
        planes: OutputPlanes,
        width: u32,
        height: u32,
    ) -> (
        Option<SemanticPrediction>,
        Option<DepthPrediction>,
        Option<DeviceColors>,
    ) {
        let colors = planes.colors.as_ref().map(|c| &c.rgb);
        let (floats, labels, color_planes) = if self.device.is_cuda() {
            let parts: Vec<&Tensor> = [Some(&planes.floats), planes.labels.as_ref(), colors]
                .into_iter()
                .flatten()
                .collect();
            let packed = pack_planes(&parts);
            let mut staging = self.host_staging.lock().unwrap_or_else(|e| e.into_inner());
            staging.with_host(&packed, self.device, |bytes| {
                let mut host = unpack_planes(bytes, &parts).into_iter();
                let floats = host.next().expect("floats");
                let labels = planes.labels.as_ref().map(|_| host.next().expect("labels"));
                let colors = colors.map(|_| host.next().expect("colours"));
                host_planes(&floats, labels.as_ref(), colors.as_ref())
            })
        } else {
            host_planes(&planes.floats, planes.labels.as_ref(), colors)
        };
        let device_colors = planes.colors.zip(color_planes).map(|(made, rgb)| {
            let mut images = rgb
                .into_iter()
                .map(|plane| RgbImage::from_raw(width, height, plane).expect("sized"));
            DeviceColors {
                floats: made
                    .kinds
                    .iter()
                    .map(|&k| (k, images.next().expect("colour plane")))
                    .collect(),
                labels: made.labels.then(|| images.next().expect("label colours")),
                ranges: self.config.colormap.clone(),
            }
        });
        let mut images: Vec<(FloatKind, FloatImage)> = planes
            .kinds
            .iter()
            .zip(floats)
            .map(|(&kind, plane)| {
                (
                    kind,
                    FloatImage::from_raw(width, height, plane).expect("sized"),
                )
            })
            .collect();
        let mut take = |kind: FloatKind| {
            let at = images.iter().position(|(k, _)| *k == kind)?;
            Some(images.swap_remove(at).1)
        };
        let semantic = labels.map(|labels| {
            let labels = match labels {
                HostLabels::U8(ids) => {
                    LabelImage::U8(ImageBuffer::from_raw(width, height, ids).expect("sized"))
                }
                HostLabels::I32(ids) => LabelImage::U16(
                    ImageBuffer::from_raw(
                        width,
                        height,
                        ids.into_iter().map(|v| v as u16).collect(),
                    )
                    .expect("sized"),
                ),
            };
            SemanticPrediction {
                labels,
                confidence: take(FloatKind::Confidence).expect("confidence"),
                aleatoric_entropy: take(FloatKind::SemanticAleatoric).expect("semantic aleatoric"),
                epistemic_mutual_information: take(FloatKind::SemanticEpistemic),
                probabilities: planes
                    .probabilities
                    .map(|p| tensor_to_vec::<f32>(&p.to_device(Device::Cpu))),
            }
        });
        // NaN where invalid (marked on the device, `output_planes`).
        let depth = take(FloatKind::Depth).map(|depth_m| DepthPrediction {
            depth_m,
            aleatoric_std_m: take(FloatKind::DepthAleatoric),
            epistemic_std_m: take(FloatKind::DepthEpistemic),
        });
        (semantic, depth, device_colors)
    }

    fn synchronize(&self) {
        if let Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
    }
}

/// Pads `[B, C, H, W]` at the bottom and right (edge pixels repeated) so H and W become
/// multiples of `m`, as the network's poolings need.
pub fn pad_to_multiple(x: &Tensor, m: i64) -> Tensor {
    let size = x.size();
    let (pad_h, pad_w) = ((m - size[2] % m) % m, (m - size[3] % m) % m);
    if pad_h == 0 && pad_w == 0 {
        x.shallow_clone()
    } else {
        x.replication_pad2d([0, pad_w, 0, pad_h])
    }
}

/// The checks [`Engine::new`] makes of its settings, for callers that want them before
/// building a model (`bench` refuses its flags up front).
pub fn check_config(config: &EngineConfig) -> Result<()> {
    if config.mode == Mode::Moments && config.moments_head_samples < 2 {
        return Err(Error::config(
            "engine",
            "moments.head_samples",
            format!(
                "{} is too small: moments mode needs at least 2 head samples",
                config.moments_head_samples
            ),
        ));
    }
    if config.mode == Mode::Mc && config.mc_samples < 2 {
        return Err(Error::config(
            "engine",
            "mc.samples",
            format!(
                "{} is too small: mc mode needs at least 2 samples",
                config.mc_samples
            ),
        ));
    }
    if config.mc_batch_size == Some(0) {
        return Err(Error::config(
            "engine",
            "mc.batch_size",
            "0 is not allowed; use -1 (per device) or >= 1",
        ));
    }
    if config.cpu_threads > MAX_CPU_THREADS {
        return Err(Error::config(
            "engine",
            "cpu_threads",
            format!(
                "{} is out of range 0..={MAX_CPU_THREADS}",
                config.cpu_threads
            ),
        ));
    }
    Ok(())
}

/// After [`check_config`] (at most [`MAX_CPU_THREADS`]).
fn apply_threads(config: &EngineConfig) {
    if config.cpu_threads > 0 {
        tch::set_num_threads(config.cpu_threads as i32);
    }
}

/// Runs `f`, turning a panic (how tch reports a libtorch exception) into
/// [`Error::Inference`] with libtorch's message. The panic is not printed: the caller
/// reports the error (the node logs it throttled and counts it), so one line per kind of
/// failure rather than a C++ backtrace per frame.
pub(crate) fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    crate::panic_guard::catch_quietly(f)
        .unwrap_or_else(|message| Err(Error::Inference(libtorch_message(&message))))
}

/// libtorch's own message out of a tch panic: `called `Result::unwrap()` on an `Err`
/// value: Torch("MESSAGE\nException raised from ... (C++ backtrace)")` -> `MESSAGE`.
fn libtorch_message(panic: &str) -> String {
    let message = panic.split_once("Torch(\"").map_or(panic, |(_, rest)| rest);
    // The Debug-formatted message has its newlines escaped; keep the first line.
    let first = message.split("\\n").next().unwrap_or(message);
    let first = first.lines().next().unwrap_or(first);
    first.trim_end_matches("\")").to_owned()
}

/// Fault injection for the tests (feature `failpoints`): with
/// `FAILPOINTS='engine::forward=return(WxH)'` the forward pass of every WxH frame makes
/// libtorch throw (an impossible reshape), as a CUDA out-of-memory error would; other
/// frames run normally. Without the feature this does nothing.
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
fn inject_forward_fault(width: u32, height: u32) {
    fail::fail_point!("engine::forward", |size: Option<String>| {
        if size.as_deref() == Some(format!("{width}x{height}").as_str()) {
            let _ = Tensor::zeros([2], (Kind::Float, Device::Cpu)).view([3]);
        }
    });
}

/// Fault injection for the tests (feature `failpoints`): with
/// `FAILPOINTS='engine::mc_chunk=return(N)'` every MC chunk of more than N passes runs
/// libtorch out of memory (a 4 PiB allocation), as a too-large chunk does on a GPU.
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
fn inject_out_of_memory(passes: i64) {
    fail::fail_point!("engine::mc_chunk", |limit: Option<String>| {
        let limit: i64 = limit.and_then(|l| l.parse().ok()).unwrap_or(0);
        if passes > limit {
            let _ = Tensor::empty([1 << 50], (Kind::Float, Device::Cpu));
        }
    });
}

/// The MC passes per chunk that fit `available_mib` of GPU memory when one pass needs
/// `per_pass_mib` (measured: its peak over what was allocated before), filling
/// `MEMORY_FILL` of it: at least 1 (the out-of-memory fallback is the last word), at
/// most `cap`.
pub fn chunk_for_memory(per_pass_mib: f64, available_mib: f64, cap: usize) -> usize {
    if per_pass_mib.is_nan() {
        return 1;
    }
    let fits = (available_mib * MEMORY_FILL / per_pass_mib.max(1.0)).floor();
    if fits.is_nan() || fits < 1.0 {
        1
    } else {
        (fits.min(cap as f64) as usize).max(1)
    }
}

/// Whether a libtorch error is an allocation failure: CUDA's caching allocator ("CUDA out
/// of memory. Tried to allocate ...") or the CPU allocator ("DefaultCPUAllocator: can't
/// allocate memory: ...").
pub fn is_out_of_memory(message: &str) -> bool {
    [
        "out of memory",
        "can't allocate memory",
        "not enough memory",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// `[B, C, h, w]` resized bilinearly (half-pixel centres) to `[B, C, height, width]`;
/// the tensor itself when it already has that size.
fn resize_to(x: &Tensor, height: i64, width: i64) -> Tensor {
    let size = x.size();
    if (size[2], size[3]) == (height, width) {
        x.shallow_clone()
    } else {
        x.upsample_bilinear2d([height, width], false, None, None)
    }
}

/// Classes resized at a time in [`resized_argmax`], which bounds its memory to this many
/// output-sized planes whatever the class count.
const ARGMAX_CLASS_CHUNK: i64 = 16;

/// Labels and confidence at the output size from class probabilities `[C, h, w]`: p̄ is
/// resized bilinearly (half-pixel centres, like every float image), and per output pixel
/// the label is its argmax (the lowest id on ties) and the confidence its value there.
/// Returns `[H, W]` int64 labels and `[H, W]` float confidence on p̄'s device.
pub fn resized_argmax(mean_probs: &Tensor, width: u32, height: u32) -> (Tensor, Tensor) {
    let size = mean_probs.size();
    let (h, w) = (height as i64, width as i64);
    if (size[1], size[2]) == (h, w) {
        let (confidence, labels) = mean_probs.max_dim(0, false);
        return (labels, confidence);
    }
    let mut best: Option<(Tensor, Tensor)> = None;
    let mut start = 0;
    while start < size[0] {
        let n = ARGMAX_CLASS_CHUNK.min(size[0] - start);
        let resized = mean_probs
            .narrow(0, start, n)
            .unsqueeze(0)
            .to_kind(Kind::Float)
            .upsample_bilinear2d([h, w], false, None, None)
            .squeeze_dim(0);
        let (confidence, labels) = resized.max_dim(0, false);
        let labels = labels + start;
        best = Some(match best {
            None => (labels, confidence),
            Some((best_labels, best_confidence)) => {
                // Strictly greater: on ties the earlier (lower) class id stays.
                let better = confidence.gt_tensor(&best_confidence);
                (
                    labels.where_self(&better, &best_labels),
                    confidence.where_self(&better, &best_confidence),
                )
            }
        });
        start += n;
    }
    best.expect("at least one class")
}

/// Class ids on the host, in the kind the device made them.
enum HostLabels {
    U8(Vec<u8>),
    I32(Vec<i32>),
}

/// Per plane: the fp32 `[N, H, W]` floats, the `[H, W]` labels and the u8 `[M, H, W, 3]`
/// colours.
type HostPlanes = (Vec<Vec<f32>>, Option<HostLabels>, Option<Vec<Vec<u8>>>);

/// Host tensors as one vector per float plane, the ids and one vector per colour plane.
fn host_planes(floats: &Tensor, labels: Option<&Tensor>, colors: Option<&Tensor>) -> HostPlanes {
    let floats = (0..floats.size()[0])
        .map(|i| tensor_to_vec::<f32>(&floats.get(i)))
        .collect();
    let labels = labels.map(|labels| match labels.kind() {
        Kind::Uint8 => HostLabels::U8(tensor_to_vec(labels)),
        _ => HostLabels::I32(tensor_to_vec(labels)),
    });
    let colors = colors.map(|c| {
        (0..c.size()[0])
            .map(|i| tensor_to_vec::<u8>(&c.get(i)))
            .collect()
    });
    (floats, labels, colors)
}

/// Tensors of any kinds and shapes as one flat byte tensor on their device, in order, so
/// that one copy brings them all to the host ([`unpack_planes`] undoes it).
pub fn pack_planes(parts: &[&Tensor]) -> Tensor {
    let bytes: Vec<Tensor> = parts
        .iter()
        .map(|t| t.contiguous().view_dtype(Kind::Uint8).view(-1))
        .collect();
    Tensor::cat(&bytes, 0)
}

/// Views of `bytes` (a [`pack_planes`] result, now on the host) shaped and typed as the
/// device's `parts` were.
pub fn unpack_planes(bytes: &Tensor, parts: &[&Tensor]) -> Vec<Tensor> {
    let mut start = 0;
    parts
        .iter()
        .map(|t| {
            let len = (t.numel() * t.kind().elt_size_in_bytes()) as i64;
            let view = bytes
                .narrow(0, start, len)
                .view_dtype(t.kind())
                .view(t.size().as_slice());
            start += len;
            view
        })
        .collect()
}

/// Where packed output planes land on the host: with `pinned`, one page-locked buffer,
/// allocated on the first frame and again only when the frame's size changes, so the copy
/// from the device is one DMA transfer (pageable memory goes through the driver's own
/// staging buffer: one more copy). Where pinning fails it says so once and uses pageable
/// memory from then on.
#[derive(Debug)]
pub struct HostStaging {
    pinned: bool,
    buffer: Option<Tensor>,
}

impl HostStaging {
    pub fn new(pinned: bool) -> Self {
        HostStaging {
            pinned,
            buffer: None,
        }
    }

    /// Whether the next copy goes to page-locked memory (false once pinning failed).
    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// Runs `f` on `packed`'s bytes on the host (a view of the reused buffer: valid only
    /// inside `f`).
    pub fn with_host<R>(
        &mut self,
        packed: &Tensor,
        device: Device,
        f: impl FnOnce(&Tensor) -> R,
    ) -> R {
        let n = packed.numel() as i64;
        if self.pinned && self.buffer.as_ref().map(Tensor::numel) != Some(n as usize) {
            self.buffer = None;
            match Tensor::empty([n], (Kind::Uint8, Device::Cpu)).f_internal_pin_memory(device) {
                Ok(buffer) => self.buffer = Some(buffer),
                Err(e) => {
                    log::warn!(
                        "cannot page-lock host memory for the outputs ({}); copying them \
                         to pageable memory",
                        libtorch_message(&e.to_string())
                    );
                    self.pinned = false;
                }
            }
        }
        // A buffer is there only while pinning works.
        match &mut self.buffer {
            Some(buffer) => {
                buffer.copy_(packed);
                f(buffer)
            }
            None => f(&packed.to_device(Device::Cpu)),
        }
    }
}

fn tensor_to_vec<T: tch::kind::Element + Copy>(t: &Tensor) -> Vec<T> {
    let t = t.contiguous().view(-1);
    Vec::<T>::try_from(&t).expect("tensor kind matches the element type")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Float planes and labels of every kind survive the one-copy packing bit for bit.
    #[test]
    fn packed_planes_unpack_to_the_same_values_and_shapes() {
        // Draws from libtorch's global generator, which other tests seed and draw from.
        let _lock = crate::test_support::torch_rng_lock();
        let floats = Tensor::randn([3, 5, 7], (Kind::Float, Device::Cpu));
        // NaN (invalid depth) and the extremes are bytes like any other.
        let _ = floats.get(1).get(2).fill_(f64::NAN);
        let _ = floats.get(2).get(0).fill_(f64::from(f32::MAX));
        let u8_labels = Tensor::randint(255, [5, 7], (Kind::Uint8, Device::Cpu));
        let i32_labels = Tensor::randint(1000, [5, 7], (Kind::Int, Device::Cpu));
        let colors = Tensor::randint(255, [2, 5, 7, 3], (Kind::Uint8, Device::Cpu));
        for labels in [None, Some(&u8_labels), Some(&i32_labels)] {
            let parts: Vec<&Tensor> = [Some(&floats), labels, Some(&colors)]
                .into_iter()
                .flatten()
                .collect();
            let packed = pack_planes(&parts);
            assert_eq!(packed.kind(), Kind::Uint8);
            let label_bytes = labels.map_or(0, |l| l.numel() * l.kind().elt_size_in_bytes());
            assert_eq!(
                packed.numel(),
                floats.numel() * 4 + label_bytes + colors.numel()
            );
            let mut host = unpack_planes(&packed, &parts).into_iter();
            let f = host.next().unwrap();
            let l = labels.map(|_| host.next().unwrap());
            assert!(host.next().unwrap().equal(&colors));
            assert_eq!(f.size(), floats.size());
            assert!(f.isnan().equal(&floats.isnan()));
            assert!(f
                .nan_to_num(0.0, None, None)
                .equal(&floats.nan_to_num(0.0, None, None)));
            match (labels, l) {
                (Some(labels), Some(l)) => {
                    assert_eq!(l.kind(), labels.kind());
                    assert!(l.equal(labels));
                }
                (None, None) => {}
                other => panic!("labels {:?}", other.1),
            }
        }
    }

    /// The staging buffer gives back the packed bytes whether or not the host memory
    /// could be page-locked; without a CUDA driver (this machine, CI) pinning fails, is
    /// reported and is not tried again.
    #[test]
    fn staging_copies_the_bytes_pinned_or_not() {
        let _lock = crate::test_support::torch_rng_lock();
        let packed = Tensor::randint(255, [1000], (Kind::Uint8, Device::Cpu));
        for pinned in [true, false] {
            let mut staging = HostStaging::new(pinned);
            for _ in 0..2 {
                let copy = staging.with_host(&packed, Device::Cuda(0), |host| {
                    assert_eq!(host.device(), Device::Cpu);
                    host.copy()
                });
                assert!(copy.equal(&packed));
            }
            let cuda = tch::Cuda::is_available();
            assert_eq!(staging.is_pinned(), pinned && cuda);
            assert_eq!(staging.buffer.is_some(), pinned && cuda);
        }
    }

    #[test]
    fn mc_chunks_fill_nine_tenths_of_the_available_memory_between_one_and_the_cap() {
        // FC-DenseNet103 at 360x480 in fp16 takes ~550 MiB a pass (H200: 13.8 GB for 25).
        assert_eq!(chunk_for_memory(550.0, 5000.0, 16), 8, "4500 / 550 = 8.2");
        assert_eq!(chunk_for_memory(550.0, 4950.0, 16), 8, "exactly 8 fit");
        assert_eq!(chunk_for_memory(550.0, 4880.0, 16), 7);
        assert_eq!(chunk_for_memory(550.0, 100_000.0, 16), 16, "capped");
        assert_eq!(
            chunk_for_memory(550.0, f64::INFINITY, 16),
            16,
            "no limit known"
        );
        // Less than one pass fits: one pass at a time (the OOM fallback has the last word).
        assert_eq!(chunk_for_memory(550.0, 300.0, 16), 1);
        assert_eq!(
            chunk_for_memory(550.0, -20.0, 16),
            1,
            "a budget already used up"
        );
        assert_eq!(
            chunk_for_memory(0.0, 10.0, 16),
            9,
            "a pass counts as 1 MiB at least"
        );
        assert_eq!(chunk_for_memory(f64::NAN, 10.0, 16), 1);
    }

    #[test]
    fn a_libtorch_exception_becomes_an_inference_error_with_its_own_message() {
        let failed = guarded(|| {
            let _ = Tensor::zeros([2], (Kind::Float, Device::Cpu)).view([3]);
            Ok(())
        });
        match failed {
            Err(Error::Inference(message)) => {
                assert_eq!(message, "shape '[3]' is invalid for input of size 2")
            }
            other => panic!("expected an inference error, got {other:?}"),
        }
        // Not libtorch: the panic message as it is; and a success passes through.
        let plain = guarded::<()>(|| panic!("no frame today"));
        assert!(matches!(plain, Err(Error::Inference(m)) if m == "no frame today"));
        assert_eq!(guarded(|| Ok(5)).unwrap(), 5);
    }
}
