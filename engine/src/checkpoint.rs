//! Checkpoints: where a render stands between two iterations, enough to carry
//! on elsewhere (another process, another worker) and end exactly where the
//! uninterrupted render would have.
//!
//! A checkpoint holds the iterate, the optimiser's state (Adam's step count and
//! moments; L-BFGS's direction, step, curvature pairs, previous gradient and
//! counters), the loss rows logged so far, the early-stopping window of totals
//! and beta (as given, or as `style_weight = "auto"` chose it). It holds no
//! random number generator's state because a render draws no randomness after
//! it starts: the only random draws are the seeded white-noise start and a
//! random-weight backbone's seeded weights, both made again identically from
//! the parameters before the first iteration.
//!
//! The format is [safetensors](https://github.com/huggingface/safetensors): one
//! self-describing file (a JSON header naming each array's dtype and shape,
//! then the raw little-endian bytes), which any safetensors reader opens, written
//! and read by a crate the engine already uses for weights. Tensors are kept
//! in their own dtype and numbers as f64, all as raw bits, so nothing is rounded
//! on the way (a decimal text format would have to be careful to round-trip).
//! The header's metadata carries the format's name and version, the iteration,
//! the optimiser, a label naming whose checkpoint it is (the farm's task id),
//! and a SHA-256 of everything else, so that a damaged object is recognised and
//! ignored rather than resumed from.
//!
//! Resuming on the device that wrote the checkpoint, with the same libtorch and
//! thread count, repeats the uninterrupted render's operations in the same
//! order on the same bits: the result is bit for bit the same. Across devices
//! (a GPU's checkpoint resumed on the CPU) the render carries on from the exact
//! state, but each device's arithmetic rounds as it does; the result then differs
//! from either device's uninterrupted render as two devices' renders differ.

use std::collections::{BTreeMap, HashMap};

use pastiche_spec::{LossRecord, OptimizerKind, RenderParams};
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::error::Result;

/// What the header says the file is.
const FORMAT: &str = "pastiche-checkpoint";
const VERSION: &str = "1";

/// A tensor copied to host memory: its kind, shape and raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub kind: Kind,
    pub shape: Vec<i64>,
    pub bytes: Vec<u8>,
}

impl HostTensor {
    /// A copy of `tensor`'s values (from any device).
    pub fn of(tensor: &Tensor) -> Result<HostTensor> {
        let host = tensor.f_to_device(Device::Cpu)?.f_contiguous()?;
        let kind = host.kind();
        let numel = host.numel();
        let mut bytes = vec![0; numel * kind.elt_size_in_bytes()];
        host.f_copy_data_u8(&mut bytes, numel)?;
        Ok(HostTensor {
            kind,
            shape: host.size(),
            bytes,
        })
    }

    /// The values as a tensor on `device`.
    pub fn to_tensor(&self, device: Device) -> Result<Tensor> {
        Ok(Tensor::f_from_data_size(&self.bytes, &self.shape, self.kind)?.f_to_device(device)?)
    }

    pub fn numel(&self) -> i64 {
        self.shape.iter().product()
    }
}

/// An optimiser's state between iterations: named tensors and numbers (counts
/// are numbers too: f64 holds them exactly).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OptimizerState {
    pub tensors: BTreeMap<String, HostTensor>,
    pub numbers: BTreeMap<String, f64>,
}

impl OptimizerState {
    pub fn number(&self, name: &str) -> std::result::Result<f64, String> {
        self.numbers
            .get(name)
            .copied()
            .ok_or_else(|| format!("no {name}"))
    }

    pub fn tensor(&self, name: &str) -> std::result::Result<&HostTensor, String> {
        self.tensors.get(name).ok_or_else(|| format!("no {name}"))
    }
}

/// Where a render stands after [`iteration`](Self::iteration) iterations.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Iterations done: a resumed render goes on with the next one.
    pub iteration: u32,
    /// Whose render this is (the farm: the task id), checked on resuming.
    pub label: String,
    pub optimizer: OptimizerKind,
    /// The iterate, `[1, 3, H, W]`.
    pub x: HostTensor,
    pub state: OptimizerState,
    /// The loss rows logged so far.
    pub losses: Vec<LossRecord>,
    /// The early-stopping window: the latest totals, oldest first.
    pub recent: Vec<f64>,
    /// beta, as given or as `auto` chose it.
    pub style_weight: f64,
}

/// Why bytes are not a checkpoint that can be resumed from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("not a usable checkpoint: {0}")]
pub struct BadCheckpoint(pub String);

fn bad(reason: impl Into<String>) -> BadCheckpoint {
    BadCheckpoint(reason.into())
}

fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        _ => return None,
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        _ => return None,
    })
}

