//! The report of `attnlab linearize` (the recipe is `attnlab_train::linearize`): the decision
//! first, then held-out loss of teacher, student and control, and each layer's transfer error.

use attnlab_train::linearize::LinearizeResult;

/// The one-line decision: what the swap costs against the teacher, and whether the recipe beat
/// the control (swap + cross-entropy for the same steps).
pub fn decision(r: &LinearizeResult) -> String {
    let cost = r.student_loss - r.teacher_loss;
    let control_gap = r.control_loss - r.teacher_loss;
    let verdict = if r.student_loss < r.control_loss {
        if control_gap > 0.0 {
            format!(
                "transfer + distillation beat the control and closed {:.0}% of its gap to the teacher",
                100.0 * (1.0 - cost.max(0.0) / control_gap)
            )
        } else {
            "transfer + distillation beat the control".to_string()
        }
    } else {
        "transfer + distillation did not beat the control (swap + cross-entropy, same steps): use the control's recipe, or more steps".to_string()
    };
    format!(
        "Linearising layers {:?} to {} costs {:+.4} nats/token of held-out loss ({:.4} -> {:.4}, perplexity x{:.3}); {verdict}.",
        r.swapped,
        r.student_spec,
        cost,
        r.teacher_loss,
        r.student_loss,
        cost.exp()
    )
}

/// `report.md`.
pub fn report_markdown(r: &LinearizeResult) -> String {
    let mut md =
        format!("# Linearise: {} -> {}\n\n**{}**\n\n", r.teacher_spec, r.student_spec, decision(r));
    md.push_str(&format!(
        "Stage 1 (attention transfer): {} steps; stage 2 (CE + {}·τ²·KL at τ = {}, {}): {} steps; the control: swap + CE for {} steps. Student run: `{}`.\n\n",
        r.transfer_steps,
        r.alpha,
        r.tau,
        if r.lora_rank > 0 {
            format!("LoRA rank {} on q/k/v/o, merged", r.lora_rank)
        } else {
            "the whole student".to_string()
        },
        r.recover_steps,
        r.transfer_steps + r.recover_steps,
        r.student_dir.display()
    ));
    md.push_str("| model | held-out loss | perplexity |\n|---|---|---|\n");
    for (name, loss) in [
        ("teacher", r.teacher_loss),
        ("swapped, untrained", r.swapped_loss),
        ("after attention transfer", r.transferred_loss),
        ("student (transfer + distillation)", r.student_loss),
        ("control (swap + CE)", r.control_loss),
    ] {
        md.push_str(&format!("| {name} | {loss:.4} | {:.2} |\n", loss.exp()));
    }
    if !r.loss_by_position.is_empty() {
        md.push_str(
            "\n| held-out loss by position | teacher | student | control |\n|---|---|---|---|\n",
        );
        for (bucket, t, s, c) in &r.loss_by_position {
            md.push_str(&format!("| {bucket} | {t:.4} | {s:.4} | {c:.4} |\n"));
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
            l.before / l.after.max(f64::MIN_POSITIVE),
            if l.kept { "yes" } else { "" }
        ));
    }
    md
}
