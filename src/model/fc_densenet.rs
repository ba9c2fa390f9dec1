//! FC-DenseNet, "The One Hundred Layers Tiramisu" (Jégou et al. 2017, arXiv 1611.09326),
//! with the Bayesian heads of Kendall & Gal, "What Uncertainties Do We Need in Bayesian
//! Deep Learning for Computer Vision?" (NeurIPS 2017, arXiv 1703.04977).
//!
//! Each task reads the shared decoder output through 1x1 convolutions: a prediction and
//! its log variance `s` (semantic: C logits and C log variances; depth: mean and s).
//! MC dropout is an explicit [`Pass`], not tch's `train` flag: that flag would also switch
//! BatchNorm to batch statistics, and for MC sampling only dropout may be stochastic.

use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Kind, Tensor};

use crate::moments::{self, Gaussian, Rules, TransposedGeometry};

/// How a forward pass treats the stochastic and batch-dependent layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Training: BatchNorm uses (and updates) batch statistics, dropout active.
    Train,
    /// Deterministic inference: BatchNorm running statistics, dropout off.
    Eval,
    /// One Monte Carlo dropout sample: BatchNorm running statistics, dropout active.
    McSample,
}

impl Pass {
    fn batch_statistics(self) -> bool {
        self == Pass::Train
    }

    fn dropout_active(self) -> bool {
        self != Pass::Eval
    }
}

/// The network's shape. Presets follow the Tiramisu paper; any other shape can be written
/// in a model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Output channels of the first 3x3 convolution.
    pub first_conv_channels: i64,
    /// Feature maps added by each dense layer (k).
    pub growth_rate: i64,
    /// Dense layers per block on the way down; one max-pool per block.
    pub down_blocks: Vec<i64>,
    /// Dense layers in the bottleneck block.
    pub bottleneck_layers: i64,
    /// Dense layers per block on the way up (same count as `down_blocks`).
    pub up_blocks: Vec<i64>,
    /// Dropout probability after every dense-layer conv and in transitions down.
    pub dropout: f64,
}

/// Names of the built-in presets, in the order `--help` lists them.
pub const PRESETS: [&str; 3] = ["fcdensenet56", "fcdensenet67", "fcdensenet103"];

impl Config {
    /// FC-DenseNet56: k = 12, 4 layers in every block (~1.5 M parameters).
    pub fn fcdensenet56() -> Self {
        Self::uniform(12, 4)
    }

    /// FC-DenseNet67: k = 16, 5 layers in every block (~3.5 M parameters).
    pub fn fcdensenet67() -> Self {
        Self::uniform(16, 5)
    }

    /// FC-DenseNet103: k = 16, blocks [4, 5, 7, 10, 12] / 15 / [12, 10, 7, 5, 4] (~9.4 M).
    pub fn fcdensenet103() -> Self {
        Config {
            first_conv_channels: 48,
            growth_rate: 16,
            down_blocks: vec![4, 5, 7, 10, 12],
            bottleneck_layers: 15,
            up_blocks: vec![12, 10, 7, 5, 4],
            dropout: 0.2,
        }
    }

    fn uniform(growth_rate: i64, layers: i64) -> Self {
        Config {
            first_conv_channels: 48,
            growth_rate,
            down_blocks: vec![layers; 5],
            bottleneck_layers: layers,
            up_blocks: vec![layers; 5],
            dropout: 0.2,
        }
    }

    /// The preset of that name, if there is one.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "fcdensenet56" => Some(Self::fcdensenet56()),
            "fcdensenet67" => Some(Self::fcdensenet67()),
            "fcdensenet103" => Some(Self::fcdensenet103()),
            _ => None,
        }
    }

    /// Input height and width must be multiples of this (one 2x2 pool per down block).
    pub fn size_multiple(&self) -> i64 {
        1 << self.down_blocks.len()
    }

    /// Checks the shape; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.first_conv_channels < 1 {
            return Err("first_conv_channels must be at least 1".into());
        }
        if self.growth_rate < 1 {
            return Err("growth_rate must be at least 1".into());
        }
        if self.down_blocks.is_empty() || self.down_blocks.len() > 8 {
            return Err(format!(
                "down_blocks must list 1 to 8 blocks, not {}",
                self.down_blocks.len()
            ));
        }
        if self.up_blocks.len() != self.down_blocks.len() {
            return Err(format!(
                "up_blocks has {} blocks but down_blocks has {}; they must match",
                self.up_blocks.len(),
                self.down_blocks.len()
            ));
        }
        let all = self.down_blocks.iter().chain(&self.up_blocks);
        if let Some(bad) = all.chain([&self.bottleneck_layers]).find(|&&n| n < 1) {
            return Err(format!("every block needs at least 1 layer, found {bad}"));
        }
        if !(self.dropout > 0.0 && self.dropout < 1.0) {
            return Err(format!(
                "dropout must be in (0, 1) (MC dropout needs it), not {}",
                self.dropout
            ));
        }
        Ok(())
    }

    /// The number of values the network with `heads` stores: weights, biases and
    /// BatchNorm statistics, counted from the shape alone (as f64, so any shape a file can
    /// name is counted without overflow), before anything is allocated.
    pub fn stored_values(&self, heads: Heads) -> f64 {
        let k = self.growth_rate as f64;
        // BatchNorm: weight, bias, running mean and variance per channel.
        let bn = |c: f64| 4.0 * c;
        // Layer i of a block reads c + i·k channels: BatchNorm and a 3x3 conv to k. Summed
        // in closed form (a file may name any number of layers).
        let dense_block = |c: f64, layers: i64| -> f64 {
            let l = layers.max(0) as f64;
            l * (bn(c) + 9.0 * c * k + k) + (4.0 * k + 9.0 * k * k) * l * (l - 1.0) / 2.0
        };
        let f = self.first_conv_channels as f64;
        let mut total = 27.0 * f + f;
        let mut channels = f;
        let mut skips = Vec::new();
        for &layers in &self.down_blocks {
            total += dense_block(channels, layers);
            channels += layers as f64 * k;
            skips.push(channels);
            total += bn(channels) + channels * channels + channels;
        }
        total += dense_block(channels, self.bottleneck_layers);
        let mut upsampled = self.bottleneck_layers as f64 * k;
        for (&layers, skip) in self.up_blocks.iter().zip(skips.iter().rev()) {
            total += 9.0 * upsampled * upsampled + upsampled;
            total += dense_block(upsampled + skip, layers);
            channels = upsampled + skip + layers as f64 * k;
            upsampled = layers as f64 * k;
        }
        let outputs =
            2.0 * heads.semantic_classes.unwrap_or(0) as f64 + if heads.depth { 2.0 } else { 0.0 };
        total + outputs * (channels + 1.0)
    }

    /// Channels of the decoder output that the heads read.
    pub fn decoder_channels(&self) -> i64 {
        let k = self.growth_rate;
        let mut channels = self.first_conv_channels;
        let mut skips = Vec::with_capacity(self.down_blocks.len());
        for &layers in &self.down_blocks {
            channels += layers * k;
            skips.push(channels);
        }
        let mut upsampled = self.bottleneck_layers * k;
        let mut out = 0;
        for (&layers, skip) in self.up_blocks.iter().zip(skips.iter().rev()) {
            out = upsampled + skip + layers * k;
            upsampled = layers * k;
        }
        out
    }
}

