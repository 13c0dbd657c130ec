//! Process-wide allocator tuning and the guard that refuses renders too big to fit.

use pastiche_spec::{Backbone, Precision};
use tch::Device;

use crate::backbone::FeatureNet;
use crate::error::{EngineError, Result};
use crate::image_io::Extent;

/// Keeps freed tensor memory in the process instead of handing it back to the OS.
///
/// glibc serves large allocations with mmap and trims the heap eagerly, so every
/// optimisation step would map, fault in and unmap the same hundreds of megabytes;
/// measured at 512 px, that made an iteration ~15% slower than PyTorch's. Call once,
/// at start-up, before libtorch allocates.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // Safety: mallopt only sets allocator parameters; called before other threads
    // allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Bytes a render is expected to need at its peak: the activations autograd keeps
/// for the pastiche's backward pass, their gradients, or the style image's pass;
/// each element and weight of `precision`'s size.
pub fn estimate_bytes(
    backbone: Backbone,
    precision: Precision,
    deepest: usize,
    content: Extent,
    style: Extent,
) -> u64 {
    let element = precision.bytes();
    let elements = |e: Extent| {
        FeatureNet::activation_elements(backbone, e.height.into(), e.width.into(), deepest) as u64
    };
    let (pastiche, style) = (elements(content), elements(style));
    // Activations plus as much again for gradients in the backward pass.
    element * ((2 * pastiche).max(style) + weights_elements(backbone))
}

fn weights_elements(backbone: Backbone) -> u64 {
    match backbone {
        Backbone::Vgg16 => 14_714_688,
        Backbone::Vgg19 => 20_024_384,
        Backbone::GoogLeNet => 5_600_000,
        Backbone::InceptionV3 => 21_785_568,
    }
}

/// Memory the OS says it can give this process now (Linux's MemAvailable).
fn available_host_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses a render whose estimate exceeds the memory available on `device`.
///
/// On the CPU this reads MemAvailable; libtorch does not report GPU memory through
/// tch, so on a GPU an oversized render fails at its first allocation instead, with
/// libtorch's out-of-memory error.
pub fn check_fits(device: Device, needed: u64, size: u32) -> Result<()> {
    if device != Device::Cpu {
        return Ok(());
    }
    let Some(available) = available_host_bytes() else {
        return Ok(());
    };
    if needed > available {
        return Err(EngineError::TooLarge(format!(
            "size {size} needs about {:.1} GiB but only {:.1} GiB of memory is available; use a smaller --size",
            gib(needed),
            gib(available)
        )));
    }
    Ok(())
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}
