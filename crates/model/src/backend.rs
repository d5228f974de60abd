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

/// One entry of a device list (`--devices`): a backend and, for the GPU backends, which of the
/// machine's devices (`cuda:1`, `wgpu:0`); without an index, the backend's default device.
///
/// The CPU backends have one device each; listing it more than once (`flex,flex`) puts that
/// many model replicas on it, which is what the data-parallel tests use on a machine without
/// two accelerators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceSpec {
    pub backend: BackendKind,
    pub index: Option<usize>,
}

/// A `--devices` value that does not name devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceListError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("device '{0}': the index after ':' must be a whole number, e.g. cuda:1")]
    BadIndex(String),
    #[error(
        "device '{0}': {1} has one device, so it takes no index; list it once per replica instead (e.g. {1},{1})"
    )]
    NoIndices(String, BackendKind),
    #[error(
        "devices '{0}' mix backends: one run trains on one backend (e.g. cuda:0,cuda:1 or flex,flex)"
    )]
    Mixed(String),
    #[error("devices: the list is empty; name at least one device, e.g. --devices cuda:0,cuda:1")]
    Empty,
}

impl DeviceSpec {
    /// The plain (inference) device; `.autodiff()` it to train.
    pub fn device(self) -> Result<Device, BackendError> {
        match (self.backend, self.index) {
            (_, None) => self.backend.device(),
            #[cfg(feature = "cuda")]
            (BackendKind::Cuda, Some(i)) => Ok(Device::cuda(i)),
            #[cfg(feature = "wgpu")]
            (BackendKind::Wgpu, Some(i)) => {
                Ok(Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(i)))
            }
            // The CPU backends refuse an index when parsed; a backend not compiled in is named.
            (other, Some(_)) => other.device(),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}:{i}", self.backend),
            None => write!(f, "{}", self.backend),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = DeviceListError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, index) = match s.split_once(':') {
            Some((name, index)) => (name, Some(index)),
            None => (s, None),
        };
        let backend: BackendKind = name.trim().parse()?;
        let index = match index {
            None => None,
            Some(_) if matches!(backend, BackendKind::Flex | BackendKind::Ndarray) => {
                return Err(DeviceListError::NoIndices(s.to_string(), backend));
            }
            Some(i) => {
                Some(i.trim().parse().map_err(|_| DeviceListError::BadIndex(s.to_string()))?)
            }
        };
        Ok(Self { backend, index })
    }
}

/// The devices one run trains on, data parallel (`cuda:0,cuda:1`): all on one backend. Written
/// in a config as that comma-separated string, so `--set devices=flex,flex` works too.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceList(Vec<DeviceSpec>);

impl DeviceList {
    /// The one default device of `backend`.
    pub fn single(backend: BackendKind) -> Self {
        Self(vec![DeviceSpec { backend, index: None }])
    }
    pub fn specs(&self) -> &[DeviceSpec] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The backend every entry is on.
    pub fn backend(&self) -> BackendKind {
        self.0[0].backend
    }
    /// The plain devices, in rank order.
    pub fn devices(&self) -> Result<Vec<Device>, BackendError> {
        self.0.iter().map(|d| d.device()).collect()
    }
}

impl fmt::Display for DeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.0.iter().map(|d| d.to_string()).collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for DeviceList {
    type Err = DeviceListError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let specs = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| p.trim().parse())
            .collect::<Result<Vec<DeviceSpec>, _>>()?;
        let Some(first) = specs.first() else { return Err(DeviceListError::Empty) };
        if specs.iter().any(|d| d.backend != first.backend) {
            return Err(DeviceListError::Mixed(s.to_string()));
        }
        Ok(Self(specs))
    }
}

impl serde::Serialize for DeviceList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for DeviceList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
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

    #[test]
    fn device_lists_parse_print_and_refuse_what_cannot_work() {
        let list: DeviceList = "cuda:0, cuda:1".parse().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list.to_string(), "cuda:0,cuda:1");
        assert_eq!(list.backend(), BackendKind::Cuda);
        let list: DeviceList = "flex,flex".parse().unwrap();
        assert_eq!(list.specs(), &[DeviceSpec { backend: BackendKind::Flex, index: None }; 2]);
        let err = |s: &str| s.parse::<DeviceList>().unwrap_err().to_string();
        assert!(err("flex:1").contains("list it once per replica"), "{}", err("flex:1"));
        assert!(err("cuda:x").contains("whole number"), "{}", err("cuda:x"));
        assert!(err("cuda:0,wgpu").contains("mix backends"), "{}", err("cuda:0,wgpu"));
        assert!(err("").contains("empty"), "{}", err(""));
        assert!(err("tpu:0").contains("unknown device"), "{}", err("tpu:0"));
    }
}