/// The heads a model carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    /// Number of semantic classes, if the model segments.
    pub semantic_classes: Option<i64>,
    /// Whether the model regresses depth.
    pub depth: bool,
}

/// Padding of the 3x3 convolutions (first layer, dense layers): sizes are kept.
const CONV3_PADDING: i64 = 1;

/// The transposed convolution of a transition up: [B, C, H, W] -> [B, C, 2H, 2W].
const TRANSITION_UP: TransposedGeometry = TransposedGeometry {
    stride: 2,
    padding: 1,
    output_padding: 1,
};

/// Raw head outputs of one batch, at network resolution.
#[derive(Debug)]
pub struct HeadOutputs {
    /// Logits `[B, C, H, W]` and their log variances s = log σ² `[B, C, H, W]`.
    pub semantic: Option<(Tensor, Tensor)>,
    /// Depth mean `[B, 1, H, W]` (metres) and s `[B, 1, H, W]` (log σ² or log σ̂).
    pub depth: Option<(Tensor, Tensor)>,
}

impl HeadOutputs {
    /// The tensors in order: semantic logits and s, then depth mean and s, where present.
    pub fn into_tensors(self) -> Vec<Tensor> {
        let pairs = self.semantic.into_iter().chain(self.depth);
        pairs.flat_map(|(a, b)| [a, b]).collect()
    }

    /// The inverse of [`HeadOutputs::into_tensors`] for a network with these heads.
    pub fn from_tensors(tensors: Vec<Tensor>, semantic: bool, depth: bool) -> Self {
        assert_eq!(tensors.len(), 2 * (semantic as usize + depth as usize));
        let mut it = tensors.into_iter();
        let mut pair = |present: bool| {
            present.then(|| (it.next().expect("counted"), it.next().expect("counted")))
        };
        let semantic = pair(semantic);
        HeadOutputs {
            semantic,
            depth: pair(depth),
        }
    }
}

/// Head outputs as propagated moments (`mode: moments`): each head's prediction and its s
/// as Gaussians per unit (their marginals), shapes as in [`HeadOutputs`], and the heads'
/// input.
#[derive(Debug)]
pub struct HeadMoments {
    pub semantic: Option<(Gaussian, Gaussian)>,
    pub depth: Option<(Gaussian, Gaussian)>,
    /// What the 1x1 heads read (the last dense block's output), its units independent
    /// Gaussians: the head outputs all read it, so they are correlated (a logit shift
    /// shared by every class is no disagreement); [`FcDenseNet::sample_semantic_heads`]
    /// draws the outputs with that covariance.
    pub head_input: Gaussian,
}

/// Pixels whose head covariances [`FcDenseNet::sample_semantic_heads`] factors at once, at
/// most.
const HEAD_DRAW_PIXELS: i64 = 1 << 16;

/// Bytes of covariances, factors and draws [`FcDenseNet::sample_semantic_heads`] holds at
/// once (at least one pixel's): with many classes a chunk holds fewer pixels (12 classes,
/// K = 20: 65536 pixels, about 0.9 GB; 150 classes: about 710 pixels).
const HEAD_DRAW_BYTES: i64 = 1 << 30;

/// Added to each pixel's head covariance, relative to its mean variance, so that the
/// Cholesky factor exists: a standard deviation of 0.1 % of the typical one.
const HEAD_COVARIANCE_JITTER: f64 = 1e-6;

/// The BatchNorm epsilon of every norm layer (tch's default, as the layers are built).
fn batch_norm_eps() -> f64 {
    nn::BatchNormConfig::default().eps
}

/// Dropout with inverted scaling (kept values × 1/(1 − p)), as `Tensor::dropout`, but the
/// mask is always drawn in fp32, in the tensor's memory order: the same seed gives the same
/// masks at every precision (not in another memory layout: channels-last visits the
/// elements in another order). libtorch's fused CUDA kernel draws per vector of elements
/// and the vector width depends on the dtype, so a bf16 MC sample was another sample than
/// the fp32 one, not the same sample at lower precision. The mask is a uniform draw compared
/// with p rather than libtorch's Bernoulli draw, which on the CPU takes twice as long in
/// isolation (21 against 11 ms for 16 maps of 368x480 on the 2-core VM).
fn dropout(xs: &Tensor, p: f64, active: bool) -> Tensor {
    if !active {
        return xs.shallow_clone();
    }
    let mut uniform = Tensor::empty_strided(xs.size(), xs.stride(), (Kind::Float, xs.device()));
    let _ = uniform.uniform_(0.0, 1.0);
    // Multiplying by the boolean mask first keeps autograd's saved mask at one byte per
    // element in training.
    (xs * uniform.ge(p)) * (1.0 / (1.0 - p))
}

