//! `attnlab bench`: the numbers behind docs/benchmarks.md.
//!
//! 1. **Training step** of a preset (default: nanoGPT's CPU recipe) per attention variant:
//!    median ms per optimizer step after warm-up (forward, backward, global-norm clipping, AdamW,
//!    the loss read back; batch building excluded, as in `shared/bench/torch_reference.py`),
//!    tokens/s and peak resident memory.
//! 2. **Length scaling** of one attention layer (width 128, 4 heads, batch 1): forward+backward
//!    time and peak memory for T = 64 … 4096, softmax against each causal linear form.
//! 3. **Decoding**: per-token latency against position through the KV cache (softmax) and the
//!    recurrent state (linear), on the preset's model with a longer context.
//!
//! Peak memory is the high-water mark of live heap bytes during the measurement above what was
//! live before it, counted by [`CountingAllocator`] (the `attnlab` binary installs it).
//!
//! [`train_table`], [`scaling_table`] and [`decode_table`] run a section and lay it out as the
//! binary prints it, a line at a time.

use crate::stats::median;
use attnlab_model::mixer::{MixContext, MixerDims};
use attnlab_model::{BackendError, LmInput, MixerSpec, ModelConfigError, SequenceMixer};
use attnlab_train::RunConfig;
use attnlab_train::data_parallel::Replicas;
use attnlab_train::task::{self, TaskError};
use attnlab_train::trainer::{self, StepPhases};
use burn::module::Module;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use serde::Serialize;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

/// A global allocator that counts live heap bytes and their high-water mark, so each
/// measurement gets its own peak (the process's resident size cannot tell: freed memory stays
/// mapped and is reused). The `attnlab` binary installs it; elsewhere the counts stay zero.
pub struct CountingAllocator;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

// SAFETY: every call forwards to the system allocator unchanged; only counters are updated.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                    - layout.size();
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

impl CountingAllocator {
    /// Called once by the binary that installed it, so the bench knows its counts are real.
    pub fn mark_installed() {
        INSTALLED.store(true, Ordering::Relaxed);
    }
}

/// Starts a peak-memory measurement: the peak is reset to the live bytes now.
fn memory_start() -> usize {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    live
}

/// Peak heap MiB above the start (NaN when the counting allocator is not installed).
fn memory_peak_since(start: usize) -> f64 {
    if !INSTALLED.load(Ordering::Relaxed) {
        return f64::NAN;
    }
    PEAK.load(Ordering::Relaxed).saturating_sub(start) as f64 / (1024.0 * 1024.0)
}

/// Why a benchmark could not build or run its model.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Device(#[from] BackendError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Model(#[from] ModelConfigError),
    #[error("the {what} became {value} at bench step {step}")]
    NonFinite { what: &'static str, value: f64, step: usize },
    /// The logits could not be read back from the device (Burn's message).
    #[error("{0}")]
    Readback(String),
    #[error("--lengths: 0 is not a sequence length; give positive lengths, e.g. --lengths 64,256")]
    ZeroLength,
}