/// f64s as a host tensor of `shape`.
fn f64s(values: &[f64], shape: Vec<i64>) -> HostTensor {
    HostTensor {
        kind: Kind::Double,
        shape,
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn to_f64s(tensor: &HostTensor) -> std::result::Result<Vec<f64>, BadCheckpoint> {
    if tensor.kind != Kind::Double {
        return Err(bad("numbers that are not f64"));
    }
    Ok(tensor
        .bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect())
}

/// The digest of a checkpoint's contents: every metadata entry but the digest
/// itself, then every array (name, dtype, shape and bytes), each in name order.
fn digest<'a>(
    metadata: &BTreeMap<String, String>,
    arrays: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
) -> String {
    let mut hash = Sha256::new();
    for (key, value) in metadata {
        hash.update(key.as_bytes());
        hash.update([0]);
        hash.update(value.as_bytes());
        hash.update([0]);
    }
    for (name, dtype, shape, data) in arrays {
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(dtype.to_string().as_bytes());
        hash.update([0]);
        hash.update((shape.len() as u64).to_le_bytes());
        for &dim in shape {
            hash.update((dim as u64).to_le_bytes());
        }
        hash.update((data.len() as u64).to_le_bytes());
        hash.update(data);
    }
    let bytes = hash.finalize();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const DIGEST_KEY: &str = "sha256";
const STATE_PREFIX: &str = "state.";
const NUMBER_PREFIX: &str = "number.";

fn optimizer_name(kind: OptimizerKind) -> &'static str {
    match kind {
        OptimizerKind::Adam => "adam",
        OptimizerKind::Lbfgs => "lbfgs",
    }
}

impl Checkpoint {
    /// The checkpoint as one safetensors file (see the module's documentation).
    pub fn to_bytes(&self) -> std::result::Result<Vec<u8>, BadCheckpoint> {
        // The small arrays are made here; the large ones (the iterate, the
        // optimiser's tensors) are borrowed, not copied again.
        let mut made: BTreeMap<String, HostTensor> = BTreeMap::new();
        let rows: Vec<f64> = self
            .losses
            .iter()
            .flat_map(|r| [f64::from(r.iteration), r.content, r.style, r.tv, r.total])
            .collect();
        made.insert(
            "losses".into(),
            f64s(&rows, vec![self.losses.len() as i64, 5]),
        );
        made.insert(
            "recent".into(),
            f64s(&self.recent, vec![self.recent.len() as i64]),
        );
        made.insert("style_weight".into(), f64s(&[self.style_weight], vec![1]));
        for (name, &value) in &self.state.numbers {
            made.insert(format!("{NUMBER_PREFIX}{name}"), f64s(&[value], vec![1]));
        }
        let mut arrays: BTreeMap<String, &HostTensor> = BTreeMap::new();
        arrays.insert("x".into(), &self.x);
        for (name, tensor) in &self.state.tensors {
            arrays.insert(format!("{STATE_PREFIX}{name}"), tensor);
        }
        for (name, tensor) in &made {
            arrays.insert(name.clone(), tensor);
        }
        let mut views = Vec::new();
        for (name, tensor) in &arrays {
            let dtype = dtype_of(tensor.kind).ok_or_else(|| {
                bad(format!(
                    "{name}: no safetensors dtype for {:?}",
                    tensor.kind
                ))
            })?;
            let shape = tensor.shape.iter().map(|&d| d as usize).collect();
            let view = safetensors::tensor::TensorView::new(dtype, shape, &tensor.bytes)
                .map_err(|e| bad(format!("{name}: {e}")))?;
            views.push((name.clone(), view));
        }
        let mut metadata = BTreeMap::from([
            ("format".to_owned(), FORMAT.to_owned()),
            ("version".to_owned(), VERSION.to_owned()),
            ("iteration".to_owned(), self.iteration.to_string()),
            (
                "optimizer".to_owned(),
                optimizer_name(self.optimizer).to_owned(),
            ),
            ("label".to_owned(), self.label.clone()),
        ]);
        let sum = digest(
            &metadata,
            views
                .iter()
                .map(|(name, v)| (name.as_str(), v.dtype(), v.shape(), v.data())),
        );
        metadata.insert(DIGEST_KEY.to_owned(), sum);
        safetensors::tensor::serialize(views, Some(metadata.into_iter().collect()))
            .map_err(|e| bad(e.to_string()))
    }

    /// Reads what [`to_bytes`](Self::to_bytes) wrote, refusing anything
    /// truncated, altered or of another format.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Checkpoint, BadCheckpoint> {
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("header: {e}")))?;
        let file = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let mut metadata: BTreeMap<String, String> = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        if metadata.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad("not a pastiche checkpoint"));
        }
        if metadata.get("version").map(String::as_str) != Some(VERSION) {
            return Err(bad(format!(
                "version {:?}, not {VERSION}",
                metadata.get("version")
            )));
        }
        let stated = metadata
            .remove(DIGEST_KEY)
            .ok_or_else(|| bad("no digest"))?;
        let mut tensors = file.tensors();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let actual = digest(
            &metadata,
            tensors
                .iter()
                .map(|(name, v)| (name.as_str(), v.dtype(), v.shape(), v.data())),
        );
        if actual != stated {
            return Err(bad("its digest does not match its contents (damaged)"));
        }
        let field = |key: &str| {
            metadata
                .get(key)
                .cloned()
                .ok_or_else(|| bad(format!("no {key}")))
        };
        let iteration = field("iteration")?
            .parse()
            .map_err(|_| bad("iteration is not a number"))?;
        let optimizer = match field("optimizer")?.as_str() {
            "adam" => OptimizerKind::Adam,
            "lbfgs" => OptimizerKind::Lbfgs,
            other => return Err(bad(format!("unknown optimizer {other}"))),
        };
        let mut arrays = BTreeMap::new();
        for (name, view) in tensors {
            let kind = kind_of(view.dtype())
                .ok_or_else(|| bad(format!("{name}: dtype {}", view.dtype())))?;
            arrays.insert(
                name,
                HostTensor {
                    kind,
                    shape: view.shape().iter().map(|&d| d as i64).collect(),
                    bytes: view.data().to_vec(),
                },
            );
        }
        let mut take = |name: &str| arrays.remove(name).ok_or_else(|| bad(format!("no {name}")));
        let x = take("x")?;
        let rows = to_f64s(&take("losses")?)?;
        let recent = to_f64s(&take("recent")?)?;
        let style_weight = *to_f64s(&take("style_weight")?)?
            .first()
            .ok_or_else(|| bad("no style weight"))?;
        let losses = rows
            .chunks_exact(5)
            .map(|row| LossRecord {
                iteration: row[0] as u32,
                content: row[1],
                style: row[2],
                tv: row[3],
                total: row[4],
            })
            .collect();
        let mut state = OptimizerState::default();
        for (name, tensor) in arrays {
            if let Some(name) = name.strip_prefix(STATE_PREFIX) {
                state.tensors.insert(name.to_owned(), tensor);
            } else if let Some(name) = name.strip_prefix(NUMBER_PREFIX) {
                let value = *to_f64s(&tensor)?
                    .first()
                    .ok_or_else(|| bad(format!("{name} is empty")))?;
                state.numbers.insert(name.to_owned(), value);
            } else {
                return Err(bad(format!("unknown array {name}")));
            }
        }
        Ok(Checkpoint {
            iteration,
            label: field("label")?,
            optimizer,
            x,
            state,
            losses,
            recent,
            style_weight,
        })
    }

    /// Whether a render of `params` starting from an iterate shaped
    /// `init_shape` can resume from this checkpoint.
    pub fn check_fits(
        &self,
        params: &RenderParams,
        init_shape: &[i64],
    ) -> std::result::Result<(), BadCheckpoint> {
        if self.optimizer != params.optimizer.kind {
            return Err(bad(format!(
                "written for {}, the render uses {}",
                optimizer_name(self.optimizer),
                optimizer_name(params.optimizer.kind)
            )));
        }
        if self.iteration == 0 || self.iteration > params.iterations {
            return Err(bad(format!(
                "iteration {} of a render of {}",
                self.iteration, params.iterations
            )));
        }
        if self.x.shape != init_shape || self.x.kind != Kind::Float {
            return Err(bad(format!(
                "an iterate of {:?} {:?}, the render's is {init_shape:?} Float",
                self.x.shape, self.x.kind
            )));
        }
        let logged = (0..self.iteration).filter(|&i| params.logs_at(i)).count();
        if self.losses.len() != logged {
            return Err(bad(format!(
                "{} loss rows after {} iterations, not {logged}",
                self.losses.len(),
                self.iteration
            )));
        }
        let window = if params.stop_tolerance > 0.0 {
            (params.stop_window as usize + 1).min(self.iteration as usize)
        } else {
            0
        };
        if self.recent.len() != window {
            return Err(bad(format!(
                "an early-stopping window of {}, not {window}",
                self.recent.len()
            )));
        }
        if !self.style_weight.is_finite() {
            return Err(bad("a style weight that is not finite"));
        }
        crate::optim::check_state(&params.optimizer, &self.state, self.x.numel())
            .map_err(|reason| bad(format!("optimiser state: {reason}")))
    }
}

/// The metadata entries of `bytes`' header, if it is a safetensors file (for
/// tests and tools that look inside a checkpoint).
pub fn metadata_of(bytes: &[u8]) -> Option<HashMap<String, String>> {
    SafeTensors::read_metadata(bytes)
        .ok()
        .and_then(|(_, m)| m.metadata().clone())
}
