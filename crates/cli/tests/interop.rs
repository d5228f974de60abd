//! Interop, end to end: `python/attnlab_torch` rebuilds exported models from the file alone and
//! reproduces attnlab's logits, for every spec of the registry's catalogue and read either from
//! the export's layer descriptions (format 3) or from its config alone (format 2); a
//! GPT-2-shaped `--format hf` export computes the same logits under GPT-2's own parameter names;
//! TensorBoard's reader reads a run's event file.
//!
//! The Python side needs numpy and safetensors (and `tensorboard` for its test), which
//! `.ci/run` installs. In CI a missing package fails the test; elsewhere it prints a note.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{attnlab, ok, root};

fn temp(name: &str) -> PathBuf {
    common::fresh_dir("interop", name)
}

/// `python3 -m <module> args...` with the reference package on the path.
fn python(module_and_args: &[&str]) -> Output {
    Command::new("python3")
        .arg("-m")
        .args(module_and_args)
        .env("PYTHONPATH", root().join("python"))
        .current_dir(root())
        .output()
        .expect("python3 runs")
}

/// Whether python3 can import `modules`; in CI it must.
fn python_has(modules: &str) -> bool {
    let has = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have python3 with {modules} (.ci/run installs them)"
        );
        eprintln!("note: python3 with {modules} not found; skipping the Python side of this test");
    }
    has
}

/// Trains a tiny run of `preset` with `sets`, exports it and dumps its logits; returns the run
/// directory, the export and the dump.
fn tiny_run(dir: &Path, name: &str, preset: &str, sets: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    let run = dir.join(name);
    let mut args =
        vec!["train", "--config", preset, "--out", run.to_str().unwrap(), "--quiet", "--seed", "7"];
    for s in
        ["train.steps=6", "train.eval_every=6", "train.checkpoint_every=6", "train.log_every=3"]
            .iter()
            .chain(sets)
    {
        args.extend(["--set", s]);
    }
    ok(&attnlab(&args));
    let export = dir.join(format!("{name}.safetensors"));
    ok(&attnlab(&["export", "--run", run.to_str().unwrap(), "--to", export.to_str().unwrap()]));
    let dump = dir.join(format!("{name}-logits.safetensors"));
    let e = ok(&attnlab(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--dump-logits",
        dump.to_str().unwrap(),
        "--rows",
        "3",
        "--batches",
        "1",
    ]));
    assert!(e.contains("wrote inputs and logits"), "{e}");
    (run, export, dump)
}

const MQAR: &str = "configs/mqar-smoke.toml";
const CHAR: &str = "configs/shakespeare-char-smoke.toml";
const SMALL_CHAR: &[&str] =
    &["model.d_model=32", "model.n_layers=2", "model.max_seq_len=32", "train.batch_size=8"];

/// Every spec of the registry's catalogue (`attnlab variants --json`), family by family.
fn catalogue() -> Vec<String> {
    let registry: serde_json::Value =
        serde_json::from_str(&ok(&attnlab(&["variants", "--json"]))).expect("variants --json");
    let families = registry["families"].as_array().expect("a families list");
    let specs: Vec<String> = families
        .iter()
        .flat_map(|f| f["catalogue"].as_array().expect("a catalogue per family"))
        .map(|entry| entry["spec"].as_str().expect("a catalogue spec").to_string())
        .collect();
    // A registry read as empty would pass with no cases at all.
    assert!(specs.len() >= families.len() && !families.is_empty(), "{registry}");
    specs
}

/// A file name for a case: the spec with `:`, `=` and `,` spelled `-`.
fn case_name(prefix: &str, spec: &str) -> String {
    format!("{prefix}-{}", spec.replace([':', '=', ','], "-"))
}

/// One tiny run of the parity test: a preset and its `--set` overrides.
struct Case {
    name: String,
    preset: &'static str,
    sets: Vec<String>,
}

impl Case {
    fn new(name: &str, preset: &'static str, sets: &[&str]) -> Self {
        Self { name: name.to_string(), preset, sets: sets.iter().map(|s| s.to_string()).collect() }
    }
}

