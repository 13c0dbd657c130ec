//! PyTorch state dicts as `torch.save` writes them, in both of its formats:
//!
//! - zip (the default since PyTorch 1.6): `<archive>/data.pkl`, the pickled dict whose
//!   tensors name their storages by key, and `<archive>/data/<key>`, each storage's
//!   raw little-endian bytes; entries are stored, not compressed.
//! - legacy (`_use_new_zipfile_serialization=False`): five pickles in a row (a magic
//!   number, the protocol version, system info, the dict, the list of storage keys),
//!   then each storage in that order as an 8-byte element count and its bytes.

use std::collections::HashMap;

use tch::{Kind, Tensor};

use super::pickle::{self, TensorRef, Value};

/// The magic number a legacy torch file's first pickle holds (80 bits wide).
const LEGACY_MAGIC: u128 = 0x1950a86a20f9469cfc6c;

/// Whether `bytes` start as a zip archive does.
pub(crate) fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// The tensors of the state dict in a torch file, by name; entries that are not
/// tensors are left out.
pub(crate) fn read_state_dict(bytes: &[u8]) -> Result<HashMap<String, Tensor>, String> {
    if is_zip(bytes) {
        read_zip(bytes)
    } else if bytes.first() == Some(&0x80) {
        read_legacy(bytes)
    } else {
        Err("not a PyTorch file (neither a zip archive nor a pickle)".into())
    }
}

fn read_zip(bytes: &[u8]) -> Result<HashMap<String, Tensor>, String> {
    let entries = zip_entries(bytes)?;
    let (pickle_name, pickle_bytes) = entries
        .iter()
        .find(|(name, _)| name.ends_with("/data.pkl"))
        .ok_or("a zip archive without a data.pkl: not a torch.save file")?;
    let archive = pickle_name.trim_end_matches("data.pkl");
    if let Some((_, order)) = entries
        .iter()
        .find(|(name, _)| *name == format!("{archive}byteorder"))
    {
        if *order != b"little" {
            return Err("a big-endian file, which this reader does not take".into());
        }
    }
    let (dict, _) = pickle::load(pickle_bytes)?;
    let storages: HashMap<&str, &[u8]> = entries
        .iter()
        .filter_map(|(name, data)| {
            Some((name.strip_prefix(archive)?.strip_prefix("data/")?, *data))
        })
        .collect();
    tensors_of(dict, |key| storages.get(key).copied())
}

fn read_legacy(bytes: &[u8]) -> Result<HashMap<String, Tensor>, String> {
    let mut at = 0;
    let mut next = || -> Result<Value, String> {
        let (value, used) = pickle::load(&bytes[at..])?;
        at += used;
        Ok(value)
    };
    if next()? != Value::BigInt(LEGACY_MAGIC.to_le_bytes()[..10].to_vec()) {
        return Err("a pickle that is not a legacy torch file".into());
    }
    let _protocol = next()?;
    let _sys_info = next()?;
    let dict = next()?;
    let Value::List(keys) = next()? else {
        return Err("a legacy torch file without its list of storage keys".into());
    };
    // Each storage: an 8-byte little-endian element count, then its elements.
    let element_sizes = element_sizes_by_key(&dict);
    let mut storages = HashMap::new();
    for key in keys {
        let Value::Str(key) = key else {
            return Err("a storage key that is not a string".into());
        };
        let element_size = *element_sizes
            .get(key.as_str())
            .ok_or_else(|| format!("storage '{key}' is used by no tensor"))?;
        let count = bytes
            .get(at..at + 8)
            .ok_or_else(|| format!("the file ends before storage '{key}'"))?;
        let count = u64::from_le_bytes(count.try_into().unwrap()) as usize;
        let len = count
            .checked_mul(element_size)
            .ok_or_else(|| format!("storage '{key}' is impossibly large"))?;
        let data = bytes
            .get(at + 8..at + 8 + len)
            .ok_or_else(|| format!("the file ends inside storage '{key}'"))?;
        at += 8 + len;
        storages.insert(key, data);
    }
    tensors_of(dict, |key| storages.get(key).copied())
}

