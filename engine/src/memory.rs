//! Process-wide allocator tuning, and the memory model that refuses a render too
//! big to fit before anything large is allocated, saying what would fit.
//!
//! The model counts what a render holds at its peak ([`Footprint`]): the frozen
//! weights; the activations autograd keeps for the pastiche's backward pass;
//! the optimiser's state (Adam's moments; L-BFGS's history, `2 x history_size`
//! images); and the images, targets and gradient. It is set against the memory
//! the render may still take ([`Headroom`]): on the CPU the smaller of Linux's
//! MemAvailable and what the process's cgroup limit leaves (a Kubernetes pod's
//! limit); on CUDA the device's free memory, from the CUDA runtime.

use std::path::{Path, PathBuf};

use pastiche_spec::{Backbone, OptimizerKind, OptimizerSpec, Precision};
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

/// What decides a render's memory: its shapes, not its values.
#[derive(Debug, Clone)]
pub struct RenderShape {
    pub backbone: Backbone,
    /// Index of the deepest layer the losses use: the forward pass stops there.
    pub deepest: usize,
    /// The pastiche's extent (the content image's, resized).
    pub content: Extent,
    /// The largest style image (a blend's images are read one at a time).
    pub style: Extent,
    pub optimizer: OptimizerSpec,
    pub iterations: u32,
    /// The backbone's weights and activations: 4 bytes an element, or 2 in
    /// bf16. The images, the gradient and the optimiser stay fp32.
    pub precision: Precision,
    /// Renders optimised together as one batch (1: a render alone).
    pub items: u32,
}

/// The bytes a render holds at its peak, by what holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    pub weights: u64,
    /// The pastiche's forward pass, kept for the backward pass, and the
    /// gradients in flight; or the style image's pass, when that is larger.
    pub activations: u64,
    /// Adam's moments, or L-BFGS's history and search vectors.
    pub optimizer: u64,
    /// The content, style and init images, the iterate, its gradient, the targets.
    pub images: u64,
    /// libtorch's own working memory.
    pub runtime: u64,
}

const FLOAT: u64 = 4;

/// Bytes per element of the activations the forward pass creates, when
/// autograd keeps them for the backward pass: the forward tensors (ReLUs work
/// in place), and the backward pass's gradients, which live only a layer or two
/// at a time. Fitted to measured peaks on the CPU (VGG19 to relu5_1, 96 to 384
/// px: `engine/tests/memory_model.rs`).
const ACTIVATION_BYTES_WITH_GRAD: f64 = 1.4 * FLOAT as f64;

/// What libtorch takes at a process's first render besides the tensors: its
/// allocator's and the convolutions' working memory, autograd's threads.
/// Measured on the CPU as above.
const RUNTIME_BYTES: u64 = 40 << 20;

/// Images of the pastiche's size besides the optimiser's: the iterate, its
/// gradient, the content image and the init, and a step's temporaries.
const PASTICHE_COPIES: u64 = 6;

impl RenderShape {
    pub fn footprint(&self) -> Footprint {
        let items = u64::from(self.items.max(1));
        let pixels = |e: Extent| 3 * u64::from(e.width) * u64::from(e.height);
        let activations = |e: Extent| {
            FeatureNet::activation_elements(
                self.backbone,
                e.height.into(),
                e.width.into(),
                self.deepest,
            ) as u64
        };
        let pastiche = pixels(self.content);
        // Not measured in bf16: its half-size elements are assumed to halve it.
        let narrow = match self.precision {
            Precision::Fp32 => 1.0,
            Precision::Bf16 => 0.5,
        };
        let with_grad =
            (activations(self.content) as f64 * ACTIVATION_BYTES_WITH_GRAD * narrow) as u64 * items;
        // Targets are computed without grad: a pass keeps little beyond its outputs.
        let style_pass = (activations(self.style) as f64 * FLOAT as f64 * narrow) as u64;
        let optimizer = match self.optimizer.kind {
            // Two moments, and the step's temporaries (squared gradient, denominator).
            OptimizerKind::Adam => 4 * pastiche,
            // A pair (s, y) per remembered iteration, up to history_size; the
            // direction, the previous gradient and the line search's copies.
            OptimizerKind::Lbfgs => {
                let pairs = (self.optimizer.history_size as u64).min(self.iterations.into());
                (2 * pairs + 4) * pastiche
            }
        };
        Footprint {
            // bf16 keeps the cast copy (the fp32 weights are dropped once cast).
            weights: (weights_bytes(self.backbone) as f64 * narrow) as u64,
            activations: with_grad.max(style_pass),
            optimizer: optimizer * FLOAT * items,
            images: (PASTICHE_COPIES * pastiche * items + pixels(self.style)) * FLOAT,
            runtime: RUNTIME_BYTES,
        }
    }
}

