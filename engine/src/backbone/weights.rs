//! Where a backbone's parameters come from: a safetensors file with torchvision's
//! state-dict names, tensors imported from another format, or seeded random numbers
//! drawn as torchvision initialises them.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use safetensors::{Dtype, SafeTensors};
use tch::{Kind, Tensor};

use super::convention::InputConvention;
use crate::error::{EngineError, Result};

/// The metadata keys of a weights file that Pastiche reads or writes.
pub(crate) mod key {
    pub const BACKBONE: &str = "backbone";
    pub const CONVENTION: &str = "convention";
    pub const SOURCE: &str = "source";
    pub const LICENCE: &str = "licence";
    pub const TRANSFORM_INPUT: &str = "transform_input";
}

/// How torchvision initialises a parameter when no pretrained weights are loaded.
#[derive(Debug, Clone, Copy)]
pub(crate) enum InitRule {
    /// VGG's convolutions: `kaiming_normal_(mode="fan_out", nonlinearity="relu")`.
    KaimingNormalFanOut,
    Zeros,
    Ones,
}

/// Hands out a backbone's parameters by their torchvision name.
pub(crate) trait ParamSource {
    fn tensor(&mut self, name: &str, shape: &[i64], init: InitRule) -> Result<Tensor>;

    /// GoogLeNet and Inception v3 only: whether inputs are re-normalised as
    /// torchvision's pretrained weights expect (their `transform_input`).
    fn transform_input(&self) -> bool;

    /// How the network's input is normalised.
    fn convention(&self) -> InputConvention;
}

/// `found`, the tensor a weights file has under `name`, if it is the parameter of
/// `shape` the backbone needs: present, of that shape, floating-point and finite.
/// The one check every weights file passes, loaded or imported.
pub(crate) fn checked_param(
    path: &Path,
    name: &str,
    found: Option<Tensor>,
    shape: &[i64],
) -> Result<Tensor> {
    let refuse = |reason: String| EngineError::Weights {
        path: path.to_owned(),
        reason,
    };
    let tensor = found.ok_or_else(|| refuse(format!("missing tensor '{name}'")))?;
    let found_shape = tensor.size();
    if found_shape != shape {
        return Err(refuse(format!(
            "tensor '{name}' has shape {found_shape:?}, expected {shape:?}"
        )));
    }
    if !tensor.is_floating_point() {
        return Err(refuse(format!(
            "tensor '{name}' has type {:?}, not a floating-point type",
            tensor.kind()
        )));
    }
    let tensor = tensor.f_to_kind(Kind::Float)?;
    if !bool::try_from(tensor.f_isfinite()?.f_all()?)? {
        return Err(refuse(format!(
            "tensor '{name}' has infinite or NaN values"
        )));
    }
    Ok(tensor)
}

/// The metadata of a safetensors file (empty when it has none).
pub(crate) fn metadata_of(path: &Path, bytes: &[u8]) -> Result<HashMap<String, String>> {
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| EngineError::Weights {
        path: path.to_owned(),
        reason: format!("not a safetensors file ({e})"),
    })?;
    Ok(metadata.metadata().clone().unwrap_or_default())
}

/// The input convention a file's metadata records; torchvision's when it records none.
pub(crate) fn convention_of(
    path: &Path,
    metadata: &HashMap<String, String>,
) -> Result<InputConvention> {
    metadata
        .get(key::CONVENTION)
        .map_or(Ok(InputConvention::Torchvision), |name| {
            name.parse().map_err(|reason| EngineError::Weights {
                path: path.to_owned(),
                reason,
            })
        })
}

/// A safetensors tensor as a libtorch tensor of the same type and shape.
pub(crate) fn tensor_of(
    view: &safetensors::tensor::TensorView<'_>,
) -> std::result::Result<Tensor, String> {
    let kind = match view.dtype() {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        other => return Err(format!("unsupported type {other:?}")),
    };
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    Tensor::f_from_data_size(view.data(), &shape, kind).map_err(|e| e.to_string())
}

