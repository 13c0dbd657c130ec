//! Where a backbone's parameters come from: a safetensors file with torchvision's
//! state-dict names, or seeded random numbers drawn as torchvision initialises them.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use safetensors::{Dtype, SafeTensors};
use tch::{Kind, Tensor};

use crate::error::{EngineError, Result};

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

    /// GoogLeNet only: whether inputs are re-normalised as torchvision's pretrained
    /// GoogLeNet expects (its `transform_input`).
    fn transform_input(&self) -> bool;
}

/// Parameters read from a `.safetensors` file; keys the backbone does not use (the
/// classifier, auxiliary heads) are ignored.
pub(crate) struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
    transform_input: Option<bool>,
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
        let (_, metadata) = SafeTensors::read_metadata(&mmap)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let transform_input = metadata
            .metadata()
            .as_ref()
            .and_then(|m: &HashMap<String, String>| m.get("transform_input"))
            .map(|v| v == "true" || v == "True" || v == "1");
        Ok(SafetensorsFile {
            path: path.to_owned(),
            mmap,
            transform_input,
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
        let view = tensors
            .tensor(name)
            .map_err(|_| self.error(format!("missing tensor '{name}'")))?;
        let found: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        if found != shape {
            return Err(self.error(format!(
                "tensor '{name}' has shape {found:?}, expected {shape:?}"
            )));
        }
        let kind = match view.dtype() {
            Dtype::F32 => Kind::Float,
            Dtype::F64 => Kind::Double,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            other => {
                return Err(self.error(format!("tensor '{name}' has unsupported type {other:?}")))
            }
        };
        Ok(Tensor::f_from_data_size(view.data(), shape, kind)?.f_to_kind(Kind::Float)?)
    }

    fn transform_input(&self) -> bool {
        // torchvision's pretrained GoogLeNet expects it; files written by
        // scripts/export_weights.py say which they are.
        self.transform_input.unwrap_or(true)
    }
}

/// Seeded random parameters: the same seed gives the same network on every machine
/// and device (drawn with ChaCha8 on the CPU, not with libtorch's generators).
/// Convolutions are drawn as torchvision draws VGG's, for GoogLeNet too (see
/// `basic_conv`); biases and batch norm start as torchvision's.
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
        false // as torchvision's googlenet(weights=None)
    }
}