impl Footprint {
    pub fn total(&self) -> u64 {
        self.weights + self.activations + self.optimizer + self.images + self.runtime
    }

    /// What the render still has to take once its backbone is loaded, as it
    /// is when the check is made (the headroom no longer counts the weights).
    pub fn beyond_the_net(&self) -> u64 {
        self.total() - self.weights
    }
}

impl std::fmt::Display for Footprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} GiB (activations {:.2}, optimiser {:.2}, images {:.2}, weights {:.2}, libtorch {:.2})",
            gib(self.total()),
            gib(self.activations),
            gib(self.optimizer),
            gib(self.images),
            gib(self.weights),
            gib(self.runtime)
        )
    }
}

fn weights_bytes(backbone: Backbone) -> u64 {
    FLOAT
        * match backbone {
            Backbone::Vgg16 => 14_714_688,
            Backbone::Vgg19 => 20_024_384,
            Backbone::GoogLeNet => 5_600_000,
            Backbone::InceptionV3 => 21_785_568,
        }
}

/// Memory a render may still take, and what says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headroom {
    pub bytes: u64,
    pub source: &'static str,
}

/// The headroom on `device`, where it can be known.
pub fn headroom(device: Device) -> Option<Headroom> {
    match device {
        Device::Cpu => host_headroom(&HostFiles::under(Path::new("/"))),
        Device::Cuda(index) => cuda_free_bytes(index).map(|bytes| Headroom {
            bytes,
            source: "the GPU's free memory",
        }),
        _ => None,
    }
}

/// Where Linux says how much memory there is; tests lay out a directory the same.
pub struct HostFiles {
    meminfo: PathBuf,
    own_cgroup: PathBuf,
    cgroup_root: PathBuf,
}

impl HostFiles {
    /// `/proc/meminfo`, `/proc/self/cgroup` and `/sys/fs/cgroup` under `root`.
    pub fn under(root: &Path) -> HostFiles {
        HostFiles {
            meminfo: root.join("proc/meminfo"),
            own_cgroup: root.join("proc/self/cgroup"),
            cgroup_root: root.join("sys/fs/cgroup"),
        }
    }
}

/// The smaller of MemAvailable and what the process's memory cgroups leave: the
/// limit of the cgroup and of each above it, less the memory charged to it that
/// cannot be reclaimed (the kubelet's "working set": usage less inactive files).
pub fn host_headroom(files: &HostFiles) -> Option<Headroom> {
    let available = std::fs::read_to_string(&files.meminfo)
        .ok()
        .and_then(|text| mem_available(&text))
        .map(|bytes| Headroom {
            bytes,
            source: "the machine's available memory",
        });
    let cgroup = std::fs::read_to_string(&files.own_cgroup)
        .ok()
        .and_then(|text| cgroup_headroom(&text, &files.cgroup_root))
        .map(|bytes| Headroom {
            bytes,
            source: "the memory limit of this process's cgroup",
        });
    [available, cgroup]
        .into_iter()
        .flatten()
        .min_by_key(|h| h.bytes)
}

fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The least headroom over the process's memory cgroup and its ancestors,
/// cgroup v2 (`0::/path`) or v1 (`N:...memory...:/path`); `None` without a limit.
fn cgroup_headroom(own_cgroup: &str, root: &Path) -> Option<u64> {
    let mut least: Option<u64> = None;
    for line in own_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let (base, limit, usage) = if controllers.is_empty() {
            (root.to_owned(), "memory.max", "memory.current")
        } else if controllers.split(',').any(|c| c == "memory") {
            (
                root.join("memory"),
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        } else {
            continue;
        };
        // From the process's own cgroup up to the root: a pod's limit is often
        // set on a parent. In a container with its own cgroup namespace the path
        // is `/` and the files are at `base` itself.
        let mut dir = base.join(path.trim_start_matches('/'));
        loop {
            if let Some(room) = cgroup_dir_headroom(&dir, limit, usage) {
                least = Some(least.map_or(room, |l| l.min(room)));
            }
            if dir == base || !dir.pop() {
                break;
            }
        }
    }
    least
}

