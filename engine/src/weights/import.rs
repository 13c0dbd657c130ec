//! `pastiche weights import`: a backbone's parameters out of an ONNX model, a PyTorch
//! state dict or a safetensors file, checked as a render would load them, and
//! written as a safetensors file with torchvision's names and what the file is in
//! its metadata.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;
use pastiche_spec::Backbone;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use tch::Tensor;

use super::{describe, onnx, pth, WeightsInfo};
use crate::backbone::weights::{convention_of, key, metadata_of, tensor_of, ImportedParams};
use crate::backbone::{check_params, vgg_convs, InputConvention};
use crate::error::{EngineError, Result};

/// What an import is told beyond the file itself.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub backbone: Backbone,
    /// The input convention the network was trained with. Safetensors files written
    /// by Pastiche record it; PyTorch files are taken to be torchvision's; an ONNX
    /// file does not say, so it must be given.
    pub convention: Option<InputConvention>,
    /// Where the weights come from, for `weights list`; default: the file's name.
    pub source: Option<String>,
    pub licence: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Onnx,
    Safetensors,
    Torch,
}

/// Converts `from` into a checked safetensors file at `to` (written whole or not at
/// all) and describes it.
pub fn import(from: &Path, to: &Path, options: &ImportOptions) -> Result<WeightsInfo> {
    let refuse = |reason: String| EngineError::Weights {
        path: from.to_owned(),
        reason,
    };
    let file = File::open(from).map_err(|e| refuse(e.to_string()))?;
    // Safety: only read, and dropped before this function returns.
    let bytes = unsafe { Mmap::map(&file) }.map_err(|e| refuse(e.to_string()))?;
    let backbone = options.backbone;
    let format = format_of(from, &bytes)?;
    let (tensors, recorded) = match format {
        Format::Onnx if backbone == Backbone::GoogLeNet => {
            return Err(refuse(
                "GoogLeNet cannot be imported from ONNX: its batch-normalised inception \
                 blocks do not map onto torchvision's names; import a .pth or \
                 .safetensors file instead"
                    .into(),
            ))
        }
        Format::Onnx => {
            let convs = onnx::read_vgg_convs(from, &vgg_convs(backbone))?;
            (convs, HashMap::new())
        }
        Format::Torch => (
            pth::read_state_dict(&bytes).map_err(refuse)?,
            HashMap::new(),
        ),
        Format::Safetensors => read_safetensors(from, &bytes)?,
    };
    let convention = match (options.convention, recorded.contains_key(key::CONVENTION)) {
        (Some(given), _) => given,
        (None, true) => convention_of(from, &recorded)?,
        (None, false) if format == Format::Onnx => {
            return Err(refuse(
                "an ONNX file does not record how its inputs were normalised: say \
                 --convention caffe (Keras's and Caffe's VGGs) or torchvision"
                    .into(),
            ))
        }
        (None, false) => InputConvention::Torchvision,
    };
    let transform_input = recorded.get(key::TRANSFORM_INPUT).map(String::as_str);
    let mut params = ImportedParams {
        path: from,
        tensors,
        transform_input: transform_input.is_none_or(|v| v == "true"),
        convention,
        used: Vec::new(),
    };
    check_params(backbone, &mut params)?;

    let file_name = from.file_name().unwrap_or_default().to_string_lossy();
    let mut metadata = HashMap::from([
        (key::BACKBONE, backbone.name().to_owned()),
        (key::CONVENTION, convention.name().to_owned()),
        (
            key::SOURCE,
            options
                .source
                .clone()
                .or_else(|| recorded.get(key::SOURCE).cloned())
                .unwrap_or_else(|| format!("imported from {file_name}")),
        ),
        (
            key::LICENCE,
            options
                .licence
                .clone()
                .or_else(|| recorded.get(key::LICENCE).cloned())
                .unwrap_or_else(|| "unknown".into()),
        ),
    ]);
    if backbone == Backbone::GoogLeNet {
        metadata.insert(key::TRANSFORM_INPUT, params.transform_input.to_string());
    }
    write(to, &params.used, metadata)?;
    describe(to)
}

/// The format by the file's name, or for PyTorch's many suffixes by its first bytes.
fn format_of(path: &Path, bytes: &[u8]) -> Result<Format> {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    Ok(match extension.to_ascii_lowercase().as_str() {
        "onnx" => Format::Onnx,
        "safetensors" => Format::Safetensors,
        _ if pth::is_zip(bytes) || bytes.first() == Some(&0x80) => Format::Torch,
        _ => {
            return Err(EngineError::Weights {
                path: path.to_owned(),
                reason: "not a format Pastiche imports (.onnx, .safetensors, or a PyTorch \
                         .pth/.pt state dict)"
                    .into(),
            })
        }
    })
}

fn read_safetensors(
    path: &Path,
    bytes: &[u8],
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let refuse = |reason: String| EngineError::Weights {
        path: path.to_owned(),
        reason,
    };
    let metadata = metadata_of(path, bytes)?;
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| refuse(format!("not a safetensors file ({e})")))?;
    let tensors = file
        .iter()
        .map(|(name, view)| {
            let tensor = tensor_of(&view).map_err(|e| refuse(format!("tensor '{name}': {e}")))?;
            Ok((name.to_owned(), tensor))
        })
        .collect::<Result<_>>()?;
    Ok((tensors, metadata))
}

/// Writes float32 tensors and metadata to `to` (through a temporary file beside it).
fn write(to: &Path, tensors: &[(String, Tensor)], metadata: HashMap<&str, String>) -> Result<()> {
    let cannot = |cause: std::io::Error| EngineError::Write {
        path: to.to_owned(),
        cause,
    };
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(cannot)?;
    }
    let mut data = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let values = Vec::<f32>::try_from(tensor.f_flatten(0, -1)?)?;
        let shape: Vec<usize> = tensor.size().iter().map(|&d| d as usize).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        data.push((name.as_str(), shape, bytes));
    }
    let views = data
        .iter()
        .map(|(name, shape, bytes)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
                .expect("the shape matches the bytes, both from one tensor");
            (*name, view)
        })
        .collect::<Vec<_>>();
    let metadata = metadata
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    safetensors::serialize_to_file(views, Some(metadata), to)
        .map_err(|e| cannot(std::io::Error::other(e.to_string())))?;
    // Written through a temporary file, which is private; weights are not secret.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o644)).map_err(cannot)?;
    }
    Ok(())
}
