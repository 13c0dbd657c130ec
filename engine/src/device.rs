//! Which device a render runs on: `cpu`, `cuda:N` (or `cuda` for `cuda:0`), or `auto`.

use tch::Device;

use crate::error::{EngineError, Result};

/// Resolves a device name, refusing a GPU that this process cannot see.
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim().to_ascii_lowercase();
    match name.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available()),
        _ => {
            let index = match name.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|i| i.parse::<usize>().ok())
                    .ok_or_else(|| {
                        EngineError::Device(name.clone(), " (expected cpu, cuda:N or auto)")
                    })?,
                None => return Err(EngineError::Device(name, " (expected cpu, cuda:N or auto)")),
            };
            let visible = tch::Cuda::device_count() as usize;
            if index >= visible {
                let why = if visible == 0 {
                    " (this process sees no GPU; is this a `cuda` build with a CUDA-enabled libtorch?)"
                } else {
                    " (no GPU with that index)"
                };
                return Err(EngineError::Device(name, why));
            }
            Ok(Device::Cuda(index))
        }
    }
}

/// The name `parse_device` accepts for `device`.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".to_owned(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_auto_resolve_and_junk_is_refused() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert_eq!(parse_device("CPU").unwrap(), Device::Cpu);
        let auto = parse_device("auto").unwrap();
        assert!(auto == Device::Cpu || auto == Device::Cuda(0));
        let err = parse_device("tpu").unwrap_err().to_string();
        assert!(err.contains("tpu"), "{err}");
        assert!(parse_device("cuda:x").is_err());
    }

    #[test]
    fn a_gpu_that_is_not_there_is_refused() {
        let missing = tch::Cuda::device_count() as usize;
        let err = parse_device(&format!("cuda:{missing}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("cuda:{missing}")), "{err}");
    }
}