fn cgroup_dir_headroom(dir: &Path, limit: &str, usage: &str) -> Option<u64> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    // "max" (v2) or a huge number (v1: no limit) parse as no limit.
    let limit: u64 = read(limit)?.trim().parse().ok()?;
    if limit >= 1 << 60 {
        return None;
    }
    let usage: u64 = read(usage)?.trim().parse().ok()?;
    let reclaimable = read("memory.stat")
        .and_then(|stat| {
            stat.lines().find_map(|line| {
                let value = line
                    .strip_prefix("inactive_file ")
                    .or_else(|| line.strip_prefix("total_inactive_file "))?;
                value.trim().parse::<u64>().ok()
            })
        })
        .unwrap_or(0);
    Some(limit.saturating_sub(usage.saturating_sub(reclaimable)))
}

/// The free memory of CUDA device `index`, as `torch.cuda.mem_get_info` reads
/// it: from the CUDA runtime that libtorch's CUDA build has loaded (`None` in a
/// CPU-only build). Blocks libtorch's caching allocator holds count as used, so
/// the figure errs on the safe side.
fn cuda_free_bytes(index: usize) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
        type GetDevice = unsafe extern "C" fn(*mut i32) -> i32;
        type SetDevice = unsafe extern "C" fn(i32) -> i32;
        // Safety: the symbols are the CUDA runtime's, with these C signatures;
        // the current device is put back as it was.
        unsafe {
            let symbol = |name: &std::ffi::CStr| libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
            let (info, get, set) = (
                symbol(c"cudaMemGetInfo"),
                symbol(c"cudaGetDevice"),
                symbol(c"cudaSetDevice"),
            );
            if info.is_null() || get.is_null() || set.is_null() {
                return None;
            }
            let info: MemGetInfo = std::mem::transmute(info);
            let get: GetDevice = std::mem::transmute(get);
            let set: SetDevice = std::mem::transmute(set);
            let mut current = 0;
            if get(&mut current) != 0 || set(index as i32) != 0 {
                return None;
            }
            let (mut free, mut total) = (0usize, 0usize);
            let status = info(&mut free, &mut total);
            set(current);
            (status == 0).then_some(free as u64)
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = index;
        None
    }
}

/// How many renders of these shapes (each of which fits alone) fit on
/// `device` at once, in one batch: all of them when the headroom cannot be
/// known, and never fewer than one. Every item is taken to be as large as the
/// largest.
pub fn items_at_once(device: Device, shapes: &[RenderShape]) -> usize {
    match headroom(device) {
        Some(headroom) => items_within(headroom, shapes),
        None => shapes.len().max(1),
    }
}

/// [`items_at_once`] against a given headroom.
pub fn items_within(headroom: Headroom, shapes: &[RenderShape]) -> usize {
    let Some(largest) = shapes
        .iter()
        .max_by_key(|shape| shape.footprint().beyond_the_net())
    else {
        return 1;
    };
    (1..=shapes.len())
        .rev()
        .find(|&items| {
            let batch = RenderShape {
                items: items as u32,
                ..largest.clone()
            };
            batch.footprint().beyond_the_net() <= headroom.bytes
        })
        .unwrap_or(1)
}

/// Refuses a render of `size` px on `device` whose footprint (less the
/// backbone, loaded by then) exceeds the headroom there; `shape_at(size)` is the render's shape at a size. Passes when
/// the headroom cannot be known.
pub fn check_fits(device: Device, size: u32, shape_at: impl Fn(u32) -> RenderShape) -> Result<()> {
    match headroom(device) {
        Some(headroom) => check_fits_within(headroom, size, shape_at),
        None => Ok(()),
    }
}

