//! The report of `attnlab linearize` (the recipe is `attnlab_train::linearize`): the decision
//! first, then held-out loss of teacher, student and control, recall probes, loss by position,
//! decoding cost, and each layer's transfer error (also drawn, per step, in `transfer.svg`).

use crate::plots::{Series, line_chart};
use attnlab_train::linearize::LinearizeResult;

/// The one-line decision: what the swap costs against the teacher (held-out loss, and recall
/// at the training context), and whether the recipe beat the control (swap + cross-entropy for
/// the same steps).
pub fn decision(r: &LinearizeResult) -> String {
    let cost = r.student_loss - r.teacher_loss;
    let verdict = match r.control_loss {
        None => "no control was trained".to_string(),
        Some(control) if r.student_loss < control => {
            let control_gap = control - r.teacher_loss;
            if control_gap > 0.0 {
                format!(
                    "the recipe beat the control and closed {:.0}% of its gap to the teacher",
                    100.0 * (1.0 - cost.max(0.0) / control_gap)
                )
            } else {
                "the recipe beat the control".to_string()
            }
        }
        Some(_) => "the recipe did not beat the control (swap + cross-entropy, same steps): use the control's recipe, or more steps".to_string(),
    };
    let recall = recall_at(r, 1)
        .map(|(t, s)| {
            format!(", recall at the training context {:.0}% -> {:.0}%", 100.0 * t, 100.0 * s)
        })
        .unwrap_or_default();
    format!(
        "Linearising layers {:?} to {} costs {:+.4} nats/token of held-out loss ({:.4} -> {:.4}, perplexity x{:.3}){recall}; {verdict}.",
        r.swapped,
        r.student_spec,
        cost,
        r.teacher_loss,
        r.student_loss,
        cost.exp()
    )
}

/// Mean recall-probe accuracy of (teacher, student) at `multiple` × the training context, over
/// the probes every model ran.
pub fn recall_at(r: &LinearizeResult, multiple: usize) -> Option<(f64, f64)> {
    let rows: Vec<(f64, f64)> = r
        .probes
        .iter()
        .filter(|p| p.multiple == multiple)
        .filter_map(|p| Some((p.accuracy.first().copied()??, p.accuracy.get(1).copied()??)))
        .collect();
    if rows.is_empty() {
        return None;
    }
    let n = rows.len() as f64;
    Some((rows.iter().map(|r| r.0).sum::<f64>() / n, rows.iter().map(|r| r.1).sum::<f64>() / n))
}

/// The files of the report: `report.md` and `transfer.svg`.
pub fn render(r: &LinearizeResult) -> Vec<(String, String)> {
    vec![("report.md".into(), report_markdown(r)), ("transfer.svg".into(), transfer_chart(r))]
}

/// Each swapped layer's stage-1 MSE per step (log scale).
pub fn transfer_chart(r: &LinearizeResult) -> String {
    let series: Vec<Series> = r
        .layers
        .iter()
        .zip(&r.transfer_per_layer)
        .map(|(l, curve)| {
            let points = curve.iter().enumerate().map(|(s, &v)| ((s + 1) as f64, v)).collect();
            Series::new(format!("layer {}", l.layer), points)
        })
        .collect();
    line_chart(
        &format!("Attention transfer to {}", r.student_spec),
        "step",
        "MSE to the teacher's attention output",
        &series,
        true,
    )
}

/// `report.md`.
pub fn report_markdown(r: &LinearizeResult) -> String {
    let mut md =
        format!("# Linearise: {} -> {}\n\n**{}**\n\n", r.teacher_spec, r.student_spec, decision(r));
    let stopped =
        |at: Option<usize>| at.map(|s| format!(" (stopped early at step {s})")).unwrap_or_default();
    md.push_str(&format!(
        "Stage 1 (attention transfer): {} steps; stage 2 (CE + {}·τ²·KL at τ = {}, {}): {} steps{}; {}. Each fine-tune keeps its best held-out evaluation. Student run: `{}`.\n\n",
        r.transfer_steps,
        r.alpha,
        r.tau,
        if r.lora_rank > 0 {
            format!("LoRA rank {} on q/k/v/o, merged", r.lora_rank)
        } else {
            "the whole student".to_string()
        },
        r.recover_steps,
        stopped(r.recover_stopped_at),
        match r.control_loss {
            Some(_) => format!(
                "the control: swap + CE for {} steps{}",
                r.transfer_steps + r.recover_steps,
                stopped(r.control_stopped_at)
            ),
            None => "no control".to_string(),
        },
        r.student_dir.display()
    ));
    md.push_str("| model | held-out loss | perplexity |\n|---|---|---|\n");
    let mut rows = vec![
        ("teacher", r.teacher_loss),
        ("swapped, untrained", r.swapped_loss),
        ("after attention transfer", r.transferred_loss),
        ("student (transfer + recovery)", r.student_loss),
    ];
    if let Some(c) = r.control_loss {
        rows.push(("control (swap + CE)", c));
    }
    for (name, loss) in rows {
        md.push_str(&format!("| {name} | {loss:.4} | {:.2} |\n", loss.exp()));
    }
    let arms =
        if r.control_loss.is_some() { "teacher | student | control" } else { "teacher | student" };
    let rule = if r.control_loss.is_some() { "|---|---|---|---|" } else { "|---|---|---|" };
    let cell = |v: &Option<f64>| v.map_or("n/a".to_string(), |a| format!("{:.0}%", 100.0 * a));
    if !r.probes.is_empty() {
        md.push_str(&format!(
            "\nRecall probes (answer-token accuracy, teacher-forced; training context {} tokens):\n\n| probe | length | {arms} |\n|---{rule}\n",
            r.context
        ));
        for p in &r.probes {
            let cells: Vec<String> = p.accuracy.iter().map(cell).collect();
            let note = p.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default();
            md.push_str(&format!(
                "| {}{note} | {}× ({} tokens) | {} |\n",
                p.probe,
                p.multiple,
                p.tokens,
                cells.join(" | ")
            ));
        }
    }
    if !r.loss_by_position.is_empty() {
        md.push_str(&format!("\n| held-out loss by position | {arms} |\n{rule}\n"));
        for (bucket, values) in &r.loss_by_position {
            let cells: Vec<String> = values.iter().map(|v| format!("{v:.4}")).collect();
            md.push_str(&format!("| {bucket} | {} |\n", cells.join(" | ")));
        }
    }
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    md.push_str(&format!(
        "\nDecoding one sequence: state {:.2} MiB (teacher) vs {:.2} MiB (student) at 4096 tokens, {:.2} vs {:.2} MiB at 32768; {:.0} vs {:.0} tokens/s greedy on this machine.\n",
        mib(r.state_bytes_4k.0),
        mib(r.state_bytes_4k.1),
        mib(r.state_bytes_32k.0),
        mib(r.state_bytes_32k.1),
        r.decode_tokens_per_s.0,
        r.decode_tokens_per_s.1
    ));
    md.push_str("\n| layer | transfer MSE before | after stage 1 | reduction | kept as softmax |\n|---|---|---|---|---|\n");
    for l in &r.layers {
        md.push_str(&format!(
            "| {} | {:.3e} | {:.3e} | x{:.1} | {} |\n",
            l.layer,
            l.before,
            l.after,
            l.reduction(),
            if l.kept { "yes" } else { "" }
        ));
    }
    md.push_str("\n![per-layer transfer error](transfer.svg)\n");
    md
}