/// `[B, C, H, W]` with channels-last strides (NHWC in memory), the same values: the layout
/// cuDNN's fastest half-precision convolutions work in. (tch has no memory-format API;
/// permute, copy and permute back builds the same strides as PyTorch's
/// `to(memory_format=torch.channels_last)`.)
pub fn to_channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Whether `t` `[B, C, H, W]` holds its channels innermost in memory.
pub fn is_channels_last(t: &Tensor) -> bool {
    let (size, stride) = (t.size(), t.stride());
    size.len() == 4 && size[1] > 1 && stride[1] == 1 && stride[3] >= size[1]
}

#[derive(Debug)]
struct DenseLayer {
    norm: nn::BatchNorm,
    conv: nn::Conv2D,
    dropout: f64,
}

impl DenseLayer {
    fn new(vs: nn::Path, in_channels: i64, growth_rate: i64, dropout: f64) -> Self {
        let conv_cfg = nn::ConvConfig {
            padding: CONV3_PADDING,
            ..Default::default()
        };
        DenseLayer {
            norm: nn::batch_norm2d(&vs / "norm", in_channels, Default::default()),
            conv: nn::conv2d(&vs / "conv", in_channels, growth_rate, 3, conv_cfg),
            dropout,
        }
    }

    fn forward(&self, xs: &Tensor, pass: Pass) -> Tensor {
        // [B, C_in, H, W] -> [B, k, H, W]
        let conv = xs
            .apply_t(&self.norm, pass.batch_statistics())
            .relu()
            .apply(&self.conv);
        dropout(&conv, self.dropout, pass.dropout_active())
    }

    fn forward_moments(&self, xs: &Gaussian, rules: Rules) -> Gaussian {
        let normed = moments::batch_norm_eval(xs, &self.norm, batch_norm_eps());
        let activated = moments::relu_with(&normed, rules);
        let conv = moments::conv2d(&activated, &self.conv, CONV3_PADDING);
        moments::dropout(&conv, self.dropout)
    }
}

#[derive(Debug)]
struct DenseBlock {
    layers: Vec<DenseLayer>,
}

impl DenseBlock {
    fn new(vs: nn::Path, in_channels: i64, layers: i64, growth_rate: i64, dropout: f64) -> Self {
        let layers = (0..layers)
            .map(|i| DenseLayer::new(&vs / i, in_channels + i * growth_rate, growth_rate, dropout))
            .collect();
        DenseBlock { layers }
    }

    /// Returns (input and all new maps concatenated, the new maps alone).
    fn forward(&self, xs: &Tensor, pass: Pass) -> (Tensor, Tensor) {
        if pass == Pass::Train {
            // Autograd needs every layer's input intact: concatenate afresh per layer.
            let mut stack = xs.shallow_clone();
            let mut new_maps = Vec::with_capacity(self.layers.len());
            for layer in &self.layers {
                let out = layer.forward(&stack, pass);
                stack = Tensor::cat(&[&stack, &out], 1);
                new_maps.push(out);
            }
            return (stack, Tensor::cat(&new_maps, 1));
        }
        let mut stack = GrowingStack::new(xs, self.new_channels());
        for layer in &self.layers {
            let out = layer.forward(&stack.all(), pass);
            stack.push(&out);
        }
        stack.finish()
    }

    /// [`DenseBlock::forward`] on moments.
    fn forward_moments(&self, xs: &Gaussian, rules: Rules) -> (Gaussian, Gaussian) {
        let new = self.new_channels();
        let (mut means, mut vars) = (
            GrowingStack::new(&xs.mean, new),
            GrowingStack::new(&xs.var, new),
        );
        for layer in &self.layers {
            let input = Gaussian {
                mean: means.all(),
                var: vars.all(),
            };
            let out = layer.forward_moments(&input, rules);
            means.push(&out.mean);
            vars.push(&out.var);
        }
        let ((mean, new_mean), (var, new_var)) = (means.finish(), vars.finish());
        (
            Gaussian { mean, var },
            Gaussian {
                mean: new_mean,
                var: new_var,
            },
        )
    }

    /// Channels the block adds to its input.
    fn new_channels(&self) -> i64 {
        self.layers.iter().map(|l| l.conv.ws.size()[0]).sum()
    }
}

/// A dense block's output built in place (inference only): one buffer for the input and
/// every layer's new maps, each layer reading the filled prefix as a view, so the growing
/// stack is not copied again for every layer as concatenation does (the memory-efficient
/// DenseNet of Pleiss et al. 2017). Not for training: the in-place writes would break
/// autograd.
struct GrowingStack {
    buffer: Tensor,
    input_channels: i64,
    filled: i64,
}

impl GrowingStack {
    /// A buffer for `xs` `[B, C, H, W]` and `new` more channels, with `xs` copied in.
    /// The buffer has the layout of `xs` (channels-last stays channels-last).
    fn new(xs: &Tensor, new: i64) -> Self {
        let size = xs.size();
        let options = (xs.kind(), xs.device());
        let buffer = if is_channels_last(xs) {
            Tensor::empty([size[0], size[2], size[3], size[1] + new], options).permute([0, 3, 1, 2])
        } else {
            Tensor::empty([size[0], size[1] + new, size[2], size[3]], options)
        };
        buffer.narrow(1, 0, size[1]).copy_(xs);
        GrowingStack {
            buffer,
            input_channels: size[1],
            filled: size[1],
        }
    }

