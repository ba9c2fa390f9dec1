//! `bayes_perception bench`: speed and memory of the engine with a random-weight model on
//! synthetic frames. This is how speed is measured (BENCHMARKS.md); tests never time.

use std::process::ExitCode;

use bayes_perception::config::ColormapParams;
use bayes_perception::config::Mode;
use bayes_perception::device::{
    cuda_memory, device_name, reset_cuda_peak_memory, CudaMemory, DeviceRequest,
};
use bayes_perception::engine::StageTimes;
use bayes_perception::model::{random_spec, Model};
use bayes_perception::msg::outputs::{build_outputs, compress_twins};
use bayes_perception::msg::{CameraInfo, Header};
use bayes_perception::pipeline::overlapped;
use bayes_perception::points::{camera_info_from_calibration, frame_cloud, CloudOptions};
use bayes_perception::stats::quantile;
use bayes_perception::{Engine, EngineConfig};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::cli::BenchArgs;

#[derive(Debug, Serialize)]
struct Stages {
    /// Image to the device, resize, normalise, pad.
    upload: f64,
    /// The network's forward passes.
    forward: f64,
    /// Softmax over logit noise, moments, reductions, resize back, argmax on the device.
    device_post: f64,
    /// Output planes to the host.
    download: f64,
    /// Host: false colour and the node's output messages (what `bag process` and the
    /// node do after the engine).
    host_outputs: f64,
    /// Host, one thread: the uncertainty point cloud as a PointCloud2 (`--points-stride`;
    /// depth models)...
    points: f64,
    /// ...and the same with valid depth at every pixel (the worst case: every pixel of
    /// the stride grid a point).
    points_every_pixel: f64,
}