/// The element size of every storage the dict's tensors use.
fn element_sizes_by_key(dict: &Value) -> HashMap<String, usize> {
    let Value::Dict(entries) = dict else {
        return HashMap::new();
    };
    entries
        .iter()
        .filter_map(|(_, value)| match value {
            Value::Tensor(t) => Some((t.storage_key.clone(), kind_of(&t.storage_kind).ok()?.1)),
            _ => None,
        })
        .collect()
}

/// A storage type's libtorch kind and element size.
fn kind_of(storage_kind: &str) -> Result<(Kind, usize), String> {
    Ok(match storage_kind {
        "FloatStorage" => (Kind::Float, 4),
        "DoubleStorage" => (Kind::Double, 8),
        "HalfStorage" => (Kind::Half, 2),
        "BFloat16Storage" => (Kind::BFloat16, 2),
        "LongStorage" => (Kind::Int64, 8),
        "IntStorage" => (Kind::Int, 4),
        "ShortStorage" => (Kind::Int16, 2),
        "CharStorage" => (Kind::Int8, 1),
        "ByteStorage" => (Kind::Uint8, 1),
        "BoolStorage" => (Kind::Bool, 1),
        other => return Err(format!("storage type {other} is not one this reader takes")),
    })
}

fn tensors_of<'a>(
    dict: Value,
    storage: impl Fn(&str) -> Option<&'a [u8]>,
) -> Result<HashMap<String, Tensor>, String> {
    let Value::Dict(entries) = dict else {
        return Err("the file holds no dict of tensors (a state dict)".into());
    };
    let mut tensors = HashMap::new();
    for (name, value) in entries {
        let (Value::Str(name), Value::Tensor(tensor)) = (name, value) else {
            continue; // not a parameter: e.g. a dict's `_metadata`
        };
        let data = storage(&tensor.storage_key)
            .ok_or_else(|| format!("tensor '{name}': its storage is missing"))?;
        let built = build(&tensor, data).map_err(|e| format!("tensor '{name}': {e}"))?;
        tensors.insert(name, built);
    }
    Ok(tensors)
}

/// The tensor `reference` views in a storage's bytes, checked to lie inside them.
fn build(reference: &TensorRef, data: &[u8]) -> Result<Tensor, String> {
    let (kind, element_size) = kind_of(&reference.storage_kind)?;
    let elements = (data.len() / element_size) as i64;
    if data.len() % element_size != 0 {
        return Err(format!("its storage of {} bytes is cut short", data.len()));
    }
    let in_range = reference.size.len() == reference.stride.len()
        && reference.offset >= 0
        && reference.size.iter().all(|&d| d >= 0)
        && reference.stride.iter().all(|&s| s >= 0)
        && (reference.size.contains(&0)
            || reference.offset
                + reference
                    .size
                    .iter()
                    .zip(&reference.stride)
                    .map(|(d, s)| (d - 1) * s)
                    .sum::<i64>()
                < elements);
    if !in_range {
        return Err(format!(
            "size {:?}, stride {:?} and offset {} reach past its storage of {elements} elements",
            reference.size, reference.stride, reference.offset
        ));
    }
    let flat = Tensor::f_from_data_size(data, &[elements], kind).map_err(|e| e.to_string())?;
    flat.f_as_strided(&reference.size, &reference.stride, reference.offset)
        .and_then(|t| t.f_contiguous())
        .map_err(|e| e.to_string())
}

/// A zip archive's entries, by name, with their bytes: slices of `bytes`, since
/// torch.save stores its entries uncompressed. The archive is read by the `zip`
/// crate that tch already builds (zip64 included: torch.save writes it).
fn zip_entries(bytes: &[u8]) -> Result<Vec<(String, &[u8])>, String> {
    let corrupt = |e: zip::result::ZipError| format!("not a readable zip archive ({e})");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(corrupt)?;
    let mut entries = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        let entry = archive.by_index_raw(index).map_err(corrupt)?;
        if entry.compression() != zip::CompressionMethod::Stored {
            return Err(format!(
                "zip entry '{}' is compressed; torch.save stores its entries",
                entry.name()
            ));
        }
        let start = entry.data_start() as usize;
        let data = bytes
            .get(start..start + entry.size() as usize)
            .ok_or("the zip archive is cut short or corrupt")?;
        entries.push((entry.name().to_owned(), data));
    }
    Ok(entries)
}