    /// The channels filled so far, as a view.
    fn all(&self) -> Tensor {
        self.buffer.narrow(1, 0, self.filled)
    }

    /// Appends `maps` `[B, k, H, W]` after the filled channels.
    fn push(&mut self, maps: &Tensor) {
        let k = maps.size()[1];
        self.buffer.narrow(1, self.filled, k).copy_(maps);
        self.filled += k;
    }

    /// (input and all new maps, the new maps alone).
    fn finish(self) -> (Tensor, Tensor) {
        debug_assert_eq!(self.filled, self.buffer.size()[1], "every layer pushed");
        let new = self
            .buffer
            .narrow(1, self.input_channels, self.filled - self.input_channels);
        (self.buffer, new)
    }
}

#[derive(Debug)]
struct TransitionDown {
    norm: nn::BatchNorm,
    conv: nn::Conv2D,
    dropout: f64,
}

impl TransitionDown {
    fn new(vs: nn::Path, channels: i64, dropout: f64) -> Self {
        TransitionDown {
            norm: nn::batch_norm2d(&vs / "norm", channels, Default::default()),
            conv: nn::conv2d(&vs / "conv", channels, channels, 1, Default::default()),
            dropout,
        }
    }

    fn forward(&self, xs: &Tensor, pass: Pass) -> Tensor {
        // [B, C, H, W] -> [B, C, H/2, W/2]
        let conv = xs
            .apply_t(&self.norm, pass.batch_statistics())
            .relu()
            .apply(&self.conv);
        dropout(&conv, self.dropout, pass.dropout_active()).max_pool2d_default(2)
    }

    fn forward_moments(&self, xs: &Gaussian, rules: Rules) -> Gaussian {
        let normed = moments::batch_norm_eval(xs, &self.norm, batch_norm_eps());
        let conv = moments::conv2d(&moments::relu_with(&normed, rules), &self.conv, 0);
        moments::max_pool2x2_with(&moments::dropout(&conv, self.dropout), rules)
    }
}

/// 3x3 transposed convolution, stride 2: [B, C, H, W] -> [B, C, 2H, 2W].
fn transition_up(vs: nn::Path, channels: i64) -> nn::ConvTranspose2D {
    let cfg = nn::ConvTransposeConfig {
        stride: TRANSITION_UP.stride,
        padding: TRANSITION_UP.padding,
        output_padding: TRANSITION_UP.output_padding,
        ..Default::default()
    };
    nn::conv_transpose2d(vs, channels, channels, 3, cfg)
}

/// The Bayesian FC-DenseNet. Tensor names follow the field names (`down.0.3.conv.weight`).
#[derive(Debug)]
pub struct FcDenseNet {
    first_conv: nn::Conv2D,
    down: Vec<(DenseBlock, TransitionDown)>,
    bottleneck: DenseBlock,
    up: Vec<(nn::ConvTranspose2D, DenseBlock)>,
    semantic_heads: Option<(nn::Conv2D, nn::Conv2D)>,
    depth_heads: Option<(nn::Conv2D, nn::Conv2D)>,
    /// Every head as one 1x1 convolution ([`FcDenseNet::fuse_heads`]): the heads' weights
    /// and biases concatenated, and each head's output channels, in head order.
    fused_heads: Option<(Tensor, Tensor, Vec<i64>)>,
    size_multiple: i64,
    /// Inference in channels-last layout ([`FcDenseNet::set_channels_last`]).
    channels_last: bool,
}

impl FcDenseNet {
    /// Builds the network with freshly initialised weights under `vs`. `cfg` must be valid
    /// (see [`Config::validate`]).
    pub fn new(vs: &nn::Path, cfg: &Config, heads: Heads) -> Self {
        let k = cfg.growth_rate;
        let p = cfg.dropout;
        let conv3 = nn::ConvConfig {
            padding: CONV3_PADDING,
            ..Default::default()
        };
        let first_conv = nn::conv2d(vs / "first_conv", 3, cfg.first_conv_channels, 3, conv3);

        let mut channels = cfg.first_conv_channels;
        let mut skip_channels = Vec::with_capacity(cfg.down_blocks.len());
        let mut down = Vec::with_capacity(cfg.down_blocks.len());
        for (i, &layers) in cfg.down_blocks.iter().enumerate() {
            let block = DenseBlock::new(vs / "down" / i / "block", channels, layers, k, p);
            channels += layers * k;
            skip_channels.push(channels);
            down.push((
                block,
                TransitionDown::new(vs / "down" / i / "transition", channels, p),
            ));
        }

        let bottleneck = DenseBlock::new(vs / "bottleneck", channels, cfg.bottleneck_layers, k, p);
        let mut upsampled = cfg.bottleneck_layers * k;
        let mut up = Vec::with_capacity(cfg.up_blocks.len());
        for (i, (&layers, &skip)) in cfg
            .up_blocks
            .iter()
            .zip(skip_channels.iter().rev())
            .enumerate()
        {
            let transition = transition_up(vs / "up" / i / "transition", upsampled);
            let block = DenseBlock::new(vs / "up" / i / "block", upsampled + skip, layers, k, p);
            channels = upsampled + skip + layers * k;
            upsampled = layers * k;
            up.push((transition, block));
        }
        debug_assert_eq!(channels, cfg.decoder_channels());

        let head = |task: &str, name: &str, out: i64| {
            nn::conv2d(
                vs / "heads" / task / name,
                channels,
                out,
                1,
                Default::default(),
            )
        };
        let semantic_heads = heads.semantic_classes.map(|classes| {
            (
                head("semantic", "logits", classes),
                head("semantic", "s", classes),
            )
        });
        let depth_heads = heads
            .depth
            .then(|| (head("depth", "mean", 1), head("depth", "s", 1)));

        FcDenseNet {
            first_conv,
            down,
            bottleneck,
            up,
            semantic_heads,
            depth_heads,
            fused_heads: None,
            size_multiple: cfg.size_multiple(),
            channels_last: false,
        }
    }

