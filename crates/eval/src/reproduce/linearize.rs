//! `attnlab reproduce linearize`: the linearising recipe (LoLCATs, Zhang et al. 2024, arXiv
//! 2410.10254; Liger; Mamba-in-the-Llama) on a softmax teacher, for two target families (a
//! feature map, `linear:taylor` as in Based, and Gated DeltaNet, `delta:gated:conv=4`), each in
//! five arms at equal steps: the control (swap + cross-entropy), transfer only (stage 1, then
//! cross-entropy), transfer + distillation, transfer + distillation + LoRA, and the keep:K hybrid
//! (K = ¼ of the layers kept as softmax).
//!
//! The published directions, stated as checks: stage 1 lowers every swapped layer's output
//! error by a large factor; transfer + distillation closes most of the control's gap to the
//! teacher; keeping softmax layers recovers recall the all-linear student loses.
//!
//! Teacher: `smoke` and `full` train a Llama-shaped character LM (RoPE, RMSNorm, SwiGLU, no
//! biases) on Tiny Shakespeare interleaved with recall drills (passkeys and key-value lists in
//! the probes' format, from another random stream than the probes): a toy model learns no
//! in-context recall from Shakespeare alone, and a recall loss needs recall to lose. `paper`
//! imports a local Hugging Face model directory (`--hf`, 135M-1B Llama/Qwen; `--text` the
//! corpus) and runs the arms at LoLCATs-like step counts, for a GPU (`--device cuda`).

use super::harness::{Check, Outcome, ReproduceError, Size};
use crate::compare::LocalExecutor;
use crate::plots::{Series, line_chart};
use crate::report::{self, Document, Plot, Section, Table, fmt};
use attnlab_model::MixerSpec;
use attnlab_train::linearize::{LayerChoice, LinearizeOptions, LinearizeResult, linearize};
use attnlab_train::{RunConfig, RunDir, TaskConfig, Verbosity};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::path::{Path, PathBuf};

/// The two target families: a feature map and a gated delta rule.
const FAMILIES: [(&str, &str); 2] =
    [("Taylor feature map", "linear:taylor"), ("Gated DeltaNet", "delta:gated:conv=4")];

/// The arms: name, `--alpha`, `--lora`, keep a quarter of the layers, trains the control.
const ARMS: [(&str, f64, usize, bool, bool); 4] = [
    ("transfer only", 0.0, 0, false, false),
    ("transfer + KD", 1.0, 0, false, true),
    ("transfer + KD + LoRA", 1.0, 8, false, false),
    ("keep:K hybrid", 1.0, 0, true, false),
];

/// Where a reproduction's teacher comes from, besides its size.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// `paper`: the Hugging Face model directory to import.
    pub hf: Option<PathBuf>,
    /// `paper`: the text to score and fine-tune on.
    pub text: Option<PathBuf>,
}

struct Sizes {
    width: usize,
    layers: usize,
    context: usize,
    teacher_steps: usize,
    batch: usize,
    transfer: usize,
    recover: usize,
    eval_every: usize,
    probes: usize,
}

fn sizes(size: Size) -> Sizes {
    match size {
        Size::Smoke => Sizes {
            width: 32,
            layers: 4,
            context: 64,
            teacher_steps: 300,
            batch: 8,
            transfer: 20,
            recover: 20,
            eval_every: 10,
            probes: 8,
        },
        Size::Full => Sizes {
            width: 128,
            layers: 4,
            context: 128,
            teacher_steps: 6000,
            batch: 16,
            transfer: 400,
            recover: 400,
            eval_every: 50,
            probes: 64,
        },
        // For the imported model: its own shape; context and steps as LoLCATs' order of
        // magnitude at batch 8.
        Size::Paper => Sizes {
            width: 0,
            layers: 0,
            context: 1024,
            teacher_steps: 0,
            batch: 8,
            transfer: 1000,
            recover: 1000,
            eval_every: 100,
            probes: 64,
        },
    }
}

