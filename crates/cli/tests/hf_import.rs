//! `attnlab import --hf`, end to end: `python/hf_reference/make_fixtures.py` writes tiny random
//! checkpoints in each supported architecture's exact Hugging Face names and config.json (GQA,
//! multi-query, SwiGLU, RoPE θ and Llama 3 scaling, q/k/v biases, Qwen3's head_dim and q/k
//! norms, Mistral's sliding window, tied and untied heads, a sharded checkpoint, BF16 and F16
//! weights, GPT-2's tanh GELU) with logits and a 50-token greedy continuation computed by a
//! numpy implementation written from those architectures' definitions (and checked once
//! against transformers, python/hf_reference/README.md). The imported run must give the same
//! logits within 1e-4 and the same greedy tokens, through the KV cache; bad directories are
//! refused with one line and leave no run behind.
//!
//! Needs python3 with numpy and safetensors (`.ci/run` installs them); in CI a missing package
//! fails the test, elsewhere it prints a note and returns.

use attnlab_model::LmInput;
use burn::tensor::{Int, Tensor, TensorData};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{attnlab, root};

fn temp(name: &str) -> PathBuf {
    common::fresh_dir("hf", name)
}

/// The fixtures in `dir`, or `None` (with a note) where python3 lacks numpy or safetensors
/// outside CI.
fn fixtures(dir: &Path) -> Option<Vec<String>> {
    let has = Command::new("python3")
        .args(["-c", "import numpy, safetensors"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        assert!(std::env::var("CI").is_err(), "CI needs python3 with numpy and safetensors");
        eprintln!(
            "note: python3 with numpy and safetensors not found; skipping the HF import test"
        );
        return None;
    }
    let o = Command::new("python3")
        .arg(root().join("python/hf_reference/make_fixtures.py"))
        .args(["--out", dir.to_str().unwrap()])
        .output()
        .expect("python3 runs");
    assert!(o.status.success(), "make_fixtures: {}", String::from_utf8_lossy(&o.stderr));
    let cases = std::fs::read_to_string(dir.join("cases.json")).unwrap();
    Some(serde_json::from_str(&cases).unwrap())
}

fn import(hf: &Path, out: &Path) -> Output {
    let text = root().join("datasets/tinyshakespeare.txt");
    attnlab(&[
        "import",
        "--hf",
        hf.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
        "--context",
        "64",
    ])
}

fn ids(values: &serde_json::Value) -> Vec<i64> {
    values.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect()
}

fn tokens(ids: &[i64], device: &burn::tensor::Device) -> LmInput {
    LmInput::Tokens(
        Tensor::<1, Int>::from_data(TensorData::new(ids.to_vec(), [ids.len()]), device)
            .reshape([1, ids.len()]),
    )
}

/// The index of the largest of the last position's logits.
fn argmax_last(logits: Tensor<3>) -> i64 {
    let [_, t, v] = logits.dims();
    let row: Vec<f32> =
        logits.narrow(1, t - 1, 1).reshape([v]).into_data().try_to_vec::<f32>().unwrap();
    let best = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap();
    best.0 as i64
}

#[test]
fn imported_checkpoints_reproduce_the_reference_logits_and_greedy_tokens() {
    let dir = temp("parity");
    let Some(cases) = fixtures(&dir.join("fixtures")) else { return };
    assert_eq!(cases.len(), 6, "{cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let hf = dir.join("fixtures").join(case);
        let run = dir.join(format!("run-{case}"));
        let o = import(&hf, &run);
        assert!(o.status.success(), "{case}: {}", String::from_utf8_lossy(&o.stderr));
        let reference: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(hf.join("reference.json")).unwrap())
                .unwrap();
        let loaded = attnlab_train::runs::load_run(&run, "final", None).unwrap();
        let (model, device) = (&loaded.model, &loaded.device);

        // Logits of the whole sequence.
        let input = ids(&reference["input_ids"]);
        let logits = model.forward(tokens(&input, device));
        let [_, t, v] = logits.dims();
        let ours: Vec<f32> = logits.into_data().try_to_vec::<f32>().unwrap();
        let expected: Vec<f64> = reference["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
            .collect();
        assert_eq!((t * v, expected.len()), (ours.len(), ours.len()), "{case}: shapes");
        let diff =
            ours.iter().zip(&expected).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        eprintln!("{case}: max |logit − reference| = {diff:.2e}");
        if diff >= 1e-4 {
            failures.push(format!("{case}: logits differ by {diff:.2e}"));
        }

        // Greedy continuation through the decoding state.
        let prompt = ids(&reference["prompt"]);
        let want = ids(&reference["greedy"]);
        let mut state = model.empty_state();
        let mut next = argmax_last(model.step(tokens(&prompt, device), &mut state));
        let mut got = vec![next];
        while got.len() < want.len() {
            next = argmax_last(model.step(tokens(&[next], device), &mut state));
            got.push(next);
        }
        if got != want {
            failures.push(format!("{case}: greedy {got:?}, reference {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // `eval` scores an imported run on another text, here JSON lines, and reports perplexity.
    let jsonl = dir.join("corpus.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(root().join("datasets/tinyshakespeare.txt"))
        .unwrap()
        .split("\n\n")
        .take(400)
        .map(|p| serde_json::json!({ "text": p }).to_string())
        .collect();
    std::fs::write(&jsonl, lines.join("\n")).unwrap();
    let run = dir.join("run-llama");
    let o = attnlab(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--text",
        jsonl.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "eval --text: {}", String::from_utf8_lossy(&o.stderr));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (loss, ppl) =
        (out["metrics"]["loss"].as_f64().unwrap(), out["metrics"]["perplexity"].as_f64().unwrap());
    assert!(loss.is_finite() && (ppl - loss.exp()).abs() < 1e-6 * ppl, "{out}");
}

/// `export --format hf` is import's inverse: an imported checkpoint exported again holds the same
/// tensors under the same names (GPT-2's position table cut to the imported context), in the
/// architecture it came as, and importing that export gives the same model config.
#[test]
fn imported_checkpoints_export_back_to_the_same_tensors() {
    use attnlab_train::import::weights::read_all;
    let dir = temp("roundtrip");
    let Some(cases) = fixtures(&dir.join("fixtures")) else { return };
    for case in &cases {
        let hf = dir.join("fixtures").join(case);
        let run = dir.join(format!("run-{case}"));
        assert!(import(&hf, &run).status.success(), "{case}: import");
        let exported = dir.join(format!("hf-{case}"));
        let o = attnlab(&[
            "export",
            "--run",
            run.to_str().unwrap(),
            "--to",
            exported.to_str().unwrap(),
            "--format",
            "hf",
        ]);
        assert!(o.status.success(), "{case}: {}", String::from_utf8_lossy(&o.stderr));
        let (original, again) = (read_all(&hf).unwrap(), read_all(&exported).unwrap());
        let names =
            |m: &std::collections::BTreeMap<String, _>| m.keys().cloned().collect::<Vec<String>>();
        assert_eq!(names(&again), names(&original), "{case}: tensor names");
        for (name, t) in &original {
            let e = &again[name];
            let n = e.values.len();
            // GPT-2's learned positions: the imported context's rows.
            assert_eq!(e.values[..], t.values[..n], "{case}: {name}");
            assert!(n == t.values.len() || name == "transformer.wpe.weight", "{case}: {name} size");
        }
        let config = |d: &Path| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap()
        };
        assert_eq!(config(&exported)["architectures"], config(&hf)["architectures"], "{case}");
        let run_again = dir.join(format!("run-again-{case}"));
        assert!(import(&exported, &run_again).status.success(), "{case}: import of the export");
        let model =
            |r: &Path| attnlab_train::RunConfig::read(&r.join("config.toml")).unwrap().model;
        assert_eq!(model(&run_again), model(&run), "{case}: model config after the round trip");
    }
}

/// Copies fixture `case` to `to`, applies `edit` to it, and expects `import` to refuse it with
/// one line containing `needle`, leaving no run directory.
fn refused(fixtures: &Path, case: &str, to: &Path, edit: impl FnOnce(&Path), needle: &str) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(fixtures.join(case)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    edit(to);
    let run = to.with_extension("run");
    let o = import(to, &run);
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert!(!o.status.success(), "{needle}: import succeeded");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(!run.exists(), "{needle}: a refused import left {}", run.display());
}

#[test]
fn bad_model_directories_are_refused_with_one_line() {
    let dir = temp("refused");
    let Some(_) = fixtures(&dir.join("fixtures")) else { return };
    let f = dir.join("fixtures");
    let set = |key: &'static str, value: serde_json::Value| {
        move |d: &Path| {
            let path = d.join("config.json");
            let mut c: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            c[key] = value;
            std::fs::write(&path, c.to_string()).unwrap();
        }
    };
    refused(
        &f,
        "llama",
        &dir.join("arch"),
        set("architectures", serde_json::json!(["BertModel"])),
        "LlamaForCausalLM, MistralForCausalLM",
    );
    refused(
        &f,
        "llama",
        &dir.join("yarn"),
        set("rope_scaling", serde_json::json!({"rope_type": "yarn", "factor": 4.0})),
        "yarn",
    );
    refused(
        &f,
        "llama",
        &dir.join("act"),
        set("hidden_act", serde_json::json!("gelu")),
        "hidden_act",
    );
    refused(
        &f,
        "llama",
        &dir.join("shape"),
        set("intermediate_size", serde_json::json!(64)),
        "model.layers.0.mlp.gate_proj.weight has shape [48, 32]",
    );
    refused(
        &f,
        "llama",
        &dir.join("vocab"),
        set("vocab_size", serde_json::json!(100)),
        "256 tokens but the model's embedding has 100 rows",
    );
    refused(
        &f,
        "qwen2_sharded",
        &dir.join("shard"),
        |d| std::fs::remove_file(d.join("model-00002-of-00002.safetensors")).unwrap(),
        "model-00002-of-00002.safetensors, which is missing",
    );
    refused(
        &f,
        "llama",
        &dir.join("notok"),
        |d| std::fs::remove_file(d.join("tokenizer.json")).unwrap(),
        "no tokenizer.json",
    );
    refused(
        &f,
        "llama",
        &dir.join("nomodel"),
        |d| std::fs::remove_file(d.join("config.json")).unwrap(),
        "not a Hugging Face model directory",
    );
    // A tokenizer with more tokens than embedding rows: 300 rows' worth of ids for 256 rows.
    refused(
        &f,
        "gpt2",
        &dir.join("bigtok"),
        |d| {
            let path = d.join("tokenizer.json");
            let mut t: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let vocab = t["model"]["vocab"].as_object_mut().unwrap();
            for i in 0..44 {
                vocab.insert(format!("extra{i}"), serde_json::json!(256 + i));
            }
            std::fs::write(&path, t.to_string()).unwrap();
        },
        "300 tokens but the model's embedding has 256 rows",
    );
}