    /// [`FcDenseNet::forward`] runs every head as one convolution from now on, so the
    /// decoder output is read once, not once per head (inference: the engine fuses them
    /// after the last change of the weights' kind and layout; the fused weights are
    /// copies, which training would leave behind).
    pub fn fuse_heads(&mut self) {
        let convs: Vec<&nn::Conv2D> = self
            .semantic_heads
            .iter()
            .chain(&self.depth_heads)
            .flat_map(|(a, b)| [a, b])
            .collect();
        if convs.is_empty() {
            return;
        }
        let _guard = tch::no_grad_guard();
        let weights: Vec<&Tensor> = convs.iter().map(|c| &c.ws).collect();
        let biases: Vec<&Tensor> = convs
            .iter()
            .map(|c| c.bs.as_ref().expect("heads have biases"))
            .collect();
        let mut weights = Tensor::cat(&weights, 0);
        if self.channels_last {
            weights = to_channels_last(&weights);
        }
        let sizes = convs.iter().map(|c| c.ws.size()[0]).collect();
        self.fused_heads = Some((weights, Tensor::cat(&biases, 0), sizes));
    }

    /// Carry the activations channels-last: [`FcDenseNet::forward`] and
    /// [`FcDenseNet::forward_moments`] lay the input out NHWC, every layer keeps that
    /// layout (convolutions, norms, dropout, pooling, the dense blocks' buffers and the
    /// concatenations), and the head outputs come back in the usual layout. The weights
    /// must be channels-last too ([`crate::model::Model::use_channels_last`] does both).
    pub(crate) fn set_channels_last(&mut self, on: bool) {
        self.channels_last = on;
    }

    /// The network's input in the layout it runs in (an input that arrives channels-last,
    /// as a camera's HWC image permuted, is laid out NCHW for NCHW weights).
    fn laid_out(&self, xs: &Tensor) -> Tensor {
        if self.channels_last {
            to_channels_last(xs)
        } else {
            xs.contiguous()
        }
    }

    /// Checks (debug builds) that an activation is still channels-last where it should be:
    /// a layer that silently converted back would cost a copy per layer.
    fn debug_check_layout(&self, t: &Tensor, what: &str) {
        debug_assert!(
            !self.channels_last || is_channels_last(t),
            "{what} lost the channels-last layout: size {:?}, strides {:?}",
            t.size(),
            t.stride()
        );
    }

    /// The decoder output in the heads' number format: the engine keeps the heads fp32
    /// whatever the network's precision ([`crate::engine::Engine::new`]).
    fn head_input(&self, stack: Tensor) -> Tensor {
        let head = self
            .semantic_heads
            .as_ref()
            .or(self.depth_heads.as_ref())
            .map(|(conv, _)| conv.ws.kind());
        match head {
            Some(kind) if kind != stack.kind() => stack.to_kind(kind),
            _ => stack,
        }
    }

    /// A head output in the usual layout (one copy of a few channels when channels-last).
    fn head_output(&self, t: Tensor) -> Tensor {
        if self.channels_last {
            t.contiguous()
        } else {
            t
        }
    }

    /// Runs the network on normalised images `[B, 3, H, W]`, H and W multiples of
    /// [`Config::size_multiple`].
    pub fn forward(&self, xs: &Tensor, pass: Pass) -> HeadOutputs {
        self.check_input(xs);
        let mut stack = self.laid_out(xs).apply(&self.first_conv);
        self.debug_check_layout(&stack, "the first convolution");
        let mut skips = Vec::with_capacity(self.down.len());
        for (block, transition) in &self.down {
            let (out, _) = block.forward(&stack, pass);
            self.debug_check_layout(&out, "a dense block");
            stack = transition.forward(&out, pass);
            self.debug_check_layout(&stack, "a transition down");
            skips.push(out);
        }
        // Only the bottleneck's new maps are upsampled (the paper's parameter saving).
        let (_, mut to_upsample) = self.bottleneck.forward(&stack, pass);
        for ((transition, block), skip) in self.up.iter().zip(skips.iter().rev()) {
            let upsampled = to_upsample.apply(transition);
            self.debug_check_layout(&upsampled, "a transition up");
            let joined = Tensor::cat(&[&upsampled, skip], 1);
            self.debug_check_layout(&joined, "a skip concatenation");
            let (out, new_maps) = block.forward(&joined, pass);
            self.debug_check_layout(&out, "a dense block");
            stack = out;
            to_upsample = new_maps;
        }
        let stack = self.head_input(stack);
        if let Some((weights, biases, sizes)) = &self.fused_heads {
            let out = stack.conv2d(weights, Some(biases), [1, 1], [0, 0], [1, 1], 1);
            let mut parts = self.head_output(out).split_with_sizes(sizes, 1).into_iter();
            let mut next = || parts.next().expect("one part per head");
            return HeadOutputs {
                semantic: self.semantic_heads.as_ref().map(|_| (next(), next())),
                depth: self.depth_heads.as_ref().map(|_| (next(), next())),
            };
        }
        let head = |conv: &nn::Conv2D| self.head_output(stack.apply(conv));
        HeadOutputs {
            semantic: self
                .semantic_heads
                .as_ref()
                .map(|(f, s)| (head(f), head(s))),
            depth: self.depth_heads.as_ref().map(|(m, s)| (head(m), head(s))),
        }
    }