pub fn linearize_recipe(
    size: Size,
    out: &Path,
    exec: &LocalExecutor,
    inputs: &Inputs,
) -> Result<Outcome, ReproduceError> {
    let s = sizes(size);
    let teacher_dir = out.join("teacher");
    if exec.plan_only {
        return Ok(plan(size, &s, inputs, exec));
    }
    let teacher_config = match size {
        Size::Paper => import_teacher(inputs, &teacher_dir, &s)?,
        _ => train_teacher(&s, out, &teacher_dir, exec)?,
    };
    let layers = teacher_config.model.n_layers;
    let keep = (layers / 4).max(1);
    let mut results: Vec<(&str, &str, LinearizeResult)> = Vec::new();
    for (family, spec) in FAMILIES {
        for (arm, alpha, lora, hybrid, control) in ARMS {
            let dir = out.join(slug(spec)).join(slug(arm));
            if !exec.quiet {
                println!("linearize {spec}, {arm} -> {}", dir.display());
            }
            let options = LinearizeOptions {
                run: teacher_dir.clone(),
                checkpoint: "best".into(),
                to: spec
                    .parse::<MixerSpec>()
                    .map_err(|e| ReproduceError::Linearize(e.to_string()))?,
                layers: if hybrid { LayerChoice::KeepWorst(keep) } else { LayerChoice::All },
                transfer_steps: s.transfer,
                recover_steps: s.recover,
                transfer_lr: 1e-3,
                transfer_own_only: false,
                recover_lr: None,
                alpha,
                tau: 2.0,
                lora_rank: lora,
                eval_every: s.eval_every,
                patience: 0,
                control,
                probe_examples: s.probes,
                out: dir,
                quiet: exec.quiet,
            };
            let r = linearize(&options, &crate::linearize::render)
                .map_err(|e| ReproduceError::Linearize(format!("{spec}, {arm}: {e}")))?;
            results.push((family, arm, r));
        }
    }
    let outcome = judge(&results, keep);
    write(size, out, &teacher_config, &results, &outcome, &s)?;
    Ok(outcome)
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// `--plan`: what would run; checks unmeasured.
fn plan(size: Size, s: &Sizes, inputs: &Inputs, exec: &LocalExecutor) -> Outcome {
    let teacher = match size {
        Size::Paper => format!(
            "teacher: attnlab import --hf {} --text {} --context {}",
            inputs.hf.as_ref().map_or("<DIR>".into(), |p| p.display().to_string()),
            inputs.text.as_ref().map_or("<FILE>".into(), |p| p.display().to_string()),
            s.context
        ),
        _ => format!(
            "teacher: {}-layer width-{} RoPE/RMSNorm/SwiGLU char LM, context {}, {} steps of batch {} on Tiny Shakespeare with recall drills",
            s.layers, s.width, s.context, s.teacher_steps, s.batch
        ),
    };
    println!("{teacher}");
    let per_arm = s.transfer + s.recover;
    let mut steps = s.teacher_steps;
    for (_, spec) in FAMILIES {
        for (arm, _, lora, _, control) in ARMS {
            let extra = if control { format!(" + control {per_arm}") } else { String::new() };
            println!(
                "linearize {spec}, {arm}: {} transfer + {} recovery steps{extra}{}",
                s.transfer,
                s.recover,
                if lora > 0 { format!(", LoRA rank {lora}") } else { String::new() },
            );
            steps += per_arm + if control { per_arm } else { 0 };
        }
    }
    let runs = 1 + FAMILIES.len() * ARMS.len();
    let (r, total) = exec.planned.get();
    exec.planned.set((r + runs, total + steps));
    let checks = FAMILIES
        .iter()
        .flat_map(|(family, _)| claims(family).into_iter())
        .map(|claim| Check::new(claim, false, "planned, not run"))
        .collect();
    Outcome { checks, summary: Table::new("summary", vec!["planned".into()], Vec::new()) }
}

/// The three claims per family, in the order [`judge`] checks them.
fn claims(family: &str) -> [String; 3] {
    [
        format!(
            "{family}: stage 1 lowers every swapped layer's output error by at least x{MIN_REDUCTION}"
        ),
        format!(
            "{family}: transfer + KD closes at least half of the control's loss gap to the teacher at equal steps"
        ),
        format!(
            "{family}: keeping a quarter of the layers as softmax recovers at least half of the recall (at the training context) the all-linear student loses (a loss of at least {MARKED_RECALL_LOSS})"
        ),
    ]
}

const MIN_REDUCTION: f64 = 2.0;
const MARKED_RECALL_LOSS: f64 = 0.1;

/// Mean recall-probe accuracy of (teacher, student) at the training context (past it, a RoPE
/// softmax teacher extrapolates poorly itself: reported, not checked); 0 without probes.
fn recall(r: &LinearizeResult) -> (f64, f64) {
    crate::linearize::recall_at(r, 1).unwrap_or((0.0, 0.0))
}

fn judge(results: &[(&str, &str, LinearizeResult)], keep: usize) -> Outcome {
    let find = |family: &str, arm: &str| {
        results.iter().find(|(f, a, _)| *f == family && *a == arm).map(|(_, _, r)| r)
    };
    let mut checks = Vec::new();
    for (family, _) in FAMILIES {
        let [c1, c2, c3] = claims(family);
        let kd = find(family, "transfer + KD").expect("every arm ran");
        let reduction = kd.smallest_reduction();
        checks.push(Check::new(
            c1,
            reduction >= MIN_REDUCTION,
            format!("smallest reduction x{reduction:.1}"),
        ));
        let control = kd.control_loss.unwrap_or(f64::NAN);
        let gap = control - kd.teacher_loss;
        let closed = (control - kd.student_loss) / gap;
        checks.push(Check::new(
            c2,
            gap > 0.0 && closed >= 0.5,
            format!(
                "teacher {:.4}, control {control:.4}, transfer + KD {:.4}: {:.0}% closed",
                kd.teacher_loss,
                kd.student_loss,
                100.0 * closed
            ),
        ));
        let hybrid = find(family, "keep:K hybrid").expect("every arm ran");
        let ((teacher, linear), (_, kept)) = (recall(kd), recall(hybrid));
        let lost = teacher - linear;
        let marked = lost >= MARKED_RECALL_LOSS;
        let evidence = format!(
            "mean probe accuracy: teacher {teacher:.3}, all linear {linear:.3}, keep:{keep} {kept:.3}{}",
            if marked { String::new() } else { "; no marked recall loss to recover".into() }
        );
        checks.push(Check::new(c3, marked && kept - linear >= 0.5 * lost, evidence));
    }
    let summary = summary_table(results);
    Outcome { checks, summary }
}

fn summary_table(results: &[(&str, &str, LinearizeResult)]) -> Table {
    let header: Vec<String> = [
        "family",
        "arm",
        "held-out loss",
        "control's gap closed",
        "recall 1x",
        "recall 2x",
        "recall 4x",
        "stage-1 MSE reduction",
        "state at 32k tokens",
    ]
    .map(String::from)
    .to_vec();
    let recall_at = |r: &LinearizeResult, model: usize, m: usize| {
        let v: Vec<f64> = r
            .probes
            .iter()
            .filter(|p| p.multiple == m)
            .filter_map(|p| p.accuracy.get(model).copied().flatten())
            .collect();
        if v.is_empty() { "n/a".to_string() } else { fmt(v.iter().sum::<f64>() / v.len() as f64) }
    };
    let mib = |b: usize| format!("{:.2} MiB", b as f64 / (1024.0 * 1024.0));
    let mut rows = Vec::new();
    if let Some((_, _, r)) = results.first() {
        rows.push(vec![
            "teacher".into(),
            r.teacher_spec.clone(),
            fmt(r.teacher_loss),
            String::new(),
            recall_at(r, 0, 1),
            recall_at(r, 0, 2),
            recall_at(r, 0, 4),
            String::new(),
            mib(r.state_bytes_32k.0),
        ]);
    }
    for (family, _) in FAMILIES {
        let Some((_, _, kd)) =
            results.iter().find(|(f, a, _)| *f == family && *a == "transfer + KD")
        else {
            continue;
        };
        let control = kd.control_loss.unwrap_or(f64::NAN);
        let gap = control - kd.teacher_loss;
        rows.push(vec![
            family.into(),
            "control (swap + CE)".into(),
            fmt(control),
            "0%".into(),
            recall_at(kd, 2, 1),
            recall_at(kd, 2, 2),
            recall_at(kd, 2, 4),
            String::new(),
            mib(kd.state_bytes_32k.1),
        ]);
        for (f, arm, r) in results.iter().filter(|(f, _, _)| *f == family) {
            let reduction = r.smallest_reduction();
            rows.push(vec![
                f.to_string(),
                arm.to_string(),
                fmt(r.student_loss),
                format!("{:.0}%", 100.0 * (control - r.student_loss) / gap),
                recall_at(r, 1, 1),
                recall_at(r, 1, 2),
                recall_at(r, 1, 4),
                format!("x{reduction:.1}"),
                mib(r.state_bytes_32k.1),
            ]);
        }
    }
    Table::new("summary", header, rows)
}

fn write(
    size: Size,
    out: &Path,
    teacher: &RunConfig,
    results: &[(&str, &str, LinearizeResult)],
    outcome: &Outcome,
    s: &Sizes,
) -> Result<(), ReproduceError> {
    let m = &teacher.model;
    let intro = format!(
        "Teacher: {} layers, width {}, {} heads ({}), context {} tokens. Each arm: {} steps of attention transfer (MSE to the teacher's attention output, lr 1e-3), then {} steps of recovery at the teacher's learning rate, evaluated every {} steps and kept at its best evaluation; the control trains the same swap with cross-entropy only for both stages' steps on the same batches. Recall: the mean teacher-forced answer accuracy of the passkey and key-value probes at 1×, 2× and 4× the context ({} of each). keep:K keeps {} of {} layers as softmax, chosen by their stage-1 error. Size `{}`.",
        m.n_layers,
        m.d_model,
        m.n_heads,
        m.mixer,
        s.context,
        s.transfer,
        s.recover,
        s.eval_every,
        s.probes,
        (m.n_layers / 4).max(1),
        m.n_layers,
        size.name()
    );
    let checks: Vec<String> = outcome.checks.iter().map(|c| c.line()).collect();
    let mut sections = vec![
        Section::new("Teacher vs students").table(outcome.summary.clone()),
        Section::new("Checks").bullets(checks),
    ];
    for (family, arm, r) in results {
        sections.push(
            Section::new(format!("{family}, {arm}")).text(crate::linearize::decision(r)).text(
                format!(
                    "Full report: `{}/report.md`.",
                    r.student_dir.parent().unwrap_or(out).display()
                ),
            ),
        );
    }
    let plots = results
        .iter()
        .filter(|(_, arm, _)| *arm == "transfer + KD")
        .map(|(family, _, r)| Plot {
            stem: format!("transfer-{}", slug(family)),
            title: format!("{family}: stage-1 error per layer"),
            svg: crate::linearize::transfer_chart(r),
        })
        .chain(std::iter::once(recovery_plot(results)))
        .collect();
    let doc = Document {
        title: "attnlab reproduce linearize: attention transfer + distillation vs the control"
            .into(),
        decision: None,
        intro,
        sections,
        plots,
    };
    let json = serde_json::to_string_pretty(
        &results
            .iter()
            .map(|(f, a, r)| serde_json::json!({"family": f, "arm": a, "result": r}))
            .collect::<Vec<_>>(),
    )
    .map_err(ReproduceError::Json)?;
    report::write_document(&doc, &json, out)?;
    Ok(())
}

/// Held-out loss at each evaluation of stage 2 and the control, per family.
fn recovery_plot(results: &[(&str, &str, LinearizeResult)]) -> Plot {
    let mut series = Vec::new();
    for (family, arm, r) in results {
        let offset = r.transfer_steps as f64;
        let points = r.recover_evals.iter().map(|&(s, l)| (offset + s as f64, l)).collect();
        series.push(Series::new(format!("{family}: {arm}"), points));
        if r.control_loss.is_some() {
            let points = r.control_evals.iter().map(|&(s, l)| (s as f64, l)).collect();
            series.push(Series::new(format!("{family}: control"), points));
        }
    }
    let title = "Held-out loss during recovery (after stage 1's steps) and the control";
    Plot {
        stem: "recovery".into(),
        title: title.into(),
        svg: line_chart(title, "step (stage 1 + stage 2)", "held-out loss", &series, false),
    }
}

/// The smoke/full teacher: trains it into `dir` on Tiny Shakespeare with recall drills.
fn train_teacher(
    s: &Sizes,
    out: &Path,
    dir: &Path,
    exec: &LocalExecutor,
) -> Result<RunConfig, ReproduceError> {
    let mut config = RunConfig::read(Path::new("configs/shakespeare-char-smoke.toml"))?;
    let TaskConfig::CharLm(text) = &mut config.task else {
        return Err(ReproduceError::NotTaskPreset {
            preset: "configs/shakespeare-char-smoke.toml".into(),
            task: "a char_lm",
        });
    };
    let shakespeare = std::fs::read_to_string(&text.path)
        .map_err(|e| ReproduceError::Linearize(format!("{}: {e}", text.path.display())))?;
    let corpus = out.join("corpus.txt");
    std::fs::write(&corpus, with_recall_drills(&shakespeare, config.seed))
        .map_err(|e| ReproduceError::Linearize(format!("{}: {e}", corpus.display())))?;
    text.path = corpus.canonicalize().unwrap_or(corpus);
    let m = &mut config.model;
    m.d_model = s.width;
    m.n_layers = s.layers;
    m.n_heads = (s.width / 32).max(2);
    m.max_seq_len = s.context;
    m.positions = attnlab_model::position::PositionKind::Rope;
    m.norm = attnlab_model::block::NormKind::Rms;
    m.mlp = attnlab_model::block::MlpKind::Swiglu;
    m.mlp_hidden = 8 * s.width / 3 / 8 * 8;
    m.bias = false;
    let t = &mut config.train;
    t.steps = s.teacher_steps;
    t.batch_size = s.batch;
    t.warmup_steps = s.teacher_steps / 10;
    t.eval_every = (s.teacher_steps / 5).max(1);
    t.checkpoint_every = t.eval_every;
    exec.place(&mut config);
    if !exec.quiet {
        println!("teacher: {} steps -> {}", s.teacher_steps, dir.display());
    }
    let run = RunDir::create(dir).map_err(|e| ReproduceError::Linearize(e.to_string()))?;
    attnlab_train::train(&config, &run, false, Verbosity::Quiet)
        .map_err(|e| ReproduceError::Linearize(format!("the teacher: {e}")))?;
    Ok(config)
}

/// The paper teacher: a Hugging Face model directory imported.
fn import_teacher(inputs: &Inputs, dir: &Path, s: &Sizes) -> Result<RunConfig, ReproduceError> {
    let (Some(hf), Some(text)) = (&inputs.hf, &inputs.text) else {
        return Err(ReproduceError::Linearize(
            "--size paper imports the teacher: give --hf DIR (a Llama/Qwen/Mistral/GPT-2 directory) and --text FILE".into(),
        ));
    };
    let report = attnlab_train::import::import_hf(&attnlab_train::import::ImportOptions {
        hf_dir: hf.clone(),
        out: dir.to_path_buf(),
        text: text.clone(),
        context: Some(s.context),
    })
    .map_err(|e| ReproduceError::Linearize(e.to_string()))?;
    Ok(report.config)
}

/// Tiny Shakespeare with a recall drill after every 150 characters (a passkey or a list of 3 to
/// 10 key-value pairs in the probes' wording, lowercase, from the seed's "drills" stream): about
/// half the characters, and one in ten of them an answer to recall.
pub fn with_recall_drills(text: &str, seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(attnlab_train::seed::derive(seed, "drills", 0));
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() * 2);
    let letter = |rng: &mut StdRng| (b'a' + rng.random_range(0..26u8)) as char;
    let digit = |rng: &mut StdRng| (b'0' + rng.random_range(0..10u8)) as char;
    let filler =
        " the grass is green. the sky is blue. the sun is warm. here we go. there and back again.";
    for (i, chunk) in chars.chunks(150).enumerate() {
        out.extend(chunk);
        if i % 2 == 0 {
            let key: String = (0..4).map(|_| digit(&mut rng)).collect();
            let cut = rng.random_range(0..filler.len());
            out.push_str(&format!(
                "\nthe key is {key}. remember it.{} what is the key? the key is {key}.\n",
                &filler[..cut]
            ));
        } else {
            let n = rng.random_range(3..=10);
            let mut pairs: Vec<(String, char)> = Vec::new();
            while pairs.len() < n {
                let k: String = [letter(&mut rng), letter(&mut rng)].iter().collect();
                if !pairs.iter().any(|p| p.0 == k) {
                    pairs.push((k, digit(&mut rng)));
                }
            }
            let stated: Vec<String> = pairs.iter().map(|(k, v)| format!(" {k} {v},")).collect();
            for i in (1..pairs.len()).rev() {
                pairs.swap(i, rng.random_range(0..=i));
            }
            let recalled: Vec<String> = pairs.iter().map(|(k, v)| format!(" {k} {v},")).collect();
            out.push_str(&format!("\n{} recall:{}\n", stated.concat(), recalled.concat()));
        }
    }
    out
}