/// One timed frame.
struct FrameTime {
    stages: StageTimes,
    host_outputs_ms: f64,
    points_ms: f64,
    points: usize,
    points_every_pixel_ms: f64,
    /// Engine plus host outputs.
    total_ms: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    arch: String,
    parameters: i64,
    height: i64,
    width: i64,
    mode: String,
    samples: usize,
    batch_size: Option<usize>,
    noise_samples: usize,
    device: String,
    precision: String,
    channels_last: bool,
    cuda_graphs: bool,
    /// CUDA: cuDNN picked its algorithms by timing them (off: `--no-cudnn-benchmark`).
    cudnn_benchmark: Option<bool>,
    /// CUDA: the outputs came to the host through the page-locked buffer (false where
    /// `--pageable-download` asked otherwise or pinning failed).
    pinned_download: Option<bool>,
    /// The colour images were made on the device (`--device-colors`).
    device_colors: bool,
    /// The host outputs include every compressed twin (`--compressed-twins`).
    compressed_twins: bool,
    cpu_threads: i32,
    frames: usize,
    /// Whole frames: image in, every output message of the node built (engine + host
    /// colourising and packing), milliseconds.
    median_ms: f64,
    p95_ms: f64,
    mean_ms: f64,
    /// 1000 / median_ms.
    frames_per_s: f64,
    /// Share of the whole-frame time spent in the network's forward passes.
    forward_share: f64,
    /// Median of each stage over the timed frames, milliseconds (they need not add up to
    /// median_ms exactly: medians of parts).
    stages_median_ms: Stages,
    /// Points in the largest of the frames' clouds (every frame is the same image), and the
    /// stride they were built with.
    points_per_frame: usize,
    points_stride: u32,
    /// The calibration file the cloud's camera came from (`--camera-info`); none: a
    /// pinhole of focal length 0.8 x width.
    points_camera_info: Option<String>,
    /// Host peak resident memory (VmHWM), MiB.
    peak_rss_mib: Option<f64>,
    /// CUDA only: the benched device's memory in use after the run (total − free, whole
    /// device: this process's CUDA context and libtorch's caching allocator, which keeps
    /// its peak, and any other process's), MiB; none from a build without the CUDA shims
    /// of csrc/ (scripts/gpu_bundle.sh refuses to bundle one).
    gpu_memory_used_mib: Option<f64>,
    /// CUDA only: libtorch's caching allocator over the timed frames (peak allocated is
    /// torch.cuda.max_memory_allocated), MiB.
    gpu_memory: Option<CudaMemory>,
    /// With `--overlap`: frames/s with the network of one frame and the messages of the
    /// previous one built at the same time on two threads, as the node runs them (wall
    /// time over the same number of frames, after the sequential ones).
    overlapped_frames_per_s: Option<f64>,
    /// CUDA only: the median whole frame with the engine not profiled, as the node and
    /// `bag process` run it (the stage split synchronises the device 3-4 times a frame,
    /// which keeps the host from queueing the next stage while the device works).
    unprofiled_median_ms: Option<f64>,
    /// mc and moments: median of single-pass (aleatoric) frames of the same model, and
    /// what one frame costs in them (median_ms / single_pass_median_ms).
    single_pass_median_ms: Option<f64>,
    single_pass_equivalents: Option<f64>,
    /// mc only: the ratio of one T-sample frame to T single-pass frames.
    mc_vs_sequential_ratio: Option<f64>,
    /// moments only: draws of the semantic head's propagated distribution, and the rules.
    head_samples: Option<usize>,
    rules: Option<String>,
    libtorch: &'static str,
    /// How the heads ran: fp32 whatever the precision, as one convolution (since
    /// 2026-12-06; results without it ran them in the network's precision, one each).
    heads: &'static str,
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let arch = super::preset(&args.arch)?;
    if args.frames == 0 {
        super::usage!("--frames must be at least 1");
    }
    if args.points_stride == 0 {
        super::usage!("--points-stride must be at least 1");
    }
    let camera_info = args
        .camera_info
        .as_deref()
        .map(camera_info_from_calibration)
        .transpose()?;
    let device_request: DeviceRequest = match args.device.parse() {
        Ok(request) => request,
        Err(e) => super::usage!("--device: {e}"),
    };
    let spec = random_spec(
        arch,
        Some(&args.arch),
        args.classes,
        !args.no_depth,
        args.height,
        args.width,
    );
    if let Err(e) = spec.validate() {
        super::usage!("bench model: {e}");
    }
    // The ranges a params file has; --batch-size: absent is per device, 0 refused.
    let counts = [
        ("--noise-samples", "noise_samples", args.noise_samples),
        ("--samples", "mc.samples", args.samples),
        ("--head-samples", "moments.head_samples", args.head_samples),
    ];
    for (flag, key, value) in counts {
        let (lo, hi) = bayes_perception::config::integer_range(key).expect("a ranged parameter");
        if !(lo..=hi).contains(&(value as i64)) {
            super::usage!("{flag} must be in {lo}..={hi} (as `{key}` in a params file)");
        }
    }
    if args.batch_size == Some(0) {
        super::usage!("--batch-size must be at least 1 (leave it out for the device's default)");
    }
    let config = EngineConfig {
        mode: args.mode,
        device: device_request,
        precision: args.precision,
        channels_last: args.channels_last,
        cuda_graphs: args.cuda_graphs,
        cudnn_benchmark: !args.no_cudnn_benchmark,
        pinned_download: !args.pageable_download,
        device_colors: args.device_colors,
        colormap: ColormapParams::default(),
        noise_samples: args.noise_samples,
        mc_samples: args.samples,
        moments_head_samples: args.head_samples,
        moments_rules: args.rules,
        mc_batch_size: args.batch_size,
        mc_max_gpu_memory_mb: args.max_gpu_memory_mb,
        seed: None,
        cpu_threads: args.threads,
        profile: true,
        keep_probabilities: false,
    };
    if let Err(e) = bayes_perception::engine::check_config(&config) {
        super::usage!("{e}");
    }
    let device = device_request.resolve()?;
    if args.threads > 0 {
        // (At most MAX_CPU_THREADS: checked with the engine's settings above.)
        tch::set_num_threads(args.threads as i32);
    }
    if args.pageable_download && !device.is_cuda() {
        log::warn!(
            "--pageable-download applies to CUDA only (on {} the outputs are already on the host)",
            device_name(device)
        );
    }
    if args.no_cudnn_benchmark && !device.is_cuda() {
        log::warn!(
            "--no-cudnn-benchmark applies to CUDA only (ignored on {})",
            device_name(device)
        );
    }
    if args.max_gpu_memory_mb > 0 && !device.is_cuda() {
        log::warn!(
            "--max-gpu-memory-mb applies to CUDA only (it sizes MC chunks from GPU memory; ignored on {})",
            device_name(device)
        );
    }
    let model = Model::new(spec, device)?;
    let parameters = model.num_parameters();
    let mut engine = Engine::new(model, config.clone())?;
    let frames = synthetic_frames(args.frames.min(8), args.height, args.width);

