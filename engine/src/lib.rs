//! The Gatys et al. style-transfer engine on libtorch (through `tch`).
//!
//! ```text
//! FeatureNet::load(backbone, weights, device)      frozen VGG16 / VGG19 / GoogLeNet / Inception v3
//! Prepared::new(&net, &params, content, style)      images read, resized and checked
//! render(&net, &params, prepared, observer)         the optimisation -> Rendered
//! render_batch(&net, items)                         several renders at once -> [Rendered]
//! ```
//! No networking here: the farm's worker and the CLI both drive this crate.

pub mod backbone;
pub mod checkpoint;
pub mod color;
pub mod device;
pub mod error;
pub mod image_io;
pub mod loss;
pub mod memory;
pub mod optim;
pub mod render;
pub mod weights;

pub use backbone::{FeatureNet, InputConvention, RANDOM_WEIGHTS_SEED};
pub use checkpoint::{BadCheckpoint, Checkpoint};
pub use device::{device_name, parse_device};
pub use error::{EngineError, Result};
pub use memory::tune_allocator;
pub use render::{render, render_batch, BatchItem, Prepared, Progress, Rendered};

pub use pastiche_spec as spec;
pub use tch;
