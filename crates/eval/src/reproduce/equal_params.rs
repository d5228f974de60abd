//! Arms at equal parameter count: an arm whose mixer is larger (or smaller) than the baseline's
//! gets the size that brings its model's parameter count closest to the baseline's, so that a
//! comparison can say its gain is not bought with parameters (MAD's and the zoo's protocol).
//!
//! Where the model has an MLP, its hidden width absorbs the difference: the mixer, and with it
//! the decoding state, stays as it is, and the hidden width moves in steps of one. Without an
//! MLP (MQAR's and MAD's CPU models) the model width moves, over the widths the config accepts
//! (heads dividing it, rotary pairs), which also changes the mixer's state.

use super::harness::ReproduceError;
use attnlab_model::ModelIo;
use attnlab_train::RunConfig;

/// Within this fraction of the baseline's count an arm is already at equal parameters.
pub(super) const TOLERANCE: f64 = 0.03;

/// `config`'s parameter count on the task whose sizes are `io`; `None` for a config it refuses.
fn count(config: &RunConfig, io: &ModelIo) -> Option<usize> {
    config.validate().ok()?;
    attnlab_train::parameter_count_of(&config.model, io, config.seed).ok()
}

fn off_by(count: usize, target: usize) -> f64 {
    (count as f64 - target as f64).abs() / target.max(1) as f64
}

/// `config` resized to the parameter count closest to `target`, with its count; `config`
/// itself when it is within [`TOLERANCE`] already.
pub(super) fn matched(
    config: &RunConfig,
    target: usize,
) -> Result<(RunConfig, usize), ReproduceError> {
    // The task is built once: a model's width or hidden size does not change its sizes.
    let io =
        attnlab_train::model_io(config).map_err(|e| ReproduceError::EqualParams(e.to_string()))?;
    let own = attnlab_train::parameter_count_of(&config.model, &io, config.seed)
        .map_err(|e| ReproduceError::EqualParams(e.to_string()))?;
    if off_by(own, target) <= TOLERANCE {
        return Ok((config.clone(), own));
    }
    let hidden = config.model.mlp_width();
    let candidates: Vec<RunConfig> = if hidden > 0 {
        // The count is affine in the hidden width: two points give the width that meets it.
        let mut probe = config.clone();
        probe.model.mlp_hidden = hidden + 1;
        let slope = count(&probe, &io).map_or(0, |c| c.saturating_sub(own)).max(1);
        let step = (target as f64 - own as f64) / slope as f64;
        let centre = (hidden as f64 + step).round().max(1.0) as usize;
        (centre.saturating_sub(1).max(1)..=centre + 1)
            .map(|h| {
                let mut c = config.clone();
                c.model.mlp_hidden = h;
                c
            })
            .collect()
    } else {
        let d = config.model.d_model;
        (d / 2..=d * 2)
            .map(|w| {
                let mut c = config.clone();
                c.model.d_model = w;
                c
            })
            .collect()
    };
    candidates
        .into_iter()
        .filter_map(|c| count(&c, &io).map(|n| (c, n)))
        .min_by(|a, b| off_by(a.1, target).total_cmp(&off_by(b.1, target)))
        .ok_or_else(|| {
            ReproduceError::EqualParams(format!(
                "no size of mixer {} near width {} is a valid config",
                config.model.mixer, config.model.d_model
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset(name: &str) -> RunConfig {
        let root = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        RunConfig::read(&root.join("configs").join(name)).unwrap()
    }

    fn with_mixer(config: &RunConfig, mixer: &str) -> RunConfig {
        let mut c = config.clone();
        c.model.mixer = mixer.parse().unwrap();
        c
    }

    #[test]
    fn without_an_mlp_the_width_closest_to_the_target_wins() {
        let base = preset("mqar-smoke.toml");
        let target = attnlab_train::parameter_count(&base).unwrap();
        let gla = with_mixer(&base, "decay:gla");
        let (m, n) = matched(&gla, target).unwrap();
        assert_eq!(n, attnlab_train::parameter_count(&m).unwrap());
        assert!(m.model.d_model < gla.model.d_model, "GLA is larger, so it narrows");
        // No other accepted width is closer (the neighbours, counted independently).
        for w in [m.model.d_model - 1, m.model.d_model + 1] {
            let mut c = m.clone();
            c.model.d_model = w;
            if let Some(other) = count(&c, &attnlab_train::model_io(&c).unwrap()) {
                assert!(off_by(other, target) >= off_by(n, target), "width {w}: {other}");
            }
        }
        assert!(off_by(n, target) <= TOLERANCE, "{n} against {target}");
    }

    #[test]
    fn with_an_mlp_the_hidden_width_moves_and_the_mixer_stays() {
        let base = preset("mad.toml");
        let target = attnlab_train::parameter_count(&base).unwrap();
        let gla = with_mixer(&base, "decay:gla");
        let (m, n) = matched(&gla, target).unwrap();
        assert_eq!(m.model.d_model, base.model.d_model);
        assert!(m.model.mlp_hidden < base.model.mlp_width());
        // One hidden unit is 3·d parameters per layer (SwiGLU): the match is that close.
        let per_unit = 3 * base.model.d_model * base.model.n_layers;
        assert!(n.abs_diff(target) <= per_unit / 2, "{n} against {target}");
    }

    #[test]
    fn an_arm_within_the_tolerance_is_left_as_it_is() {
        let base = preset("mqar-smoke.toml");
        let target = attnlab_train::parameter_count(&base).unwrap();
        let (m, n) = matched(&base, target).unwrap();
        assert_eq!((m.model.d_model, n), (base.model.d_model, target));
    }
}