    let timings = time_frames(
        &engine,
        &frames,
        args.warmup,
        args.frames,
        args.points_stride,
        camera_info.as_ref(),
        args.compressed_twins,
    )?;
    let mut report = summarise(&args, &engine, parameters, device, &timings);
    if let Device::Cuda(index) = device {
        report.gpu_memory = cuda_memory(index);
    }
    // What follows runs as the node does: the engine not profiled (on a CPU profiling
    // synchronises nothing, so it is measured above already).
    engine.set_config(EngineConfig {
        profile: false,
        ..config.clone()
    })?;
    if device.is_cuda() {
        report.unprofiled_median_ms = Some(unprofiled_median_ms(
            &engine,
            &frames,
            args.frames,
            args.compressed_twins,
        )?);
    }
    if args.overlap {
        report.overlapped_frames_per_s = Some(overlapped_frames_per_s(
            &engine,
            &frames,
            args.frames,
            args.compressed_twins,
        )?);
    }
    engine.set_config(config.clone())?;
    if args.mode.epistemic() {
        // The same frames through one deterministic pass each: what an epistemic frame
        // costs in single passes (and for mc, whether batching pays).
        engine.set_config(EngineConfig {
            mode: Mode::Aleatoric,
            ..config
        })?;
        let single = time_frames(
            &engine,
            &frames,
            args.warmup,
            args.frames,
            args.points_stride,
            camera_info.as_ref(),
            args.compressed_twins,
        )?;
        let single_median = percentile(&single.iter().map(|t| t.total_ms).collect::<Vec<_>>(), 0.5);
        report.single_pass_median_ms = Some(single_median);
        report.single_pass_equivalents = Some(report.median_ms / single_median);
        if args.mode == Mode::Mc {
            report.mc_vs_sequential_ratio =
                Some(report.median_ms / (args.samples as f64 * single_median));
        }
    }
    report.peak_rss_mib = peak_rss_mib();
    // Of the device benched (cudaMemGetInfo without its index would ask the current
    // device, which libtorch's guards leave at 0).
    if let tch::Device::Cuda(index) = device {
        report.gpu_memory_used_mib =
            bayes_perception::device::cuda_free_memory(index).map(|(free, total)| total - free);
    }

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// A pinhole camera for a synthetic frame: focal length 0.8 x width, centred.
fn bench_camera_info(rgb: &image::RgbImage) -> CameraInfo {
    let (w, h) = (rgb.width() as f64, rgb.height() as f64);
    CameraInfo::pinhole(
        Header::default(),
        rgb.width(),
        rgb.height(),
        0.8 * w,
        (w - 1.0) / 2.0,
        (h - 1.0) / 2.0,
    )
}

/// The node's default `output.jpeg_quality`, for `--compressed-twins`.
const TWIN_JPEG_QUALITY: u8 = 80;

/// Builds every output message of a prediction as the node does (with `compressed_twins`,
/// each compressed twin too), and drops them.
fn message_builder(
    engine: &Engine,
    compressed_twins: bool,
) -> impl Fn(&bayes_perception::engine::Prediction) + Send {
    let palette = engine.model().spec.palette();
    let colormap = ColormapParams::default();
    let header = Header::default();
    move |prediction| {
        let messages = build_outputs(prediction, &header, &palette, &colormap, |_| true);
        if compressed_twins {
            let twins = compress_twins(&messages, TWIN_JPEG_QUALITY);
            std::hint::black_box(twins);
        }
        std::hint::black_box(messages);
    }
}

fn time_frames(
    engine: &Engine,
    frames: &[image::RgbImage],
    warmup: usize,
    count: usize,
    points_stride: u32,
    camera_info: Option<&CameraInfo>,
    compressed_twins: bool,
) -> anyhow::Result<Vec<FrameTime>> {
    let build_messages = message_builder(engine, compressed_twins);
    let header = Header::default();
    let cloud_options = CloudOptions {
        stride: points_stride,
        max_range_m: 0.0,
        max_depth_epistemic_m: 0.0,
        rectified: false,
    };
    let frame = |i: usize| -> anyhow::Result<FrameTime> {
        let rgb = &frames[i % frames.len()];
        let prediction = engine.predict(rgb)?;
        let started = std::time::Instant::now();
        build_messages(&prediction);
        let host_outputs_ms = started.elapsed().as_secs_f64() * 1e3;
        // The point cloud: depth models only (0 ms and 0 points without depth).
        let (points_ms, points, points_every_pixel_ms) = if prediction.depth.is_some() {
            let pinhole = bench_camera_info(rgb);
            let camera = camera_info.unwrap_or(&pinhole);
            let started = std::time::Instant::now();
            let cloud = frame_cloud(&prediction, rgb, camera, cloud_options, &header)
                .map_err(anyhow::Error::msg)?;
            let points_ms = started.elapsed().as_secs_f64() * 1e3;
            let points = cloud.as_ref().map_or(0, |c| c.width as usize);
            std::hint::black_box(cloud);
            // The worst case: the same prediction with a valid depth at every pixel.
            let mut every_pixel = prediction.clone();
            if let Some(depth) = every_pixel.depth.as_mut() {
                for d in depth.depth_m.iter_mut() {
                    *d = if d.is_finite() {
                        d.abs().clamp(0.5, 100.0)
                    } else {
                        10.0
                    };
                }
            }
            let started = std::time::Instant::now();
            let cloud = frame_cloud(&every_pixel, rgb, camera, cloud_options, &header)
                .map_err(anyhow::Error::msg)?;
            let points_every_pixel_ms = started.elapsed().as_secs_f64() * 1e3;
            std::hint::black_box(cloud);
            (points_ms, points, points_every_pixel_ms)
        } else {
            (0.0, 0, 0.0)
        };
        Ok(FrameTime {
            stages: prediction.timing.stages.expect("bench profiles the engine"),
            host_outputs_ms,
            points_ms,
            points,
            points_every_pixel_ms,
            total_ms: prediction.timing.total_ms + host_outputs_ms,
        })
    };
    for i in 0..warmup {
        frame(i)?;
    }
    // The peak over the timed frames only.
    if let Device::Cuda(index) = engine.device() {
        reset_cuda_peak_memory(index);
    }
    (0..count).map(frame).collect()
}

/// The median of `count` whole frames (engine and host outputs) one after the other.
fn unprofiled_median_ms(
    engine: &Engine,
    frames: &[image::RgbImage],
    count: usize,
    compressed_twins: bool,
) -> anyhow::Result<f64> {
    let build_messages = message_builder(engine, compressed_twins);
    let totals = (0..count)
        .map(|i| -> anyhow::Result<f64> {
            let started = std::time::Instant::now();
            build_messages(&engine.predict(&frames[i % frames.len()])?);
            Ok(started.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<anyhow::Result<Vec<f64>>>()?;
    Ok(percentile(&totals, 0.5))
}

/// `count` frames through [`overlapped`] (the engine on this thread, the output messages
/// on a second one), as the node's run loop does; frames per second of wall time.
fn overlapped_frames_per_s(
    engine: &Engine,
    frames: &[image::RgbImage],
    count: usize,
    compressed_twins: bool,
) -> anyhow::Result<f64> {
    let build_messages = message_builder(engine, compressed_twins);
    let mut failure = None;
    let started = std::time::Instant::now();
    overlapped(
        0..count,
        |i| match engine.predict(&frames[i % frames.len()]) {
            Ok(prediction) => Some(prediction),
            Err(e) => {
                failure.get_or_insert(e);
                None
            }
        },
        |prediction| build_messages(&prediction),
    );
    let seconds = started.elapsed().as_secs_f64();
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(count as f64 / seconds),
    }
}

fn summarise(
    args: &BenchArgs,
    engine: &Engine,
    parameters: i64,
    device: Device,
    timings: &[FrameTime],
) -> Report {
    let totals: Vec<f64> = timings.iter().map(|t| t.total_ms).collect();
    let total: f64 = totals.iter().sum();
    let forward: f64 = timings.iter().map(|t| t.stages.forward_ms).sum();
    let median =
        |f: fn(&FrameTime) -> f64| percentile(&timings.iter().map(f).collect::<Vec<_>>(), 0.5);
    Report {
        arch: args.arch.clone(),
        parameters,
        height: args.height,
        width: args.width,
        mode: args.mode.to_string(),
        samples: if args.mode == Mode::Mc {
            args.samples
        } else {
            1
        },
        batch_size: (args.mode == Mode::Mc).then(|| engine.mc_batch_size()),
        noise_samples: args.noise_samples,
        device: device_name(device),
        precision: args.precision.to_string(),
        channels_last: args.channels_last,
        cuda_graphs: args.cuda_graphs,
        cudnn_benchmark: device.is_cuda().then_some(!args.no_cudnn_benchmark),
        pinned_download: device.is_cuda().then(|| engine.pinned_download()),
        device_colors: args.device_colors,
        compressed_twins: args.compressed_twins,
        cpu_threads: tch::get_num_threads(),
        frames: timings.len(),
        median_ms: percentile(&totals, 0.5),
        p95_ms: percentile(&totals, 0.95),
        mean_ms: total / totals.len() as f64,
        frames_per_s: 1000.0 / percentile(&totals, 0.5),
        forward_share: forward / total,
        stages_median_ms: Stages {
            upload: median(|t| t.stages.upload_ms),
            forward: median(|t| t.stages.forward_ms),
            device_post: median(|t| t.stages.device_post_ms),
            download: median(|t| t.stages.download_ms),
            host_outputs: median(|t| t.host_outputs_ms),
            points: median(|t| t.points_ms),
            points_every_pixel: median(|t| t.points_every_pixel_ms),
        },
        points_per_frame: timings.iter().map(|t| t.points).max().unwrap_or(0),
        points_stride: args.points_stride,
        points_camera_info: args.camera_info.as_ref().map(|p| p.display().to_string()),
        peak_rss_mib: None,
        gpu_memory_used_mib: None,
        gpu_memory: None,
        overlapped_frames_per_s: None,
        unprofiled_median_ms: None,
        single_pass_median_ms: None,
        single_pass_equivalents: None,
        mc_vs_sequential_ratio: None,
        head_samples: (args.mode == Mode::Moments).then_some(args.head_samples),
        rules: (args.mode == Mode::Moments).then(|| args.rules.to_string()),
        libtorch: bayes_perception::LIBTORCH_VERSION,
        heads: "fp32 fused",
    }
}

fn print_report(r: &Report) {
    println!(
        "{} ({:.2} M parameters), {}x{}, {}{}{}, mode {}{}, device {} ({} CPU thread(s)), {} frame(s)",
        r.arch,
        r.parameters as f64 / 1e6,
        r.height,
        r.width,
        r.precision,
        match (r.channels_last, r.cuda_graphs) {
            (true, true) => " channels-last, CUDA graphs",
            (true, false) => " channels-last",
            (false, true) => ", CUDA graphs",
            (false, false) => "",
        },
        match (r.device_colors, r.compressed_twins) {
            (true, true) => ", colours on the device, compressed twins",
            (true, false) => ", colours on the device",
            (false, true) => ", compressed twins",
            (false, false) => "",
        },
        r.mode,
        match (r.batch_size, r.head_samples) {
            (Some(b), _) => format!(" T={} batch {}", r.samples, b),
            (None, Some(k)) => format!(
                " ({}, {k} head samples)",
                r.rules.as_deref().unwrap_or_default()
            ),
            (None, None) => String::new(),
        },
        r.device,
        r.cpu_threads,
        r.frames
    );
    println!(
        "  per frame: median {:.1} ms, p95 {:.1} ms, mean {:.1} ms",
        r.median_ms, r.p95_ms, r.mean_ms
    );
    println!(
        "  {:.1} frames/s; network forward share {:.1} %",
        r.frames_per_s,
        r.forward_share * 100.0
    );
    let st = &r.stages_median_ms;
    println!(
        "  stages (medians): upload {:.2} ms, forward {:.2} ms, device post {:.2} ms, download {:.2} ms{}, host outputs {:.2} ms",
        st.upload,
        st.forward,
        st.device_post,
        st.download,
        match r.pinned_download {
            Some(true) => " (page-locked)",
            Some(false) => " (pageable)",
            None => "",
        },
        st.host_outputs
    );
    if st.points_every_pixel > 0.0 {
        println!(
            "  point cloud (one thread, stride {}, camera {}): {} points in {:.2} ms; with valid depth at every pixel {:.2} ms",
            r.points_stride,
            r.points_camera_info.as_deref().unwrap_or("pinhole"),
            r.points_per_frame,
            st.points,
            st.points_every_pixel
        );
    }
    if let Some(ms) = r.unprofiled_median_ms {
        println!("  not profiled (as the node runs it): median {ms:.2} ms per frame");
    }
    if let Some(fps) = r.overlapped_frames_per_s {
        println!("  overlapped (network and messages of consecutive frames on two threads, as the node runs them): {fps:.1} frames/s");
    }
    if let (Some(single), Some(equivalents)) = (r.single_pass_median_ms, r.single_pass_equivalents)
    {
        println!("  single pass: median {single:.1} ms; one {} frame = {equivalents:.2} single-pass frames", r.mode);
    }
    if let Some(ratio) = r.mc_vs_sequential_ratio {
        println!(
            "  one T={} frame / {} single-pass frames = {ratio:.2}",
            r.samples, r.samples
        );
    }
    if let Some(m) = r.gpu_memory {
        println!(
            "  GPU memory (libtorch allocator, timed frames): peak allocated {:.0} MiB, peak reserved {:.0} MiB",
            m.peak_allocated_mib, m.peak_reserved_mib
        );
    }
    if let Some(mib) = r.gpu_memory_used_mib {
        println!("  GPU memory in use after the run (context + cached peak): {mib:.0} MiB");
    }
    match r.peak_rss_mib {
        Some(mib) => println!("  peak host memory (RSS): {mib:.0} MiB"),
        None => println!("  peak host memory: not available on this OS"),
    }
}

/// Deterministic pseudo-random RGB frames (smooth gradients plus noise, like a scene
/// more than white noise is).
fn synthetic_frames(count: usize, height: i64, width: i64) -> Vec<image::RgbImage> {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(0);
    (0..count)
        .map(|_| {
            let base = Tensor::rand([3, 4, 4], (Kind::Float, Device::Cpu))
                .unsqueeze(0)
                .upsample_bilinear2d([height, width], false, None, None)
                .squeeze_dim(0);
            let noisy = (base * 200.0
                + Tensor::rand([3, height, width], (Kind::Float, Device::Cpu)) * 55.0)
                .clamp(0.0, 255.0)
                .to_kind(Kind::Uint8)
                .permute([1, 2, 0])
                .contiguous()
                .view(-1);
            let data = Vec::<u8>::try_from(&noisy).expect("u8 tensor");
            image::RgbImage::from_raw(width as u32, height as u32, data).expect("sized")
        })
        .collect()
}

/// The `q` quantile of timings (interpolated between ranks; bench always has frames).
fn percentile(values: &[f64], q: f64) -> f64 {
    quantile(values, q).expect("bench times at least one frame")
}

/// Peak resident set size of this process (Linux VmHWM), MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
