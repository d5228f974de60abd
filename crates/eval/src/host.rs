//! What machine a measurement ran on: the CPU model, its hardware threads and the SIMD
//! extensions the kernels and the gemm can use, printed beside every speed figure (the same
//! code is 1.5× apart between an AVX2 host and an AVX-512 one).

/// The CPU model and hardware threads (`unknown CPU` where it cannot be read).
pub fn machine() -> String {
    let model = cpuinfo_field("model name").unwrap_or_else(|| "unknown CPU".to_string());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model}, {threads} hardware threads")
}

/// The vector extensions among those that matter here (FMA, AVX2, AVX-512 and its bf16/VNNI
/// parts, AMX) that the CPU reports, space-separated; `none` where it reports none of them.
pub fn simd_flags() -> String {
    const WATCHED: [&str; 9] = [
        "fma",
        "avx2",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_bf16",
        "avx512_vnni",
        "amx_tile",
        "amx_bf16",
    ];
    let flags = cpuinfo_field("flags").unwrap_or_default();
    let have: Vec<&str> = flags.split_whitespace().collect();
    let found: Vec<&str> = WATCHED.into_iter().filter(|f| have.contains(f)).collect();
    if found.is_empty() { "none".to_string() } else { found.join(" ") }
}

/// The first `/proc/cpuinfo` line named `name`, its value trimmed.
fn cpuinfo_field(name: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On Linux the model and flags are read; the flags are a subset of the watched ones.
    #[test]
    fn the_machine_is_described() {
        assert!(machine().ends_with("hardware threads"), "{}", machine());
        let flags = simd_flags();
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert!(!machine().starts_with("unknown CPU"), "{}", machine());
        }
        let watched =
            |f: &str| f == "none" || f == "fma" || f.starts_with("avx") || f.starts_with("amx");
        assert!(flags.split(' ').all(watched), "{flags}");
    }
}