/// Parameters read from a `.safetensors` file; keys the backbone does not use (the
/// classifier, auxiliary heads) are ignored.
pub(crate) struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
    transform_input: Option<bool>,
    convention: InputConvention,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |reason: String| EngineError::Weights {
            path: path.to_owned(),
            reason,
        };
        let file = File::open(path).map_err(|e| bad(e.to_string()))?;
        // Safety: the file is only read, and users do not rewrite weights files while
        // a render loads them; the mapping is dropped once the tensors are copied.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| bad(e.to_string()))?;
        let metadata = metadata_of(path, &mmap)?;
        let transform_input = metadata
            .get(key::TRANSFORM_INPUT)
            .map(|v| v == "true" || v == "True" || v == "1");
        let convention = convention_of(path, &metadata)?;
        Ok(SafetensorsFile {
            path: path.to_owned(),
            mmap,
            transform_input,
            convention,
        })
    }

    fn error(&self, reason: String) -> EngineError {
        EngineError::Weights {
            path: self.path.clone(),
            reason,
        }
    }
}

impl ParamSource for SafetensorsFile {
    fn tensor(&mut self, name: &str, shape: &[i64], _init: InitRule) -> Result<Tensor> {
        let tensors = SafeTensors::deserialize(&self.mmap)
            .map_err(|e| self.error(format!("not a safetensors file ({e})")))?;
        let found = match tensors.tensor(name) {
            Ok(view) => {
                Some(tensor_of(&view).map_err(|e| self.error(format!("tensor '{name}': {e}")))?)
            }
            Err(_) => None,
        };
        checked_param(&self.path, name, found, shape)
    }

    fn transform_input(&self) -> bool {
        // torchvision's pretrained GoogLeNet and Inception v3 expect it; files
        // written by scripts/export_weights.py say which they are.
        self.transform_input.unwrap_or(true)
    }

    fn convention(&self) -> InputConvention {
        self.convention
    }
}

/// Parameters taken from tensors read out of another file (an import), each checked
/// as a weights file's are; the ones the backbone asked for are kept, in its order.
pub(crate) struct ImportedParams<'a> {
    pub path: &'a Path,
    pub tensors: HashMap<String, Tensor>,
    pub transform_input: bool,
    pub convention: InputConvention,
    pub used: Vec<(String, Tensor)>,
}

impl ParamSource for ImportedParams<'_> {
    fn tensor(&mut self, name: &str, shape: &[i64], _init: InitRule) -> Result<Tensor> {
        let found = self.tensors.remove(name);
        let tensor = checked_param(self.path, name, found, shape)?;
        self.used.push((name.to_owned(), tensor.shallow_clone()));
        Ok(tensor)
    }

    fn transform_input(&self) -> bool {
        self.transform_input
    }

    fn convention(&self) -> InputConvention {
        self.convention
    }
}

/// Seeded random parameters: the same seed gives the same network on every machine
/// and device (drawn with ChaCha8 on the CPU, not with libtorch's generators).
/// Convolutions are drawn as torchvision draws VGG's, for the inception networks
/// too (see `basic_conv`); biases and batch norm start as torchvision's.
pub(crate) struct RandomParams {
    rng: ChaCha8Rng,
}

impl RandomParams {
    pub fn new(seed: u64) -> Self {
        RandomParams {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn normal(&mut self, count: usize, std: f64) -> Vec<f32> {
        (0..count)
            .map(|_| (self.rng.sample::<f64, _>(StandardNormal) * std) as f32)
            .collect()
    }
}

impl ParamSource for RandomParams {
    fn tensor(&mut self, _name: &str, shape: &[i64], init: InitRule) -> Result<Tensor> {
        let count = shape.iter().product::<i64>() as usize;
        let values = match init {
            InitRule::KaimingNormalFanOut => {
                // fan_out of a conv weight [out, in, kh, kw] is out * kh * kw.
                let fan_out = shape[0] * shape[2..].iter().product::<i64>();
                let std = (2.0 / fan_out as f64).sqrt();
                self.normal(count, std)
            }
            InitRule::Zeros => vec![0.0; count],
            InitRule::Ones => vec![1.0; count],
        };
        Ok(Tensor::f_from_slice(&values)?.f_view(shape)?)
    }

    fn transform_input(&self) -> bool {
        false // as torchvision's googlenet(weights=None) and inception_v3(weights=None)
    }

    fn convention(&self) -> InputConvention {
        InputConvention::Torchvision
    }
}