    /// One pass of means and variances instead of samples (Postels et al. 2019; see
    /// [`crate::moments`]): the input is deterministic, every dropout adds variance, and
    /// BatchNorm uses its running statistics, as in [`Pass::McSample`]; `rules` say how
    /// the ReLUs and max-pools treat a Gaussian. Same input as [`FcDenseNet::forward`].
    pub fn forward_moments(&self, xs: &Tensor, rules: Rules) -> HeadMoments {
        self.check_input(xs);
        // Nothing is stochastic before the first dropout: the first conv is exact.
        let mut stack = Gaussian::deterministic(self.laid_out(xs).apply(&self.first_conv));
        let mut skips = Vec::with_capacity(self.down.len());
        for (block, transition) in &self.down {
            let (out, _) = block.forward_moments(&stack, rules);
            stack = transition.forward_moments(&out, rules);
            skips.push(out);
        }
        let (_, mut to_upsample) = self.bottleneck.forward_moments(&stack, rules);
        for ((transition, block), skip) in self.up.iter().zip(skips.iter().rev()) {
            let upsampled = moments::conv_transpose2d(&to_upsample, transition, TRANSITION_UP);
            let joined = Gaussian::cat(&[&upsampled, skip], 1);
            let (out, new_maps) = block.forward_moments(&joined, rules);
            stack = out;
            to_upsample = new_maps;
        }
        let stack = Gaussian {
            mean: self.head_input(stack.mean),
            var: self.head_input(stack.var),
        };
        let head = |conv: &nn::Conv2D| {
            let out = moments::conv2d(&stack, conv, 0);
            Gaussian {
                mean: self.head_output(out.mean),
                var: self.head_output(out.var),
            }
        };
        HeadMoments {
            semantic: self
                .semantic_heads
                .as_ref()
                .map(|(f, s)| (head(f), head(s))),
            depth: self.depth_heads.as_ref().map(|(m, s)| (head(m), head(s))),
            head_input: stack,
        }
    }

    /// `draws` samples of the semantic heads' outputs (logits, s), each `[draws, C, H, W]`
    /// in fp32, for head inputs `input` (`[1, C_in, H, W]`, units independent N(mean,
    /// var), as [`HeadMoments::head_input`]). The 1x1 heads are linear, so their 2C outputs
    /// at a pixel are jointly Gaussian: mean W·μ + b, covariance W·diag(v)·Wᵀ, which keeps
    /// what the outputs share through their input. Drawn from that (a Cholesky factor per
    /// pixel, 2C normal draws each), as drawing the C_in inputs and applying the heads
    /// would, at a fraction of the random numbers. `None` without a semantic task.
    pub fn sample_semantic_heads(&self, input: &Gaussian, draws: i64) -> Option<(Tensor, Tensor)> {
        let (f, s) = self.semantic_heads.as_ref()?;
        let size = input.mean.size();
        let (channels, height, width) = (size[1], size[2], size[3]);
        let classes = f.ws.size()[0];
        let outputs = classes + s.ws.size()[0];
        let float = |t: &Tensor| t.to_kind(Kind::Float);
        let weights = float(&Tensor::cat(&[&f.ws, &s.ws], 0)).view([outputs, channels]);
        let biases = match (&f.bs, &s.bs) {
            (Some(fb), Some(sb)) => float(&Tensor::cat(&[fb, sb], 0)),
            _ => Tensor::zeros([outputs], (Kind::Float, weights.device())),
        };
        // [C_in, P]: pixels in row order whatever the layout.
        let flat = |t: &Tensor| float(t).contiguous().view([channels, height * width]);
        let (mean, var) = (flat(&input.mean), flat(&input.var).clamp_min(0.0));
        // Products of weight pairs [2C·2C, C_in]: the covariance of every pixel is this
        // times its input variances.
        let pairs =
            (weights.unsqueeze(1) * weights.unsqueeze(0)).view([outputs * outputs, channels]);
        let pixels = height * width;
        // Per pixel: the covariance, its factor and a temporary (2C x 2C), the draws, their
        // noise and a copy (2C x K), in fp32; at most HEAD_DRAW_PIXELS at once.
        let pixel_bytes = 4 * (4 * outputs * outputs + 3 * outputs * draws);
        let chunk = (HEAD_DRAW_BYTES / pixel_bytes).clamp(1, HEAD_DRAW_PIXELS);
        // [K, 2C, P], filled chunk by chunk.
        let drawn = Tensor::empty([draws, outputs, pixels], (Kind::Float, weights.device()));
        let mut start = 0;
        while start < pixels {
            let n = chunk.min(pixels - start);
            let (mean, var) = (mean.narrow(1, start, n), var.narrow(1, start, n));
            let centre = (weights.matmul(&mean) + biases.unsqueeze(1)).transpose(0, 1); // [n, 2C]
            let cov = pairs
                .matmul(&var)
                .transpose(0, 1)
                .reshape([n, outputs, outputs]);
            // A relative jitter keeps the factorisation defined where the outputs are
            // (nearly) dependent, e.g. two classes of equal weights, or no variance at all.
            let scale = cov.diagonal(0, 1, 2).mean_dim(1, true, Kind::Float) + 1e-12;
            let _ = cov
                .diagonal(0, 1, 2)
                .g_add_(&(scale * HEAD_COVARIANCE_JITTER));
            let (mut factor, info) = cov.linalg_cholesky_ex(false, false);
            let failed = info.ne(0);
            if failed.any().int64_value(&[]) != 0 {
                // Not expected with the jitter: those pixels' outputs drawn independently,
                // and said.
                log::warn!(
                    "moments: {} pixel(s) of a frame have a head covariance without a \
                     Cholesky factor; their head outputs are drawn independently",
                    failed.sum(Kind::Int64).int64_value(&[])
                );
                let independent = cov.diagonal(0, 1, 2).sqrt().diag_embed(0, 1, 2);
                factor = independent.where_self(&failed.view([n, 1, 1]), &factor);
            }
            drop(cov);
            let noise = Tensor::randn([n, outputs, draws], (Kind::Float, weights.device()));
            let sample = centre.unsqueeze(2) + factor.matmul(&noise); // [n, 2C, K]
            drawn.narrow(2, start, n).copy_(&sample.permute([2, 1, 0]));
            start += n;
        }
        let drawn = drawn.view([draws, outputs, height, width]);
        Some((
            drawn.narrow(1, 0, classes).contiguous(),
            drawn.narrow(1, classes, outputs - classes).contiguous(),
        ))
    }