/// Refuses a sequence length of 0 for [`scaling_table`], before anything is measured.
pub fn check_lengths(lengths: &[usize]) -> Result<(), BenchError> {
    if lengths.contains(&0) { Err(BenchError::ZeroLength) } else { Ok(()) }
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainStep {
    pub variant: String,
    pub ms_median: f64,
    pub ms_min: f64,
    pub tokens_per_s: f64,
    pub peak_mib: f64,
    /// Median of each phase separately (they need not add up to the median step).
    pub phases: StepPhases,
    /// Median ms of a forward without gradients (inference) on the same batch.
    pub forward_only_ms: f64,
}

/// Times `steps` optimizer steps of `config` after `warmup` untimed ones.
pub fn train_step(
    config: &RunConfig,
    warmup: usize,
    steps: usize,
) -> Result<TrainStep, BenchError> {
    let replicas = Replicas::new(&config.device_list())?;
    let ad = replicas.first().clone();
    let device = replicas.first_plain().clone();
    let task = task::build(config, None)?;
    let mut model = config.model.init(&task.io(), config.seed, &ad)?;
    let mut optim = trainer::adamw(&config.train).init();
    let t = &config.train;
    let mem = memory_start();
    let mut times = Vec::with_capacity(steps);
    let mut phases = Vec::with_capacity(steps);
    let mut tokens = 0;
    for step in 0..warmup + steps {
        let (next, report) =
            trainer::optimizer_step(model, &mut optim, task.as_ref(), step, t, t.lr, &replicas)
                .map_err(|e| BenchError::NonFinite { what: e.what, value: e.value, step })?;
        model = next;
        tokens = report.tokens;
        if step >= warmup {
            // The phases leave out batch building, as the torch reference does.
            let p = report.phases;
            times.push(p.forward_ms + p.backward_ms + p.reduce_ms + p.clip_ms + p.update_ms);
            phases.push(p);
        }
    }
    let peak = memory_peak_since(mem);
    // Inference: the trained weights without autodiff, on one batch of the same shape.
    let inference = model.valid();
    let batch = task.train_batch(0, 0, t.batch_size, &device);
    let mut forward_times = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let start = Instant::now();
        let logits = inference.forward(batch.input.clone());
        let _: f32 = logits.sum().into_scalar();
        if i >= warmup {
            forward_times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    let ms = median(&times);
    let phase = |f: fn(&StepPhases) -> f64| median(&phases.iter().map(f).collect::<Vec<_>>());
    let phases = StepPhases {
        forward_ms: phase(|p| p.forward_ms),
        backward_ms: phase(|p| p.backward_ms),
        reduce_ms: phase(|p| p.reduce_ms),
        clip_ms: phase(|p| p.clip_ms),
        update_ms: phase(|p| p.update_ms),
    };
    Ok(TrainStep {
        variant: config.model.mixer.to_string(),
        ms_median: ms,
        ms_min: min,
        tokens_per_s: tokens as f64 / (ms / 1e3),
        peak_mib: peak,
        phases,
        forward_only_ms: median(&forward_times),
    })
}

#[derive(Clone, Debug, Serialize)]
pub struct LengthPoint {
    pub variant: String,
    pub seq_len: usize,
    pub ms_median: f64,
    pub peak_mib: f64,
}

/// Forward+backward of one causal attention layer (`[1, T, d_model]`, loss = sum of outputs).
pub fn length_point(
    spec: &MixerSpec,
    d_model: usize,
    n_heads: usize,
    seq_len: usize,
    reps: usize,
    device: &Device,
) -> LengthPoint {
    let ad = device.clone().autodiff();
    let dims =
        MixerDims { seed: 1, layer: 0, bias: true, ..MixerDims::new(d_model, n_heads, seq_len) };
    let mixer = spec.init(&dims, &ad);
    let mem = memory_start();
    let mut times = Vec::new();
    for rep in 0..reps + 1 {
        let x = Tensor::<3>::random([1, seq_len, d_model], Distribution::Normal(0.0, 1.0), &ad)
            .require_grad();
        let started = Instant::now();
        let y = mixer.forward(x.clone(), MixContext::causal()).output;
        let grads = y.sum().backward();
        // Reading a gradient waits for the whole backward pass.
        let _ = x.grad(&grads).map(|g| g.sum().into_scalar::<f32>());
        if rep > 0 {
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    LengthPoint {
        variant: spec.to_string(),
        seq_len,
        ms_median: median(&times),
        peak_mib: memory_peak_since(mem),
    }
}

/// One matrix product of the model, `[m, k] · [k, n]`, and the rate it ran at.
#[derive(Clone, Debug, Serialize)]
pub struct MatmulPoint {
    /// What the product is in the model (`qkv`, `mlp up`, `head`, ...).
    pub name: String,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub ms_median: f64,
    /// `2·m·k·n` floating-point operations over the median time.
    pub gflops: f64,
    /// The product with both gradients as training runs it (`y = x·w`, then `dx = dy·wᵀ` and
    /// `dw = xᵀ·dy` through autodiff, `dy` fixed): median ms.
    pub train_ms_median: f64,
    /// `6·m·k·n` over [`Self::train_ms_median`].
    pub train_gflops: f64,
}

/// The forward matrix products of one layer and the head of `config`'s model at its batch
/// (`m` = batch × context rows), as the model runs them (`fused::affine_map`, no autodiff).
pub fn model_matmul_shapes(
    config: &RunConfig,
) -> Result<Vec<(String, usize, usize, usize)>, BenchError> {
    let task = task::build(config, None)?;
    let model = &config.model;
    let rows = config.train.batch_size * model.max_seq_len;
    let (d, dh, h, kv) = (model.d_model, model.head_dim(), model.n_heads, model.kv_heads());
    let hidden = model.mlp_width();
    Ok(vec![
        ("q|k|v projection".to_string(), rows, d, (h + 2 * kv) * dh),
        ("output projection".to_string(), rows, h * dh, d),
        ("mlp in".to_string(), rows, d, hidden),
        ("mlp out".to_string(), rows, hidden, d),
        ("head".to_string(), rows, d, task.io().output_dim),
    ])
}

/// Times `x · w` for each `(name, m, k, n)` (median of `steps` after `warmup`), the product the
/// model's linear maps run on.
pub fn matmul_table(
    shapes: &[(String, usize, usize, usize)],
    warmup: usize,
    steps: usize,
    device: &Device,
    mut emit: impl FnMut(String),
) -> Vec<MatmulPoint> {
    emit(format!(
        "\nmatrix products of the model's linear maps (median of {steps} after {warmup} warm-up)"
    ));
    emit(format!(
        "{:<20} {:>6} {:>6} {:>6} {:>10} {:>9} {:>16} {:>16}",
        "product", "m", "k", "n", "ms", "GFLOP/s", "with grads, ms", "with grads, GF/s"
    ));
    let tracked = device.clone().autodiff();
    let mut points = Vec::new();
    for (name, m, k, n) in shapes {
        let (m, k, n) = (*m, *k, *n);
        let x = Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), device);
        let w = Tensor::<2>::random([k, n], Distribution::Normal(0.0, 1.0), device);
        let mut times = Vec::with_capacity(steps);
        for rep in 0..warmup + steps {
            let started = Instant::now();
            let y = attnlab_model::fused::affine_map(x.clone(), w.clone(), None);
            // Reading one value waits for the product on any backend.
            let _ = y.slice([0..1, 0..1]).into_scalar::<f32>();
            if rep >= warmup {
                times.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        let ms = median(&times);
        let gflops = 2.0 * (m * k * n) as f64 / (ms * 1e6);
        // The same product under autodiff: forward, then both gradients for a fixed `dy`.
        let leaf = |t: &Tensor<2>| Tensor::<2>::from_data(t.to_data(), &tracked).require_grad();
        let (xt, wt) = (leaf(&x), leaf(&w));
        let dy = Tensor::<2>::random([m, n], Distribution::Normal(0.0, 1.0), &tracked);
        let mut train_times = Vec::with_capacity(steps);
        for rep in 0..warmup + steps {
            let started = Instant::now();
            let y = attnlab_model::fused::affine_map(xt.clone(), wt.clone(), None);
            let grads = (y * dy.clone()).sum().backward();
            let _ =
                wt.grad(&grads).expect("w has a gradient").slice([0..1, 0..1]).into_scalar::<f32>();
            if rep >= warmup {
                train_times.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        let train_ms = median(&train_times);
        let train_gflops = 6.0 * (m * k * n) as f64 / (train_ms * 1e6);
        emit(format!(
            "{name:<20} {m:>6} {k:>6} {n:>6} {ms:>10.3} {gflops:>9.1} {train_ms:>16.3} {train_gflops:>16.1}"
        ));
        points.push(MatmulPoint {
            name: name.clone(),
            m,
            k,
            n,
            ms_median: ms,
            gflops,
            train_ms_median: train_ms,
            train_gflops,
        });
    }
    points
}

#[derive(Clone, Debug, Serialize)]
pub struct DecodePoint {
    pub variant: String,
    /// Position of the token (tokens already in the cache/state).
    pub position: usize,
    /// Mean latency of the tokens in a window ending at `position`.
    pub ms_per_token: f64,
}

/// Generates `tokens` tokens one at a time from an untrained model with context `tokens`,
/// recording the latency around each of `positions`.
pub fn decode(
    config: &RunConfig,
    tokens: usize,
    positions: &[usize],
) -> Result<Vec<DecodePoint>, BenchError> {
    let device = config.device.device()?;
    let mut model_config = config.model.clone();
    model_config.max_seq_len = tokens + 1;
    let task = task::build(config, None)?;
    let model = model_config.init(&task.io(), config.seed, &device)?;
    let mut state = model.empty_state();
    let mut latencies = Vec::with_capacity(tokens);
    let mut next = 0i64;
    for _ in 0..tokens {
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![next], [1, 1]), &device);
        let started = Instant::now();
        let logits = model.step(LmInput::Tokens(ids), &mut state);
        let row: Vec<f32> = logits
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .map_err(|e| BenchError::Readback(format!("{e:?}")))?;
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
        next =
            row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as i64);
    }
    Ok(positions
        .iter()
        .filter(|&&p| p >= 1 && p <= tokens)
        .map(|&p| {
            let window = &latencies[p.saturating_sub(16).max(1) - 1..p];
            DecodePoint {
                variant: config.model.mixer.to_string(),
                position: p,
                ms_per_token: window.iter().sum::<f64>() / window.len() as f64,
            }
        })
        .collect())
}

// ---------------------------------------------------------------------------
// The tables `attnlab bench` prints. Each section hands its lines to `emit` as its rows are
// measured, so a long run shows progress; the caller decides where lines go.
// ---------------------------------------------------------------------------

/// Times each config's training step: a header naming the settings, then one row per config.
pub fn train_table(
    base: &RunConfig,
    configs: &[RunConfig],
    warmup: usize,
    steps: usize,
    mut emit: impl FnMut(String),
) -> Result<Vec<TrainStep>, BenchError> {
    emit(format!(
        "\ntraining step (median of {steps} after {warmup} warm-up; batch {} x {} tokens)",
        base.train.batch_size, base.model.max_seq_len
    ));
    emit(format!(
        "{:<28} {:>10} {:>10} {:>12} {:>10}   phases (median ms): forward / backward / clip / AdamW",
        "attention", "ms/step", "min ms", "tokens/s", "peak MiB"
    ));
    let mut rows = Vec::with_capacity(configs.len());
    for c in configs {
        let r = train_step(c, warmup, steps)?;
        let p = r.phases;
        emit(format!(
            "{:<28} {:>10.2} {:>10.2} {:>12.0} {:>10.1}   {:.1} / {:.1} / {:.1} / {:.1}",
            r.variant,
            r.ms_median,
            r.ms_min,
            r.tokens_per_s,
            r.peak_mib,
            p.forward_ms,
            p.backward_ms,
            p.clip_ms,
            p.update_ms
        ));
        rows.push(r);
    }
    // Separate blocks, so the table's rows keep the layout scripts parse.
    for r in rows.iter().filter(|r| r.phases.reduce_ms > 0.0) {
        emit(format!(
            "{:<28} data parallel: {:.1} ms median summing the replicas' gradients (in ms/step)",
            r.variant, r.phases.reduce_ms
        ));
    }
    emit("forward without gradients (inference, same batch):".to_string());
    for r in &rows {
        let tokens_per_s = r.tokens_per_s * r.ms_median / r.forward_only_ms;
        emit(format!(
            "{:<28} {:>10.2} ms {:>12.0} tokens/s",
            r.variant, r.forward_only_ms, tokens_per_s
        ));
    }
    Ok(rows)
}

/// Times one attention layer per spec at each length: one row per length, `-` where the
/// recurrent form (one token per step, slow) is past `recurrent_max`.
pub fn scaling_table(
    specs: &[MixerSpec],
    d_model: usize,
    n_heads: usize,
    lengths: &[usize],
    recurrent_max: usize,
    device: &Device,
    mut emit: impl FnMut(String),
) -> Vec<LengthPoint> {
    emit(format!(
        "\none attention layer, forward + backward, batch 1, width {d_model}, {n_heads} heads (median ms | peak MiB)"
    ));
    let mut header = format!("{:<8}", "T");
    for s in specs {
        header += &format!(" {:>30}", s.to_string());
    }
    emit(header);
    let mut points = Vec::new();
    // A length of 0 has nothing to time (and `check_lengths` refuses it up front).
    for &t in lengths.iter().filter(|&&t| t > 0) {
        let mut row = format!("{t:<8}");
        for s in specs {
            if s.to_string().contains("form=recurrent") && t > recurrent_max {
                row += &format!(" {:>30}", "-");
                continue;
            }
            // Short sequences are fast and noisy: more repetitions; at least 7, because a shared
            // machine's hiccups make the median of 3 swing by half at mid lengths.
            let reps = (20 * 64 / t).clamp(7, 20);
            let p = length_point(s, d_model, n_heads, t, reps, device);
            row += &format!(" {:>30}", format!("{:.2} | {:.1}", p.ms_median, p.peak_mib));
            points.push(p);
        }
        emit(row);
    }
    for line in scaling_summary(specs, &points, SCALING_FROM) {
        emit(line);
    }
    points
}

/// The length from which the scaling summary measures growth (shorter runs are dominated by
/// fixed per-call costs).
pub const SCALING_FROM: usize = 256;

/// Growth per doubling of `T` from `from` to the longest length measured, time and memory (the
/// geometric mean over the doublings: 2 is linear, 4 quadratic), and for each spec the shortest
/// length from which it is faster than the first spec (the baseline, softmax by default) at
/// every length measured.
pub fn scaling_summary(specs: &[MixerSpec], points: &[LengthPoint], from: usize) -> Vec<String> {
    let of = |s: &MixerSpec| -> Vec<&LengthPoint> {
        let name = s.to_string();
        points.iter().filter(|p| p.variant == name && p.seq_len >= from).collect()
    };
    let mut lines = Vec::new();
    let Some(baseline) = specs.first() else { return lines };
    let base = of(baseline);
    for s in specs {
        let mine = of(s);
        let (Some(first), Some(last)) = (mine.first(), mine.last()) else { continue };
        let doublings = (last.seq_len as f64 / first.seq_len as f64).log2();
        if doublings < 1.0 {
            continue;
        }
        let per_doubling = |a: f64, b: f64| {
            if a > 0.0 && b > 0.0 {
                format!("{:.2}", (b / a).powf(1.0 / doublings))
            } else {
                "-".to_string()
            }
        };
        let faster = if s == baseline {
            String::new()
        } else {
            // The shortest length from which every measured length is faster than the baseline.
            let mut from_len = None;
            for p in mine.iter().rev() {
                match base.iter().find(|b| b.seq_len == p.seq_len) {
                    Some(b) if p.ms_median < b.ms_median => from_len = Some(p.seq_len),
                    _ => break,
                }
            }
            match from_len {
                Some(t) => format!("; faster than {baseline} from T = {t}"),
                None => format!("; not faster than {baseline} at T = {}", last.seq_len),
            }
        };
        lines.push(format!(
            "{s}: per doubling of T from {} to {}: time x{}, memory x{}{faster}",
            first.seq_len,
            last.seq_len,
            per_doubling(first.ms_median, last.ms_median),
            per_doubling(first.peak_mib, last.peak_mib)
        ));
    }
    lines
}

/// Positions at which decoding latency is reported, those up to the tokens decoded.
const DECODE_POSITIONS: [usize; 9] = [1, 16, 64, 128, 256, 512, 1024, 2048, 4096];

/// Decodes `tokens` tokens with each config: one row per config, a column per position.
pub fn decode_table(
    configs: &[RunConfig],
    tokens: usize,
    mut emit: impl FnMut(String),
) -> Result<Vec<DecodePoint>, BenchError> {
    let positions: Vec<usize> = DECODE_POSITIONS.into_iter().filter(|&p| p <= tokens).collect();
    emit(
        "\ndecoding one token at a time (ms per token, mean of the 16 tokens up to the position)"
            .into(),
    );
    let mut header = format!("{:<28}", "attention");
    for p in &positions {
        header += &format!(" {p:>8}");
    }
    emit(header);
    let mut all = Vec::new();
    for c in configs {
        let points = decode(c, tokens, &positions)?;
        let mut row = format!("{:<28}", c.model.mixer.to_string());
        for p in &points {
            row += &format!(" {:>8.3}", p.ms_per_token);
        }
        emit(row);
        all.extend(points);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_length_is_refused_with_the_fix() {
        assert!(check_lengths(&[64, 256]).is_ok() && check_lengths(&[]).is_ok());
        let err = check_lengths(&[64, 0]).unwrap_err().to_string();
        assert_eq!(
            err,
            "--lengths: 0 is not a sequence length; give positive lengths, e.g. --lengths 64,256"
        );
    }

    /// A one-layer MQAR model small enough to time in milliseconds.
    fn tiny_config() -> RunConfig {
        RunConfig::from_toml(
            "[task]\nkind = \"mqar\"\nvocab = 32\nseq_len = 16\nnum_kv_pairs = 2\n[model]\nd_model = 16\nn_heads = 2\nn_layers = 1\nmax_seq_len = 16\n[train]\nbatch_size = 4\n",
            &[],
        )
        .unwrap()
    }

    /// The matmul section times the model's own linear-map shapes (the tiny MQAR model: width
    /// 16, 2 heads of 8, MLP 4×16, vocabulary 32, batch 4 × 16 rows) and reports `2mkn / t`.
    #[test]
    fn matmul_section_times_the_models_shapes() {
        let shapes = model_matmul_shapes(&tiny_config()).unwrap();
        let dims: Vec<(usize, usize, usize)> = shapes.iter().map(|s| (s.1, s.2, s.3)).collect();
        assert_eq!(dims, [(64, 16, 48), (64, 16, 16), (64, 16, 64), (64, 64, 16), (64, 16, 32)]);
        let mut lines = Vec::new();
        let points = matmul_table(&shapes[..2], 1, 2, &Device::flex(), |l| lines.push(l));
        assert_eq!(lines.len(), 4, "{lines:?}");
        for p in &points {
            let want = 2.0 * (p.m * p.k * p.n) as f64 / (p.ms_median * 1e6);
            assert!(p.ms_median > 0.0 && (p.gflops - want).abs() < 1e-9 * want, "{p:?}");
            let want = 6.0 * (p.m * p.k * p.n) as f64 / (p.train_ms_median * 1e6);
            assert!(
                p.train_ms_median > 0.0 && (p.train_gflops - want).abs() < 1e-9 * want,
                "{p:?}"
            );
        }
    }

    /// The measurements run end to end on a tiny model and give finite, positive numbers.
    #[test]
    fn every_section_measures_something() {
        let config = tiny_config();
        let t = train_step(&config, 1, 3).unwrap();
        assert!(t.ms_median > 0.0 && t.tokens_per_s > 0.0, "{t:?}");
        let p = length_point(&"linear:elu1".parse().unwrap(), 16, 2, 32, 2, &Device::flex());
        assert!(p.ms_median > 0.0 && p.seq_len == 32);
        let d = decode(&config, 20, &[1, 10, 20, 50]).unwrap();
        assert_eq!(d.iter().map(|p| p.position).collect::<Vec<_>>(), vec![1, 10, 20]);
        assert!(d.iter().all(|p| p.ms_per_token > 0.0));
    }

    /// The scaling summary's growth factors and crossover on hand-made points: a linear arm
    /// (time and memory double) against a quadratic baseline it overtakes at T = 512.
    #[test]
    fn scaling_summary_reports_growth_and_crossover() {
        let specs: Vec<MixerSpec> =
            ["softmax", "delta:gated"].iter().map(|s| s.parse().unwrap()).collect();
        let point = |v: &str, t: usize, ms: f64, mib: f64| LengthPoint {
            variant: v.into(),
            seq_len: t,
            ms_median: ms,
            peak_mib: mib,
        };
        let mut points = Vec::new();
        for (i, t) in [128usize, 256, 512, 1024, 2048].into_iter().enumerate() {
            let quad = 4f64.powi(i as i32);
            points.push(point("softmax", t, 0.5 * quad, quad));
            points.push(point("delta:gated", t, 2f64.powi(i as i32), 2f64.powi(i as i32)));
        }
        let lines = scaling_summary(&specs, &points, 256);
        assert_eq!(
            lines[0],
            "softmax: per doubling of T from 256 to 2048: time x4.00, memory x4.00"
        );
        assert_eq!(
            lines[1],
            "delta:gated: per doubling of T from 256 to 2048: time x2.00, memory x2.00; faster than softmax from T = 512"
        );
    }

    /// The tables keep the layout the binary has always printed (bench/ladder.py parses the rows).
    #[test]
    fn tables_keep_their_layout() {
        let config = tiny_config();
        let mut lines = Vec::new();
        let rows =
            train_table(&config, std::slice::from_ref(&config), 1, 2, |l| lines.push(l)).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(lines[0], "\ntraining step (median of 2 after 1 warm-up; batch 4 x 16 tokens)");
        assert_eq!(
            lines[1],
            "attention                       ms/step     min ms     tokens/s   peak MiB   phases (median ms): forward / backward / clip / AdamW"
        );
        assert!(
            lines[2].starts_with(&format!("{:<28} ", config.model.mixer.to_string())),
            "{}",
            lines[2]
        );
        assert_eq!(lines[2].matches(" / ").count(), 3, "{}", lines[2]);

        let specs: Vec<MixerSpec> =
            ["softmax", "linear:elu1:form=recurrent"].iter().map(|s| s.parse().unwrap()).collect();
        let mut lines = Vec::new();
        let points = scaling_table(&specs, 16, 2, &[8, 32], 8, &Device::flex(), |l| lines.push(l));
        assert_eq!(points.len(), 3, "the recurrent form skipped at T = 32");
        assert_eq!(
            lines[0],
            "\none attention layer, forward + backward, batch 1, width 16, 2 heads (median ms | peak MiB)"
        );
        assert_eq!(
            lines[1],
            format!("T        {:>30} {:>30}", specs[0].to_string(), specs[1].to_string())
        );
        assert_eq!(lines[2].len(), 8 + 2 * 31);
        assert!(
            lines[3].starts_with("32       ") && lines[3].ends_with(&format!(" {:>30}", "-")),
            "{}",
            lines[3]
        );

        // No length reaches the summary's start, so it adds no line.
        assert_eq!(lines.len(), 4);

        let mut lines = Vec::new();
        let points = decode_table(std::slice::from_ref(&config), 20, |l| lines.push(l)).unwrap();
        assert_eq!(points.iter().map(|p| p.position).collect::<Vec<_>>(), vec![1, 16]);
        assert_eq!(
            lines[0],
            "\ndecoding one token at a time (ms per token, mean of the 16 tokens up to the position)"
        );
        assert_eq!(lines[1], format!("{:<28} {:>8} {:>8}", "attention", 1, 16));
        assert_eq!(lines[2].len(), 28 + 2 * 9, "{}", lines[2]);
    }
}
