//! Run-time backend selection.
//!
//! Burn 0.22 has no backend type parameter: the backend is a property of the [`Device`] value.
//! Which backends exist in a build is decided by this crate's cargo features (`flex`, `ndarray`,
//! `wgpu`, `cuda`); asking for one that was not compiled in is an error that names the feature.

use burn::tensor::Device;
use std::fmt;
use std::str::FromStr;

/// A backend the user can ask for with `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Burn's pure-Rust CPU backend (SIMD + rayon). The default.
    Flex,
    /// The ndarray CPU backend (deprecated upstream; kept for comparison).
    Ndarray,
    /// wgpu: Vulkan/Metal/DX12/GL; on a GPU-less Linux box, Mesa's lavapipe.
    Wgpu,
    /// CUDA.
    Cuda,
}

/// The backend named at run time was not compiled into this binary.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("unknown device '{0}': expected one of flex, ndarray, wgpu, cuda")]
    Unknown(String),
    #[error(
        "device '{0}' is not compiled into this build: rebuild with `--features {0}` \
         (e.g. `cargo build --release --features {0}`)"
    )]
    NotCompiled(BackendKind),
}

impl BackendKind {
    pub const ALL: [BackendKind; 4] = [Self::Flex, Self::Ndarray, Self::Wgpu, Self::Cuda];

    pub fn name(self) -> &'static str {
        match self {
            Self::Flex => "flex",
            Self::Ndarray => "ndarray",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        }
    }

    /// Whether this build contains the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            Self::Flex => cfg!(feature = "flex"),
            Self::Ndarray => cfg!(feature = "ndarray"),
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The backends compiled into this build.
    pub fn compiled() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|b| b.is_compiled()).collect()
    }

    /// The plain (inference) device of this backend; call `.autodiff()` on it to train.
    pub fn device(self) -> Result<Device, BackendError> {
        match self {
            #[cfg(feature = "flex")]
            Self::Flex => Ok(Device::flex()),
            #[cfg(feature = "ndarray")]
            // Burn deprecates ndarray; it stays selectable for comparison (Cargo.toml).
            #[allow(deprecated)]
            Self::Ndarray => Ok(Device::ndarray()),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
            #[cfg(feature = "cuda")]
            Self::Cuda => Ok(Device::cuda(burn::tensor::DeviceIndex::Default)),
            // Unreachable only when every backend is compiled in.
            #[allow(unreachable_patterns)]
            other => Err(BackendError::NotCompiled(other)),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| BackendError::Unknown(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_rejected() {
        for b in BackendKind::ALL {
            assert_eq!(b.name().parse::<BackendKind>().unwrap(), b);
        }
        let err = "tpu".parse::<BackendKind>().unwrap_err().to_string();
        assert!(err.contains("flex, ndarray, wgpu, cuda"), "{err}");
    }

    #[test]
    fn missing_backend_names_the_feature() {
        for b in BackendKind::ALL.into_iter().filter(|b| !b.is_compiled()) {
            let err = b.device().unwrap_err().to_string();
            assert!(err.contains(&format!("--features {}", b.name())), "{err}");
        }
        assert!(BackendKind::Flex.device().is_ok());
    }
}