    fn check_input(&self, xs: &Tensor) {
        let size = xs.size();
        assert!(
            size.len() == 4
                && size[2] % self.size_multiple == 0
                && size[3] % self.size_multiple == 0,
            "FcDenseNet input must be [B, 3, H, W] with H, W multiples of {}, got {size:?}",
            self.size_multiple
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::torch_rng_lock;
    use tch::{Device, Kind};

    #[test]
    fn dropout_masks_are_the_same_at_every_precision() {
        let _lock = torch_rng_lock();
        let draw = |kind: Kind| {
            tch::manual_seed(11);
            let xs = Tensor::ones([2, 16, 12, 12], (kind, Device::Cpu));
            dropout(&xs, 0.2, true).to_kind(Kind::Float)
        };
        let fp32 = draw(Kind::Float);
        let kept = fp32
            .ne(0.0)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[]);
        assert!((kept - 0.8).abs() < 0.03, "kept {kept}");
        // Kept values are scaled by 1/(1 - p), exactly representable in fp16 and bf16.
        assert!(
            fp32.eq(0.0)
                .logical_or(&fp32.eq(1.25))
                .all()
                .int64_value(&[])
                == 1
        );
        for kind in [Kind::BFloat16, Kind::Half] {
            assert!(draw(kind).equal(&fp32), "{kind:?} draws other masks");
        }
        // A fresh mask per call.
        assert!(!dropout(
            &Tensor::ones([2, 16, 12, 12], (Kind::Float, Device::Cpu)),
            0.2,
            true
        )
        .equal(&fp32));
        let xs = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
        assert!(dropout(&xs, 0.2, false).equal(&xs), "inactive: the input");
    }

    /// A two-level network with unequal blocks, small enough for unit tests.
    fn small_config() -> Config {
        Config {
            first_conv_channels: 8,
            growth_rate: 4,
            down_blocks: vec![2, 3],
            bottleneck_layers: 2,
            up_blocks: vec![3, 2],
            dropout: 0.2,
        }
    }

    #[test]
    fn fused_heads_give_each_heads_outputs() {
        let _lock = torch_rng_lock();
        tch::manual_seed(6);
        let cfg = small_config();
        let xs = Tensor::randn([2, 3, 16, 24], (Kind::Float, Device::Cpu));
        let _guard = tch::no_grad_guard();
        for (classes, depth) in [(Some(5), true), (None, true), (Some(3), false)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let heads = Heads {
                semantic_classes: classes,
                depth,
            };
            let mut net = FcDenseNet::new(&vs.root(), &cfg, heads);
            let outputs = |net: &FcDenseNet| {
                let out = net.forward(&xs, Pass::Eval);
                let pairs = out.semantic.into_iter().chain(out.depth);
                pairs.flat_map(|(a, b)| [a, b]).collect::<Vec<Tensor>>()
            };
            let separate = outputs(&net);
            net.fuse_heads();
            let fused = outputs(&net);
            assert_eq!(separate.len(), fused.len());
            for (a, b) in separate.iter().zip(&fused) {
                assert_eq!(a.size(), b.size());
                let diff = (a - b).abs().max().double_value(&[]);
                assert!(diff < 1e-5, "{classes:?} {depth}: differ by {diff}");
            }
        }
    }

    #[test]
    fn channels_last_gives_the_same_outputs_and_keeps_its_layout_through_the_network() {
        let _lock = torch_rng_lock();
        tch::manual_seed(5);
        let cfg = small_config();
        let heads = Heads {
            semantic_classes: Some(5),
            depth: true,
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let mut net = FcDenseNet::new(&vs.root(), &cfg, heads);
        let xs = Tensor::randn([2, 3, 16, 24], (Kind::Float, Device::Cpu));
        let _guard = tch::no_grad_guard();
        let run = |net: &FcDenseNet, pass: Pass| {
            tch::manual_seed(8);
            let out = net.forward(&xs, pass);
            let (logits, s) = out.semantic.unwrap();
            let (mean, depth_s) = out.depth.unwrap();
            let moments = net.forward_moments(&xs, Rules::ClosedForm);
            let (m_logits, _) = moments.semantic.unwrap();
            let linearized = net.forward_moments(&xs, Rules::Linearized);
            let (_, l_depth_s) = linearized.depth.unwrap();
            [
                logits,
                s,
                mean,
                depth_s,
                m_logits.mean,
                m_logits.var,
                l_depth_s.mean,
                l_depth_s.var,
            ]
        };
        let nchw = run(&net, Pass::Eval);
        let nchw_sample = run(&net, Pass::McSample);
        for (_, mut var) in vs.variables() {
            if var.dim() == 4 {
                var.set_data(&to_channels_last(&var));
            }
        }
        assert!(is_channels_last(&net.first_conv.ws));
        net.set_channels_last(true);
        // forward checks the layout after every block in debug builds (debug_check_layout).
        let nhwc = run(&net, Pass::Eval);
        let nhwc_sample = run(&net, Pass::McSample);
        let max_diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        for (a, b) in nchw.iter().zip(&nhwc) {
            assert_eq!(a.size(), b.size());
            assert!(b.is_contiguous(), "heads come back in the usual layout");
            let scale = a.abs().max().double_value(&[]).max(1.0);
            let diff = max_diff(a, b);
            assert!(diff <= 1e-4 * scale, "differ by {diff} (scale {scale})");
        }
        // An MC sample draws its masks in memory order, so the two layouts draw other
        // masks: a sample like the NCHW one (as far from the deterministic pass), not the
        // same one.
        for (eval, (a, b)) in nhwc
            .iter()
            .zip(nchw_sample.iter().zip(&nhwc_sample))
            .take(4)
        {
            assert!(b.is_contiguous() && b.isfinite().all().int64_value(&[]) == 1);
            let (off_nchw, off_nhwc) = (max_diff(eval, a), max_diff(eval, b));
            assert!(off_nchw > 1e-3 && off_nhwc > 1e-3, "dropout was active");
            assert!(off_nhwc < 10.0 * off_nchw && off_nchw < 10.0 * off_nhwc);
        }
    }

    #[test]
    fn head_outputs_go_to_a_list_of_tensors_and_back() {
        let t = |v: f64| Tensor::from(v);
        for (semantic, depth) in [(true, true), (true, false), (false, true)] {
            let heads = HeadOutputs {
                semantic: semantic.then(|| (t(1.0), t(2.0))),
                depth: depth.then(|| (t(3.0), t(4.0))),
            };
            let list = heads.into_tensors();
            let values: Vec<f64> = list.iter().map(|x| x.double_value(&[])).collect();
            let expected: Vec<f64> = [(semantic, [1.0, 2.0]), (depth, [3.0, 4.0])]
                .into_iter()
                .filter(|(present, _)| *present)
                .flat_map(|(_, v)| v)
                .collect();
            assert_eq!(values, expected);
            let back = HeadOutputs::from_tensors(list, semantic, depth);
            assert_eq!(
                back.semantic.map(|(a, _)| a.double_value(&[])),
                semantic.then_some(1.0)
            );
            assert_eq!(
                back.depth.map(|(_, b)| b.double_value(&[])),
                depth.then_some(4.0)
            );
        }
    }

    #[test]
    fn a_block_built_in_place_equals_concatenation_layer_by_layer() {
        let _lock = torch_rng_lock();
        tch::manual_seed(4);
        let vs = nn::VarStore::new(Device::Cpu);
        let block = DenseBlock::new(vs.root(), 6, 3, 4, 0.2);
        let xs = Tensor::randn([2, 6, 8, 8], (Kind::Float, Device::Cpu));
        let _guard = tch::no_grad_guard();
        let (stack, new) = block.forward(&xs, Pass::Eval);
        let mut expected = xs.shallow_clone();
        for layer in &block.layers {
            let out = layer.forward(&expected, Pass::Eval);
            expected = Tensor::cat(&[&expected, &out], 1);
        }
        // The same values (a convolution of a strided view may round differently).
        let close = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]) < 1e-5;
        assert_eq!(stack.size(), [2, 18, 8, 8]);
        assert!(close(&stack, &expected));
        assert!(close(&new, &expected.narrow(1, 6, 12)));
        // Moments: the same buffer per mean and variance.
        let (moments, new_moments) =
            block.forward_moments(&Gaussian::deterministic(xs), Rules::ClosedForm);
        assert_eq!(moments.mean.size(), [2, 18, 8, 8]);
        assert_eq!(new_moments.var.size(), [2, 12, 8, 8]);
    }