/// [`check_fits`] against a given headroom. The refusal names the largest size
/// that fits and, for L-BFGS, the largest history that fits at this size.
pub fn check_fits_within(
    headroom: Headroom,
    size: u32,
    shape_at: impl Fn(u32) -> RenderShape,
) -> Result<()> {
    let shape = shape_at(size);
    let needed = shape.footprint();
    let fits = |shape: &RenderShape| shape.footprint().beyond_the_net() <= headroom.bytes;
    if fits(&shape) {
        return Ok(());
    }
    let mut advice = Vec::new();
    // The footprint grows with the size: the largest that fits, by bisection.
    let (mut low, mut high) = (0u32, size);
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if fits(&shape_at(middle)) {
            low = middle;
        } else {
            high = middle;
        }
    }
    if low > 0 {
        advice.push(format!("size {low}"));
    }
    if shape.optimizer.kind == OptimizerKind::Lbfgs {
        let with_history = |history_size: usize| RenderShape {
            optimizer: OptimizerSpec {
                history_size,
                ..shape.optimizer.clone()
            },
            ..shape.clone()
        };
        if let Some(history) = (1..shape.optimizer.history_size)
            .rev()
            .find(|&h| fits(&with_history(h)))
        {
            advice.push(format!("history_size {history} at size {size}"));
        }
    }
    if shape.items > 1 {
        let with_items = |items: u32| RenderShape {
            items,
            ..shape.clone()
        };
        if let Some(items) = (1..shape.items).rev().find(|&k| fits(&with_items(k))) {
            advice.push(format!("a batch of {items} at size {size}"));
        }
    }
    let advice = if advice.is_empty() {
        "nothing smaller fits either".to_owned()
    } else {
        format!("what fits: {}", advice.join(", or "))
    };
    Err(EngineError::TooLarge(format!(
        "a {size} px render needs about {needed}, more than the {:.2} GiB that {} leaves; {advice}",
        gib(headroom.bytes),
        headroom.source,
    )))
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vgg19_shape(size: u32, optimizer: OptimizerKind) -> RenderShape {
        let extent = Extent {
            width: size,
            height: size,
        };
        RenderShape {
            backbone: Backbone::Vgg19,
            deepest: Backbone::Vgg19.layer_index("relu5_1").unwrap(),
            content: extent,
            style: extent,
            optimizer: OptimizerSpec::new(optimizer),
            iterations: 500,
            precision: Precision::Fp32,
            items: 1,
        }
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn a_batch_holds_as_many_renders_as_the_headroom_fits() {
        let small = vgg19_shape(256, OptimizerKind::Adam);
        let large = vgg19_shape(512, OptimizerKind::Lbfgs);
        let one = large.footprint().beyond_the_net();
        let three = RenderShape {
            items: 3,
            ..large.clone()
        }
        .footprint()
        .beyond_the_net();
        let headroom = |bytes| Headroom {
            bytes,
            source: "a test",
        };
        let shapes = [small.clone(), large.clone(), small.clone(), small];
        // Every item is counted as large as the largest.
        assert_eq!(items_within(headroom(three), &shapes), 3);
        assert_eq!(items_within(headroom(three - 1), &shapes), 2);
        // One item always runs: each was checked alone before.
        assert_eq!(items_within(headroom(one - 1), &shapes), 1);
        assert_eq!(items_within(headroom(u64::MAX), &shapes), 4);
    }

    /// A machine with `available` bytes free, in a cgroup v2 `/kubepods/pod/x`
    /// whose pod (its parent) is limited to `limit` and charged `usage`, of
    /// which `inactive` is reclaimable page cache.
    fn machine(root: &Path, available: u64, limit: &str, usage: u64, inactive: u64) {
        let write = |path: &str, text: String| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(
            "proc/meminfo",
            format!(
                "MemTotal: 99999999 kB\nMemAvailable: {} kB\n",
                available / 1024
            ),
        );
        write("proc/self/cgroup", "0::/kubepods/pod/x\n".into());
        write("sys/fs/cgroup/kubepods/pod/x/memory.max", "max\n".into());
        write(
            "sys/fs/cgroup/kubepods/pod/x/memory.current",
            "1000\n".into(),
        );
        write(
            "sys/fs/cgroup/kubepods/pod/memory.max",
            format!("{limit}\n"),
        );
        write(
            "sys/fs/cgroup/kubepods/pod/memory.current",
            format!("{usage}\n"),
        );
        write(
            "sys/fs/cgroup/kubepods/pod/memory.stat",
            format!("anon 5\ninactive_file {inactive}\nactive_file 7\n"),
        );
    }

    #[test]
    fn a_pods_cgroup_limit_caps_the_headroom_below_the_machines() {
        let dir = tempfile::tempdir().unwrap();
        machine(dir.path(), 20 * GIB, &(4 * GIB).to_string(), GIB, GIB / 2);
        let headroom = host_headroom(&HostFiles::under(dir.path())).unwrap();
        // 4 GiB limit, less 1 GiB charged of which 0.5 GiB is reclaimable.
        assert_eq!(headroom.bytes, 4 * GIB - GIB / 2);
        assert!(headroom.source.contains("cgroup"), "{headroom:?}");

        // Without a limit, the machine's available memory decides.
        let dir = tempfile::tempdir().unwrap();
        machine(dir.path(), 20 * GIB, "max", GIB, 0);
        let headroom = host_headroom(&HostFiles::under(dir.path())).unwrap();
        assert_eq!(headroom.bytes, 20 * GIB);
        assert!(headroom.source.contains("machine"), "{headroom:?}");
    }

    #[test]
    fn a_cgroup_v1_limit_counts_too() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |path: &str, text: &str| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("proc/meminfo", "MemAvailable: 8388608 kB\n");
        write("proc/self/cgroup", "5:cpu,cpuacct:/\n4:memory:/\n");
        write("sys/fs/cgroup/memory/memory.limit_in_bytes", "2147483648\n");
        write("sys/fs/cgroup/memory/memory.usage_in_bytes", "1073741824\n");
        let headroom = host_headroom(&HostFiles::under(root)).unwrap();
        assert_eq!(headroom.bytes, GIB);
    }

    #[test]
    fn a_render_over_the_cgroup_limit_is_refused_naming_what_fits() {
        let dir = tempfile::tempdir().unwrap();
        machine(dir.path(), 64 * GIB, &(8 * GIB).to_string(), 0, 0);
        let headroom = host_headroom(&HostFiles::under(dir.path())).unwrap();
        let shape_at = |size| vgg19_shape(size, OptimizerKind::Lbfgs);
        assert!(check_fits_within(headroom, 512, shape_at).is_ok());

        let refused = check_fits_within(headroom, 2048, shape_at)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("cgroup"), "{refused}");
        let size: u32 = refused
            .split("fits: size ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no size named: {refused}"));
        // The largest that fits: it does, and one pixel more does not.
        assert!(shape_at(size).footprint().beyond_the_net() <= headroom.bytes);
        assert!(shape_at(size + 1).footprint().beyond_the_net() > headroom.bytes);
        // Where a shorter history would do, that is named too.
        let refused = check_fits_within(headroom, 1280, shape_at)
            .unwrap_err()
            .to_string();
        let history: usize = refused
            .split("history_size ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no history named: {refused}"));
        let with_history = |history_size| RenderShape {
            optimizer: OptimizerSpec {
                history_size,
                ..OptimizerSpec::new(OptimizerKind::Lbfgs)
            },
            ..shape_at(1280)
        };
        assert!(with_history(history).footprint().beyond_the_net() <= headroom.bytes);
        assert!(with_history(history + 1).footprint().beyond_the_net() > headroom.bytes);

        // Adam has no history to shrink.
        let refused = check_fits_within(headroom, 2048, |size| {
            vgg19_shape(size, OptimizerKind::Adam)
        })
        .unwrap_err()
        .to_string();
        assert!(!refused.contains("history_size"), "{refused}");
    }

    #[test]
    fn the_lbfgs_history_is_two_images_per_remembered_iteration() {
        let adam = vgg19_shape(1024, OptimizerKind::Adam).footprint();
        let lbfgs = vgg19_shape(1024, OptimizerKind::Lbfgs).footprint();
        let image = 3 * 1024 * 1024 * FLOAT;
        // The default history of 100: 200 images, ~2.3 GiB at 1024 px.
        assert_eq!(lbfgs.optimizer - adam.optimizer, 200 * image);
        // A short render fills only part of it.
        let short = RenderShape {
            iterations: 10,
            ..vgg19_shape(1024, OptimizerKind::Lbfgs)
        };
        assert_eq!(lbfgs.optimizer - short.footprint().optimizer, 180 * image);
        // A batch holds each item's images, and one copy of the weights.
        let batch = RenderShape {
            items: 4,
            ..vgg19_shape(1024, OptimizerKind::Lbfgs)
        }
        .footprint();
        assert_eq!(batch.optimizer, 4 * lbfgs.optimizer);
        assert_eq!(batch.weights, lbfgs.weights);
    }
}
