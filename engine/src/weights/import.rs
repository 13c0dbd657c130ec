//! `pastiche weights import`: a backbone's parameters out of an ONNX model, a PyTorch
//! state dict or a safetensors file, checked as a render would load them, and
//! written as a safetensors file with torchvision's names and what the file is in
//! its metadata.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::Path;

use memmap2::Mmap;
use pastiche_spec::Backbone;
use safetensors::SafeTensors;
use tch::Tensor;

use super::{describe, onnx, pth, WeightsInfo};
use crate::backbone::weights::{convention_of, key, metadata_of, tensor_of, ImportedParams};
use crate::backbone::{check_params, has_transform_input, vgg_convs, InputConvention};
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
        Format::Onnx if vgg_convs(backbone).is_empty() => {
            return Err(refuse(format!(
                "{} cannot be imported from ONNX: its batch-normalised inception \
                 blocks do not map onto torchvision's names; import a .pth or \
                 .safetensors file instead",
                backbone.title()
            )))
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
    let mut metadata = BTreeMap::from([
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
    if has_transform_input(backbone) {
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

/// Writes float32 tensors and metadata to `to` as a safetensors file, through a
/// temporary file beside it. The header is written here rather than by the
/// safetensors crate, whose metadata map has no fixed order: the same import must
/// give the same bytes, because a weights file's digest is part of task ids.
fn write(to: &Path, tensors: &[(String, Tensor)], metadata: BTreeMap<&str, String>) -> Result<()> {
    let cannot = |cause: std::io::Error| EngineError::Write {
        path: to.to_owned(),
        cause,
    };
    let dir = match to.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir,
        None => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(cannot)?;
    let mut header = BTreeMap::from([("__metadata__".to_owned(), serde_json::json!(metadata))]);
    let mut data = Vec::new();
    for (name, tensor) in tensors {
        let values = Vec::<f32>::try_from(tensor.f_flatten(0, -1)?)?;
        let start = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": "F32",
                "shape": tensor.size(),
                "data_offsets": [start, data.len()],
            }),
        );
    }
    let mut header = serde_json::to_vec(&header).expect("strings and numbers serialise");
    // The format pads the header with spaces so that the data is 8-byte aligned.
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(cannot)?;
    file.write_all(&(header.len() as u64).to_le_bytes())
        .and_then(|()| file.write_all(&header))
        .and_then(|()| file.write_all(&data))
        .map_err(cannot)?;
    // The temporary file is private; weights are not secret.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(cannot)?;
    }
    file.persist(to).map_err(|e| cannot(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A weights file's digest is part of the ids of the tasks that use it, so the
    /// same import must write the same bytes, whatever order maps iterate in.
    #[test]
    fn the_same_tensors_and_metadata_write_the_same_bytes_a_loader_reads() {
        let dir = tempfile::tempdir().unwrap();
        let tensors = vec![
            (
                "features.0.weight".to_owned(),
                Tensor::from_slice(&[1.0f32, -2.0, 3.5, 0.25]).reshape([1, 1, 2, 2]),
            ),
            ("features.0.bias".to_owned(), Tensor::from_slice(&[0.5f32])),
        ];
        let metadata = || {
            BTreeMap::from([
                (key::BACKBONE, "vgg16".to_owned()),
                (key::CONVENTION, "caffe".to_owned()),
                (key::SOURCE, "a test".to_owned()),
                (key::LICENCE, "MIT".to_owned()),
            ])
        };
        let (a, b) = (
            dir.path().join("a.safetensors"),
            dir.path().join("b.safetensors"),
        );
        write(&a, &tensors, metadata()).unwrap();
        write(&b, &tensors, metadata()).unwrap();
        let bytes = std::fs::read(&a).unwrap();
        assert_eq!(bytes, std::fs::read(&b).unwrap());

        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(header_len % 8, 0, "data is 8-byte aligned");
        let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
        let keys: Vec<usize> = ["backbone", "convention", "licence", "source"]
            .iter()
            .map(|k| header.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(keys.is_sorted(), "metadata in a fixed order: {header}");

        let (read, recorded) = read_safetensors(&a, &bytes).unwrap();
        assert_eq!(recorded.get(key::LICENCE).map(String::as_str), Some("MIT"));
        for (name, tensor) in &tensors {
            assert!(read[name].equal(tensor), "{name}");
        }
    }
}