    /// The semantic heads are drawn through their shared input: two classes with the same
    /// head weights get the same logit in every draw (no disagreement between them, as
    /// under MC dropout), though each logit alone varies.
    #[test]
    fn semantic_head_draws_keep_what_the_logits_share() {
        let _lock = torch_rng_lock();
        tch::manual_seed(3);
        let heads = Heads {
            semantic_classes: Some(3),
            depth: false,
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let net = FcDenseNet::new(&vs.root(), &small_config(), heads);
        let _guard = tch::no_grad_guard();
        let (f, _) = net.semantic_heads.as_ref().unwrap();
        f.ws.narrow(0, 1, 1).copy_(&f.ws.narrow(0, 0, 1));
        let bias = f.bs.as_ref().unwrap();
        bias.narrow(0, 1, 1).copy_(&bias.narrow(0, 0, 1));
        let xs = Tensor::randn([1, 3, 16, 24], (Kind::Float, Device::Cpu));
        let moments = net.forward_moments(&xs, Rules::ClosedForm);
        let (logits, s) = net.sample_semantic_heads(&moments.head_input, 40).unwrap();
        assert_eq!(logits.size(), [40, 3, 16, 24]);
        assert_eq!(s.size()[..2], [40, 3]);
        let class = |c: i64| logits.narrow(1, c, 1);
        let spread = class(0)
            .std_dim(0, true, true)
            .mean(Kind::Float)
            .double_value(&[]);
        assert!(spread > 1e-3, "the logits do not vary ({spread})");
        // (Apart only by the jitter that keeps the covariance factorable.)
        let apart = (class(0) - class(1))
            .std_dim(0, true, true)
            .mean(Kind::Float)
            .double_value(&[]);
        assert!(
            apart < 0.01 * spread,
            "two classes of one head drawn apart ({apart} against {spread})"
        );
        // The marginals agree with the propagated moments of the logits, pixel by pixel:
        // the means within 5 standard errors, the variances on average.
        let (marginal, _) = moments.semantic.unwrap();
        let standard_error = (marginal.var.squeeze_dim(0) / 40.0).sqrt() + 1e-6;
        let off = ((logits.mean_dim(0, false, Kind::Float) - marginal.mean.squeeze_dim(0)).abs()
            / standard_error)
            .max()
            .double_value(&[]);
        assert!(off < 5.0, "drawn means {off} standard errors off");
        let propagated = marginal
            .var
            .narrow(1, 0, 1)
            .mean(Kind::Float)
            .double_value(&[]);
        let drawn = class(0)
            .var_dim(0, true, true)
            .mean(Kind::Float)
            .double_value(&[]);
        assert!(
            (drawn - propagated).abs() < 0.25 * propagated,
            "drawn variance {drawn} against propagated {propagated}"
        );
    }
}