#[test]
fn the_python_reference_reproduces_attnlab_logits_for_a_spread_of_mixers() {
    let dir = temp("parity");
    // (name, preset, overrides). Every catalogue spec on mqar-smoke (learned positions, so a
    // map that changes the query width, such as Based's, needs no RoPE-compatible override);
    // then options the catalogue leaves at their defaults, and the rest of the model: the
    // positions, both norms, a tied head, a hybrid stack, bidirectional and vector inputs.
    let mixer = |prefix: &str, spec: &str| {
        Case::new(&case_name(prefix, spec), MQAR, &[&format!("model.mixer={spec}")])
    };
    // Grouped-query attention, Qwen3's per-head q/k norm, heads wider than d_model / n_heads,
    // SwiGLU, RMSNorm's ε, q/k/v-only bias and RoPE's base, together.
    let llama: &[&str] = &[
        "model.n_heads=4",
        "model.positions=rope",
        "model.norm=rms",
        "model.mlp=swiglu",
        "model.mlp_hidden=40",
        "model.n_kv_heads=2",
        "model.head_dim=16",
        "model.qk_head_norm=true",
        "model.rope_theta=500000",
        "model.norm_eps=1e-6",
        "model.bias=false",
        "model.qkv_bias=true",
    ];
    let mut cases: Vec<Case> = catalogue().iter().map(|spec| mixer("catalogue", spec)).collect();
    for spec in [
        "softmax:ssmax:forget=true:sink=learned",
        "linear:taylor:feature_dim=4",
        "linear:performer:features=16",
        "linear:cosformer:norm=none",
        "decay:retnet:map=elu1:norm=sum",
        "delta:neg_eigval=true",
        "delta:kda:householders=2:conv=4",
    ] {
        cases.push(mixer("options", spec));
    }
    cases.extend([
        Case::new("char-softmax", CHAR, SMALL_CHAR),
        Case::new(
            "char-tied-rms-rope",
            CHAR,
            &[
                SMALL_CHAR,
                &[
                    "model.tie_embeddings=true",
                    "model.norm=rms",
                    "model.positions=rope",
                    "model.mixer=softmax:qk_norm",
                ],
            ]
            .concat(),
        ),
        Case::new(
            "softpick-gate-sinusoidal",
            MQAR,
            &["model.mixer=softmax:softpick:gate=output", "model.positions=sinusoidal"],
        ),
        Case::new("sigmoid-rope", MQAR, &["model.mixer=sigmoid", "model.positions=rope"]),
        Case::new("decay-mamba2-rope", MQAR, &["model.mixer=decay:mamba2", "model.positions=rope"]),
        Case::new(
            "stickbreak-no-positions",
            MQAR,
            &["model.mixer=stickbreak", "model.positions=none"],
        ),
        // Differential attention: each half rotated as its own head, λ_init per layer (3 layers).
        Case::new(
            "diff-rope-gqa",
            MQAR,
            &[
                "model.mixer=diff",
                "model.positions=rope",
                "model.n_layers=3",
                "model.n_heads=4",
                "model.n_kv_heads=2",
            ],
        ),
        // MLA with DeepSeek-V2's decoupled RoPE part (its own width), a query latent, grouped
        // key/value heads on the up-projections and Qwen3's norm on the compressed q and k; and
        // without a decoupled part, where the model's RoPE rotates the compressed q and k.
        Case::new(
            "mla-rope-dim-gqa-qk-norm",
            MQAR,
            &[
                "model.mixer=mla:rope_dim=4:q_latent=8",
                "model.positions=rope",
                "model.n_heads=4",
                "model.n_kv_heads=2",
                "model.qk_head_norm=true",
            ],
        ),
        // DeepSeek-V2's code's RMSNorm of both latents, with the decoupled part.
        Case::new(
            "mla-latent-norm",
            MQAR,
            &[
                "model.mixer=mla:rope_dim=4:q_latent=8:latent_norm=true",
                "model.positions=rope",
                "model.n_heads=4",
            ],
        ),
        Case::new(
            "mla-rope-compressed",
            MQAR,
            &["model.mixer=mla:latent=12", "model.positions=rope", "model.n_heads=4"],
        ),
        // MoBA's gate on rotated, normed queries and keys, each query head over its key/value
        // head's block means; and both ways, every other block a candidate.
        Case::new(
            "moba-rope-gqa-qk-norm",
            MQAR,
            &[
                "model.mixer=moba:block=4:topk=2",
                "model.positions=rope",
                "model.n_heads=4",
                "model.n_kv_heads=2",
                "model.qk_head_norm=true",
            ],
        ),
        Case::new(
            "moba-bidirectional",
            "configs/separation-smoke.toml",
            &["model.mixer=moba:block=4:topk=1"],
        ),
        // NSA's importance summed over the two query heads of each key/value head, on rotated,
        // normed queries and keys; blocks of 4 so MQAR's 32 positions have 8 to choose from.
        Case::new(
            "nsa-rope-gqa-qk-norm",
            MQAR,
            &[
                "model.mixer=nsa:block=4:topk=3:window=6",
                "model.positions=rope",
                "model.n_heads=4",
                "model.n_kv_heads=2",
                "model.qk_head_norm=true",
            ],
        ),
        // PaTH-FoX with a full-rank w map and a 4-wide convolution, grouped-query heads (w and
        // β per key/value head, the gate per query head) under Qwen3's q/k norm, in a RoPE
        // model whose RoPE PaTH ignores.
        Case::new(
            "path-fox-gqa-qk-norm-rope",
            MQAR,
            &[
                "model.mixer=path:fox=true:conv=4:w_rank=0",
                "model.positions=rope",
                "model.n_heads=4",
                "model.n_kv_heads=2",
                "model.qk_head_norm=true",
            ],
        ),
        Case::new("hybrid", MQAR, &["model.n_layers=2", "model.mixer=delta:gated,softmax"]),
        Case::new(
            "separation-bidirectional",
            "configs/separation-smoke.toml",
            &["model.mixer=decay:gla"],
        ),
        Case::new("icl-vectors", "configs/icl-regression-smoke.toml", &[]),
        // Production blocks (`softmax:window=8` is in the catalogue): a Llama/Qwen-shaped
        // stack, with Llama 3's RoPE scaling, GPT-2's tanh GELU, grouped-query attention in the
        // linear-type families, and alternating window and global layers.
        Case::new("char-llama", CHAR, &[SMALL_CHAR, llama].concat()),
        Case::new(
            "char-llama-rope-scaling",
            CHAR,
            &[
                SMALL_CHAR,
                llama,
                &["model.rope_scaling={type=\"llama3\",factor=8.0,low_freq_factor=1.0,high_freq_factor=4.0,original_max_position_embeddings=8}"],
            ]
            .concat(),
        ),
        Case::new("char-gelu-tanh", CHAR, &[SMALL_CHAR, &["model.mlp=gelu_tanh"]].concat()),
        Case::new(
            "gqa-delta-gated-conv",
            MQAR,
            &["model.mixer=delta:gated:conv=4", "model.n_heads=4", "model.n_kv_heads=2"],
        ),
        // DeltaProduct's further keys and values: repeated to the query heads, through Qwen3's
        // key norm and RoPE as the first, the convolution over all (1 + 2N) parts; and both
        // ways, the reversed pass keeping each token's sub-steps in order.
        Case::new(
            "gqa-deltaproduct-rope-qk-norm-conv",
            MQAR,
            &[
                "model.mixer=delta:gated:householders=3:conv=4",
                "model.positions=rope",
                "model.n_heads=4",
                "model.n_kv_heads=2",
                "model.qk_head_norm=true",
            ],
        ),
        // RWKV-7 with two heads, its own LoRA ranks and the chunked form (4 chunks), both ways
        // (the whole layer over the reversed sequence, its token shift reading the next token);
        // a larger step so the zero-initialised output projection and LoRA maps carry the
        // layer after 6 steps.
        Case::new(
            "rwkv7-chunked-bidirectional",
            "configs/separation-smoke.toml",
            &[
                "model.mixer=rwkv7:decay_rank=4:a_rank=3:gate_rank=8:form=chunked:chunk=8",
                "model.n_heads=2",
                "train.lr=3e-2",
            ],
        ),
        Case::new(
            "deltaproduct-bidirectional",
            "configs/separation-smoke.toml",
            &["model.mixer=delta:householders=2:neg_eigval=true"],
        ),
        // KDA's per-key-channel gate (`dt` with heads·d_k columns, head-major) under
        // grouped-query heads, RoPE and the convolution; and both ways.
        Case::new(
            "gqa-kda-rope-conv",
            MQAR,
            &[
                "model.mixer=delta:kda:conv=4",
                "model.positions=rope",
                "model.n_heads=4",
                "model.n_kv_heads=2",
            ],
        ),
        Case::new(
            "kda-bidirectional",
            "configs/separation-smoke.toml",
            &["model.mixer=delta:kda:neg_eigval=true"],
        ),
        Case::new(
            "gqa-decay-gla",
            MQAR,
            &["model.mixer=decay:gla", "model.n_heads=4", "model.n_kv_heads=2"],
        ),
        Case::new(
            "gqa-linear-elu1",
            MQAR,
            &["model.mixer=linear:elu1", "model.n_heads=4", "model.n_kv_heads=2"],
        ),
        Case::new(
            "hybrid-window",
            MQAR,
            &["model.n_layers=2", "model.mixer=softmax:window=4,softmax"],
        ),
        // Canon layers before the mixer and the MLP (a char LM has an MLP; MQAR's blocks none),
        // with a kernel other than the default, around a recurrent mixer.
        Case::new(
            "char-canon-ac-delta-gated",
            CHAR,
            &[SMALL_CHAR, &["model.canon=ac", "model.canon_kernel=3", "model.mixer=delta:gated"]]
                .concat(),
        ),
        Case::new("mqar-canon-a", MQAR, &["model.canon=a"]),
    ]);

    let mut dumps = Vec::new();
    for case in &cases {
        let sets: Vec<&str> = case.sets.iter().map(String::as_str).collect();
        let (_, export, dump) = tiny_run(&dir, &case.name, case.preset, &sets);
        dumps.push((&case.name, export, dump));
    }
    if !python_has("numpy, safetensors") {
        return;
    }
    let mut failures = Vec::new();
    for (name, export, dump) in &dumps {
        let o = python(&[
            "attnlab_torch.parity",
            export.to_str().unwrap(),
            dump.to_str().unwrap(),
            "--tol",
            "1e-4",
        ]);
        let text =
            format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        eprintln!("{name}: {}", text.trim());
        if !o.status.success() {
            failures.push(format!("{name}: {}", text.trim()));
        }
    }
    // The same exports rewritten as format 2 (no attnlab_mixers: the layers are read from the
    // config's spec strings) give exactly the logits of their descriptions.
    let mut format2 = Command::new("python3");
    format2.arg(root().join("python/tests/_format2.py")).current_dir(root());
    for (_, export, dump) in &dumps {
        format2.args([export, dump]);
    }
    let o = format2.output().expect("python3 runs");
    let text =
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    eprintln!("{}", text.trim());
    if !o.status.success() {
        failures.push(format!("format 2:\n{}", text.trim()));
    }
    assert!(failures.is_empty(), "python reference disagrees:\n{}", failures.join("\n"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_python_reference_packages_unit_tests_pass() {
    if !python_has("numpy, safetensors") {
        return;
    }
    let o = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "tests"])
        .current_dir(root().join("python"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("\nOK"), "{err}");
}

#[test]
fn a_gpt2_stack_exports_to_hugging_face_names_with_the_same_logits() {
    let dir = temp("hf");
    // A plain GPT-2, and one without biases or MLP and with a tied head (zero-filled in GPT-2's layout).
    for (name, sets) in [
        ("gpt2", SMALL_CHAR.to_vec()),
        (
            "gpt2-bare",
            [SMALL_CHAR, &["model.bias=false", "model.mlp_ratio=0", "model.tie_embeddings=true"]]
                .concat(),
        ),
    ] {
        let (run, _, dump) = tiny_run(&dir, name, CHAR, &sets);
        let hf = dir.join(format!("{name}-hf"));
        let x = ok(&attnlab(&[
            "export",
            "--run",
            run.to_str().unwrap(),
            "--to",
            hf.to_str().unwrap(),
            "--format",
            "hf",
        ]));
        assert!(x.contains("Hugging Face GPT2LMHeadModel"), "{x}");
        for f in [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "attnlab.json",
        ] {
            assert!(hf.join(f).is_file(), "{name}: {f} missing");
        }
        if python_has("numpy, safetensors") {
            let o = python(&[
                "attnlab_torch.hf_gpt2",
                hf.to_str().unwrap(),
                dump.to_str().unwrap(),
                "--tol",
                "1e-4",
            ]);
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success() && text.contains(" ok"),
                "{name}: {text}{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    // Another stack gets the attnlab export and a README that says why, and no config.json.
    let (run, _, _) = tiny_run(&dir, "linear", MQAR, &["model.mixer=linear:elu1"]);
    let hf = dir.join("linear-hf");
    ok(&attnlab(&[
        "export",
        "--run",
        run.to_str().unwrap(),
        "--to",
        hf.to_str().unwrap(),
        "--format",
        "hf",
    ]));
    assert!(!hf.join("config.json").exists() && hf.join("attnlab.safetensors").is_file());
    assert!(std::fs::read_to_string(hf.join("README.md")).unwrap().contains("attnlab_torch"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn tensorboard_reads_every_scalar_of_a_run() {
    let dir = temp("tensorboard");
    let (run, _, _) = tiny_run(&dir, "char", CHAR, SMALL_CHAR);
    assert!(run.join("tensorboard/events.out.tfevents.0.attnlab").is_file());
    // eval --json is one JSON object with the metrics (the same run, read by a program).
    let json: serde_json::Value =
        serde_json::from_str(&ok(&attnlab(&["eval", "--run", run.to_str().unwrap(), "--json"])))
            .unwrap();
    assert!(
        json["metrics"]["loss"].as_f64().is_some_and(f64::is_finite) && json["task"] == "char_lm",
        "{json}"
    );
    if !python_has("tensorboard") {
        return;
    }
    let script = "import sys, json\n\
                  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
                  ea = EventAccumulator(sys.argv[1]); ea.Reload()\n\
                  print(json.dumps({t: [[e.step, e.value] for e in ea.Scalars(t)] for t in ea.Tags()['scalars']}))";
    let o = Command::new("python3")
        .args(["-c", script, run.join("tensorboard").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tb: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Every number of metrics.jsonl, at its step, to f32 precision.
    let mut checked = 0;
    for line in std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let step = v["step"].as_u64().unwrap();
        let mut expect = Vec::new();
        if let Some(eval) = v["eval"].as_object() {
            expect.extend(eval.iter().map(|(k, x)| (format!("eval/{k}"), x.as_f64().unwrap())));
            for (i, x) in v["attention_entropy"].as_array().unwrap().iter().enumerate() {
                expect.push((format!("attention_entropy/layer{i}"), x.as_f64().unwrap()));
            }
        } else {
            for k in ["loss", "lr", "grad_norm", "tokens_per_s"] {
                expect.push((format!("train/{k}"), v[k].as_f64().unwrap()));
            }
        }
        for (tag, x) in expect {
            let points = tb[&tag]
                .as_array()
                .unwrap_or_else(|| panic!("{tag} missing from TensorBoard: {tb}"));
            let got = points
                .iter()
                .find(|p| p[0].as_u64() == Some(step))
                .unwrap_or_else(|| panic!("{tag} has no step {step}"))[1]
                .as_f64()
                .unwrap();
            assert!((got - x).abs() <= 1e-6 * x.abs().max(1.0), "{tag}@{step}: {got} vs {x}");
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked}");
    std::fs::remove_dir_all(dir).ok();
}

/// `attnlab_torch.generate` writes what `attnlab sample` writes, greedy and seeded (with top-k
/// and top-p), past the context length (where both restart their window).
#[test]
fn the_python_reference_samples_what_attnlab_samples() {
    let dir = temp("sample");
    let (run, export, _) = tiny_run(&dir, "char", CHAR, SMALL_CHAR);
    if !python_has("numpy, safetensors") {
        return;
    }
    let script = "import sys, attnlab_torch as a\n\
                  m = a.load_numpy(sys.argv[1]); v = m.vocabulary\n\
                  ids = [v.index(c) for c in sys.argv[2]]\n\
                  out = a.generate(m, ids, int(sys.argv[3]), temperature=float(sys.argv[4]), top_k=int(sys.argv[5]), top_p=float(sys.argv[6]), seed=int(sys.argv[7]))\n\
                  sys.stdout.write(sys.argv[2] + ''.join(v[i] for i in out) + '\\n')";
    for (temperature, top_k, top_p, seed) in
        [("0", "0", "1", "1"), ("0.8", "0", "1", "7"), ("1", "10", "0.9", "1337")]
    {
        let rust = ok(&attnlab(&[
            "sample",
            "--run",
            run.to_str().unwrap(),
            "--prompt",
            "ROMEO:",
            "--tokens",
            "45",
            "--temperature",
            temperature,
            "--top-k",
            top_k,
            "--top-p",
            top_p,
            "--seed",
            seed,
        ]));
        let o = Command::new("python3")
            .args([
                "-c",
                script,
                export.to_str().unwrap(),
                "ROMEO:",
                "45",
                temperature,
                top_k,
                top_p,
                seed,
            ])
            .env("PYTHONPATH", root().join("python"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            rust,
            "temperature {temperature}, top-k {top_k}, top-p {top_p}, seed {seed}"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}
