//! The parameters each attention family's mixer holds, read off real modules: every catalogue
//! spec built at a small size, its parameters listed with their shapes. `attnlab variants
//! --parameters` prints the table docs/architecture.md holds (a test keeps that copy current).

use crate::params::named_tensors;
use attnlab_model::MixerSpec;
use attnlab_model::mixer::MixerDims;
use burn::tensor::Device;
use std::collections::BTreeMap;

/// The size the table's shapes are given at.
const DIMS: MixerDims = MixerDims { seed: 0, layer: 0, bias: true, ..MixerDims::new(16, 2, 32) };

/// One markdown table: each family's parameters (paths below `blocks.<i>.mixer.`), their shapes
/// at `d_model` 16 with 2 heads, and the catalogue specs that have them.
pub fn mixer_parameters_markdown() -> String {
    let device = Device::default();
    let mut out = format!(
        "| family | parameter (below `blocks.<i>.mixer.`) | shape at d_model {}, {} heads | \
         specs that have it |\n|---|---|---|---|\n",
        DIMS.d_model, DIMS.n_heads
    );
    for family in MixerSpec::registry() {
        let specs: Vec<&str> = family.catalogue.iter().map(|v| v.spec).collect();
        // (Parameter path, shape) -> the specs that have it, in path order: a parameter whose
        // shape depends on an option (delta's `beta` under `householders=N`) gets a row per shape.
        let mut seen: BTreeMap<(String, Vec<usize>), Vec<&str>> = BTreeMap::new();
        for &spec in &specs {
            let parsed: MixerSpec = spec.parse().expect("catalogue specs parse");
            let mixer = parsed.init(&DIMS, &device);
            for (name, data) in named_tensors(&mixer) {
                seen.entry((name, data.shape().to_vec())).or_default().push(spec);
            }
        }
        for ((name, shape), having) in seen {
            let which = if having.len() == specs.len() {
                "all".to_string()
            } else {
                having.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
            };
            out += &format!("| {} | `{name}` | {shape:?} | {which} |\n", family.name);
        }
    }
    out
}
